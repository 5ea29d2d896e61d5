"""Chaos Toolkit controls shipped with blackstart.

Declare them in an experiment's ``controls`` section, in this order::

    "controls": [
      {"name": "blackstart-cluster",
       "provider": {"type": "python", "module": "blackstart.controls.cluster",
                    "arguments": {"create": true, "rescue": true}}},
      {"name": "blackstart-guard",
       "provider": {"type": "python", "module": "blackstart.controls.guard",
                    "arguments": {"max_apiserver_p99_s": 10, "max_cordoned_nodes": 12}}},
      {"name": "blackstart-metrics",
       "provider": {"type": "python", "module": "blackstart.controls.metrics",
                    "arguments": {"interval_s": 2}}}
    ]

- :mod:`blackstart.controls.cluster`: find (or create, then delete) the target
  cluster; start the rescue controller and agents when asked.
- :mod:`blackstart.controls.guard`: refuse to inject into a cluster blackstart
  did not create unless its context is allow-listed; interrupt the run when a
  hard limit is crossed or an injection fails.
- :mod:`blackstart.controls.metrics`: sample PromQL queries and probes during
  the run and write them, with the fault windows and the rescue plans, into
  the journal's ``extensions``.
"""
