"""The local provider: a real control plane as processes, KWOK nodes, CoreDNS, Prometheus.

- :mod:`.provider`: :class:`~.provider.LocalProvider`, bring-up and tear-down;
- :mod:`.base`: paths and the cluster's saved state;
- :mod:`.components`: stop, hang, resume, start one component; status;
- :mod:`.dns`: the CoreDNS process and its Corefile;
- :mod:`.prometheus`: what Prometheus scrapes;
- :mod:`.nodes`: node reboots and kernel logs;
- :mod:`.rescue_processes`: the rescue controller and agent as processes;
- :mod:`.kwokctl`, :mod:`.kwok_nodes`, :mod:`.credentials`, :mod:`.coredns`: the parts.
"""
