"""Putting the control plane's size back after a grown API server was stopped (pure logic:
the kernel's refusal stood in for by a provider that refuses a number of times)."""

from __future__ import annotations

from typing import Any

import pytest

from blackstart.actions.control_plane import resize_once_freed
from blackstart.clusters.provider import ClusterError


class _Refusing:
    """Refuses the first ``refusals`` resizes as the kernel does while memory is held."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.calls = 0

    def resize_control_plane(self, name: str, cpus: float, memory: int) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.refusals:
            raise ClusterError(
                f"could not resize the control plane of {name}: cannot write '{memory}' to "
                "memory.limit_in_bytes: Device or resource busy"
            )
        return {"after": {"cpus": cpus, "memory": memory}}


def test_a_shrink_refused_while_the_stopped_api_server_still_holds_memory_is_tried_again() -> None:
    # seen in a game day: the stop returned, the resize met the old usage, the rollback failed
    provider = _Refusing(refusals=3)
    result = resize_once_freed(provider, "gameday", (1.0, 1 << 30), timeout_s=5.0, every_s=0.01)
    assert result == {"after": {"cpus": 1.0, "memory": 1 << 30}}
    assert provider.calls == 4


def test_a_shrink_refused_for_good_fails_after_the_timeout_naming_why() -> None:
    provider = _Refusing(refusals=10_000)
    with pytest.raises(ClusterError, match="Device or resource busy"):
        resize_once_freed(provider, "gameday", (1.0, 1 << 30), timeout_s=0.1, every_s=0.01)
    assert provider.calls > 1
