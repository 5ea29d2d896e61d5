#!/usr/bin/env python3
"""An OCI runtime in front of ``runc`` that drops capabilities the host cannot grant.

Docker asks for every capability the kernel knows when it runs a privileged
container (kind runs its nodes privileged). On a machine whose capability
bounding set lacks some of them (``CapBnd`` in ``/proc/self/status``; here
``CAP_SYS_RESOURCE``) runc then fails with ``unable to apply caps: operation
not permitted``. blackstart registers this file as dockerd's default runtime
on such machines only: it removes the capabilities missing from its own
bounding set (which is dockerd's) from the OCI spec, then runs runc with the
same arguments.

The spec is the bundle's ``config.json`` for ``create`` and ``run``, and the
file given with ``--process`` for ``exec``. Everything else passes through.
Standard library only: dockerd runs it for every container operation.
"""

from __future__ import annotations

import json
import os
import sys

RUNC_ENV = "BLACKSTART_RUNC"
DEFAULT_RUNC = "/usr/sbin/runc"

# Capability numbers from linux/capability.h, as the OCI spec names them.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

# runc's global options that take a value (``runc --root X create ...``).
_GLOBAL_WITH_VALUE = {"--root", "--log", "--log-format", "--criu", "--rootless"}
_CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def bounding_set(status_text: str) -> int:
    """The ``CapBnd`` mask from the text of ``/proc/<pid>/status``."""
    for line in status_text.splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    raise ValueError("no CapBnd line in the process status")


def missing_capabilities(mask: int, last_cap: int) -> list[str]:
    """Names of the capabilities the kernel knows (0..``last_cap``) that ``mask`` lacks."""
    return [
        CAPABILITIES[number]
        for number in range(min(last_cap, len(CAPABILITIES) - 1) + 1)
        if not mask & (1 << number)
    ]


def strip_capabilities(process: dict[str, object], missing: set[str]) -> bool:
    """Remove ``missing`` from every capability set of an OCI ``process``; True if changed."""
    caps = process.get("capabilities")
    if not isinstance(caps, dict):
        return False
    changed = False
    for name in _CAP_SETS:
        current = caps.get(name)
        if isinstance(current, list):
            kept = [cap for cap in current if cap not in missing]
            if len(kept) != len(current):
                caps[name] = kept
                changed = True
    return changed


def spec_file(args: list[str]) -> str | None:
    """The OCI file runc will read for this command line, or None when there is none."""
    index = 0
    while index < len(args) and args[index].startswith("-"):
        flag = args[index]
        index += 2 if flag in _GLOBAL_WITH_VALUE else 1
    if index >= len(args):
        return None
    command, rest = args[index], args[index + 1 :]
    if command in ("create", "run"):
        bundle = _option(rest, ("--bundle", "-b")) or "."
        return os.path.join(bundle, "config.json")
    if command == "exec":
        return _option(rest, ("--process", "-p"))
    return None


def _option(args: list[str], names: tuple[str, ...]) -> str | None:
    for index, arg in enumerate(args):
        if arg in names and index + 1 < len(args):
            return args[index + 1]
        for name in names:
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _rewrite(path: str, missing: set[str]) -> None:
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    process = document.get("process", document) if "ociVersion" in document else document
    if isinstance(process, dict) and strip_capabilities(process, missing):
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(document, handle)


def main(argv: list[str]) -> None:
    with open("/proc/self/status", encoding="ascii") as handle:
        mask = bounding_set(handle.read())
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as handle:
        last_cap = int(handle.read())
    missing = set(missing_capabilities(mask, last_cap))
    target = spec_file(argv)
    if missing and target and os.path.exists(target):
        _rewrite(target, missing)
    runc = os.environ.get(RUNC_ENV, DEFAULT_RUNC)
    os.execv(runc, [runc, *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
