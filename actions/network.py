"""Network remedies: block the telemetry agents' way to the API server, for real.

The storm's agents connect from their own loopback address (127.0.0.2, see
:data:`blackstart.actions._storm.STORM_SOURCE_IP`), as a DaemonSet's pods
come from their nodes' addresses. :func:`block_telemetry_network` adds a
firewall rule (iptables, ``OUTPUT`` on ``lo``) that resets every TCP packet
from that address to the API server's port: connections in use are cut and
new ones refused, while everyone else (controllers, CoreDNS, the operator)
still gets through. :func:`unblock_telemetry_network` removes it (the
rollback). The rule carries a comment naming the cluster, and nothing else
in the firewall is touched. Needs root and ``iptables``.
"""

import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from blackstart.actions._storm import STORM_SOURCE_IP
from blackstart.health import utc_now_iso
from blackstart.target import resolve_target

__all__ = ["block_telemetry_network", "unblock_telemetry_network"]


def block_rule(cluster: str, apiserver_url: str, source_ip: str = STORM_SOURCE_IP) -> list[str]:
    """The iptables rule (chain and match, without -I/-D) that blocks the agents."""
    parts = urlsplit(apiserver_url)
    host, port = parts.hostname or "", parts.port or 443
    return [
        "OUTPUT", "-o", "lo", "-s", source_ip, "-d", host, "-p", "tcp", "--dport", str(port),
        "-m", "comment", "--comment", f"blackstart:{cluster}:block-telemetry",
        "-j", "REJECT", "--reject-with", "tcp-reset",
    ]  # fmt: skip


def _iptables(args: list[str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("iptables")
    if binary is None:
        raise ActivityFailed(
            "iptables is not installed: the network block needs it (apt-get install iptables)"
        )
    try:
        return subprocess.run(
            [binary, "-w", "5", *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ActivityFailed(f"iptables {' '.join(args[:2])} failed: {err}") from err


def _present(rule: list[str]) -> bool:
    return _iptables(["-C", *rule]).returncode == 0


def _target_rule(configuration: Configuration, secrets: Secrets, what: str) -> list[str]:
    target = resolve_target(configuration, secrets)
    state = target.require_state(what)
    host = urlsplit(state.apiserver_url).hostname or ""
    if not host.startswith("127.") and host != "localhost":
        raise ActivityFailed(f"{what} only blocks loopback API servers, not {state.apiserver_url}")
    return block_rule(state.name, state.apiserver_url)


def block_telemetry_network(
    configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Block the telemetry agents' network access to the API server (a firewall rule).

    From now on every TCP packet from the agents' address (127.0.0.2) to the
    API server's port is answered with a reset: their connections drop and
    new ones are refused; other clients are not affected. Returns
    ``{"cluster", "rule", "blocked_at", "already"}``. Raises when the rule
    cannot be added (iptables missing, not root). Roll back with
    ``unblock_telemetry_network``.
    """
    rule = _target_rule(configuration, secrets, "block_telemetry_network")
    already = _present(rule)
    if not already:
        done = _iptables(["-I", *rule])
        if done.returncode != 0:
            raise ActivityFailed(
                f"could not add the firewall rule: {done.stderr.strip()} (run as root)"
            )
        if not _present(rule):
            raise ActivityFailed("the firewall rule was added but iptables does not list it")
    return {
        "cluster": rule[rule.index("--comment") + 1].split(":")[1],
        "rule": " ".join(rule),
        "blocked_at": utc_now_iso(),
        "already": already,
    }


def unblock_telemetry_network(
    configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Remove the firewall rule of ``block_telemetry_network`` (the rollback).

    Safe when there is none. Returns ``{"removed": n}`` (rules removed).
    """
    rule = _target_rule(configuration, secrets, "unblock_telemetry_network")
    removed = 0
    while _present(rule) and removed < 10:
        done = _iptables(["-D", *rule])
        if done.returncode != 0:
            raise ActivityFailed(f"could not remove the firewall rule: {done.stderr.strip()}")
        removed += 1
    return {"removed": removed, "unblocked_at": utc_now_iso()}
