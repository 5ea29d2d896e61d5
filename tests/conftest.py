"""Suite-wide pytest hooks: the skip policy (tests/skip_policy.py, `--allowed-skips`)."""

from skip_policy import (  # tests/ is on sys.path: pytest imports this conftest from there
    pytest_addoption,
    pytest_configure,
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)

__all__ = [
    "pytest_addoption",
    "pytest_configure",
    "pytest_runtest_logreport",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
]
