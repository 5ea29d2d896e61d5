"""Suite-wide pytest plugins (tests/ is on sys.path when pytest imports this conftest):

- tests/skip_policy.py: ``--allowed-skips FILE`` fails the run on a skip FILE does not list;
- tests/tracked_files.py: a run that changes a file git tracks fails, naming it.
"""

pytest_plugins = ["skip_policy", "tracked_files"]
