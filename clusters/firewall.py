"""The egress firewall blackstart installs when it starts a Docker engine.

Rule: no packet from a container may leave this machine. Containers sit on
Linux bridges (``docker0`` for the default network, ``br-<id>`` for user
networks such as kind's); whatever they send off the machine is forwarded by
the host's ``FORWARD`` chain. Docker sends every forwarded packet first
through the ``DOCKER-USER`` chain, which it never flushes, so the rules live
in a chain of ours jumped to from the top of ``DOCKER-USER``:

- a packet going out to a container bridge (container to container, or a
  reply to a published port) returns and goes on to Docker's own rules;
- a packet coming in from a container bridge and going anywhere else (the
  uplink, another interface) is dropped.

Traffic from containers to the host itself (``INPUT``) and to ports
published on 127.0.0.1 stays inside the machine and is not touched. The same
chain is installed for IPv6 at the top of ``FORWARD`` (Docker does not manage
IPv6 forwarding here). The rules are installed before dockerd starts, so no
container ever runs without them; :func:`check_rules` reads them back.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

CHAIN = "BLACKSTART-EGRESS"
DOCKER_USER = "DOCKER-USER"
# Interface patterns of container bridges ("+" is iptables' wildcard).
CONTAINER_BRIDGES = ("docker0", "br-+")


class FirewallError(RuntimeError):
    """The egress rules could not be installed or are not what they must be."""


def egress_rules() -> list[list[str]]:
    """The rules of :data:`CHAIN`, in order, as ``iptables -A`` arguments."""
    rules: list[list[str]] = []
    for bridge in CONTAINER_BRIDGES:
        rules.append(["-A", CHAIN, "-o", bridge, "-j", "RETURN"])
    for bridge in CONTAINER_BRIDGES:
        rules.append(["-A", CHAIN, "-i", bridge, "-j", "DROP"])
    return rules


@dataclass(frozen=True)
class Family:
    """One IP family: its iptables command and the chain that jumps to ours."""

    binary: str
    parent: str


FAMILIES = (Family("iptables", DOCKER_USER), Family("ip6tables", "FORWARD"))


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError as err:
        raise FirewallError(
            f"{argv[0]} not found: install Debian's iptables (`apt-get install iptables`)"
        ) from err
    if check and done.returncode != 0:
        raise FirewallError(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")
    return done


def install_rules() -> None:
    """Create (or rewrite) :data:`CHAIN` and put the jump to it first in its parent chain.

    Idempotent. Needs root. Raises :class:`FirewallError` when iptables
    refuses; the caller must then not start any container.
    """
    for family in FAMILIES:
        if shutil.which(family.binary) is None:
            raise FirewallError(
                f"{family.binary} not found: install Debian's iptables (`apt-get install iptables`)"
            )
        ipt = [family.binary, "-w", "-t", "filter"]
        if _run([*ipt, "-n", "-L", family.parent], check=False).returncode != 0:
            _run([*ipt, "-N", family.parent])
        if _run([*ipt, "-n", "-L", CHAIN], check=False).returncode != 0:
            _run([*ipt, "-N", CHAIN])
        _run([*ipt, "-F", CHAIN])
        for rule in egress_rules():
            _run([*ipt, *rule])
        while _run([*ipt, "-D", family.parent, "-j", CHAIN], check=False).returncode == 0:
            pass
        _run([*ipt, "-I", family.parent, "1", "-j", CHAIN])
    check_rules()


def remove_rules() -> None:
    """Remove the jumps and :data:`CHAIN` (only when no engine of ours runs any more)."""
    for family in FAMILIES:
        if shutil.which(family.binary) is None:
            continue
        ipt = [family.binary, "-w", "-t", "filter"]
        while _run([*ipt, "-D", family.parent, "-j", CHAIN], check=False).returncode == 0:
            pass
        _run([*ipt, "-F", CHAIN], check=False)
        _run([*ipt, "-X", CHAIN], check=False)


def read_rules(binary: str = "iptables", chain: str = CHAIN) -> list[str]:
    """``iptables -S <chain>``: the installed rules of ``chain`` as lines."""
    done = _run([binary, "-w", "-t", "filter", "-S", chain], check=False)
    if done.returncode != 0:
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def problems(chain_rules: Sequence[str], parent_rules: Sequence[str], parent: str) -> list[str]:
    """What is wrong with the installed rules (empty when they confine containers).

    ``chain_rules`` and ``parent_rules`` are ``iptables -S`` lines of
    :data:`CHAIN` and of its parent chain.
    """
    found: list[str] = []
    expected = [" ".join(rule) for rule in egress_rules()]
    actual = [line for line in chain_rules if line.startswith(f"-A {CHAIN} ")]
    if not chain_rules:
        return [f"chain {CHAIN} does not exist"]
    if actual != expected:
        found.append(f"chain {CHAIN} holds {actual}, expected {expected}")
    jumps = [line for line in parent_rules if line.startswith(f"-A {parent} ")]
    if not jumps or jumps[0] != f"-A {parent} -j {CHAIN}":
        first = jumps[0] if jumps else "nothing"
        found.append(f"the first rule of {parent} is {first!r}, not the jump to {CHAIN}")
    return found


def check_rules(engine_running: bool = False) -> None:
    """Raise :class:`FirewallError` unless the egress rules are installed for both families.

    With ``engine_running``, also check that Docker's jump to
    :data:`DOCKER_USER` is the first rule of ``FORWARD`` (dockerd adds it).
    """
    found: list[str] = []
    for family in FAMILIES:
        chain = read_rules(family.binary, CHAIN)
        parent = read_rules(family.binary, family.parent)
        found += [f"{family.binary}: {p}" for p in problems(chain, parent, family.parent)]
    if engine_running:
        forward = [r for r in read_rules("iptables", "FORWARD") if r.startswith("-A FORWARD ")]
        if not forward or forward[0] != f"-A FORWARD -j {DOCKER_USER}":
            first = forward[0] if forward else "nothing"
            found.append(f"iptables: the first rule of FORWARD is {first!r}, not -j {DOCKER_USER}")
    if found:
        raise FirewallError(
            "container egress is not confined: "
            + "; ".join(found)
            + " (run `blackstart engine up` as root to install the rules)"
        )
