"""Fake GPU Xid errors: well-formed NVIDIA Xid lines written into a node's kernel log.

On a blackstart local cluster every GPU and standby node has a kernel log file
(it stands for ``/dev/kmsg``) that the rescue node agent reads. :func:`inject_xid`
appends Xid lines for one node in any of the real line formats, and checks
that the rescue parser reads them back as written; :func:`xid_storm` does it on
a share of the GPU nodes at once. :func:`restore_xid_nodes` is the rollback:
it waits until the rescue controller has finished its plans for the injected
nodes, then uncordons them (never a node that was cordoned before the
injection), ends a reboot left half-way and puts warm standbys that were
swapped in back to standby.

Line formats (``line_format``):

- ``kmsg``: raw ``/dev/kmsg`` records, ``3,1042,1843308145,-;NVRM: Xid (PCI:0000:03:00): 62, ...``
- ``dmesg``: ``[ 1843.308145] NVRM: Xid (PCI:0000:03:00): 62, ...``
- ``syslog``: ``Nov 24 08:30:00 gpu-3 kernel: NVRM: Xid (PCI:0000:03:00): 62, ...``
- ``iso``: ``2026-11-24T08:30:00.123456+00:00 gpu-3 kernel: NVRM: Xid ...``
  (``journalctl -o short-iso-precise``)
"""

import datetime as dt
import math
import os
import random
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.actions._xid_record import Injection, record
from blackstart.actions._xid_record import recorded_injections as recorded_injections
from blackstart.actions._xid_rollback import restore_xid_nodes
from blackstart.clusters.local.kwok_nodes import node_is_ready
from blackstart.clusters.provider import ClusterError
from blackstart.clusters.state import kubernetes_node_name
from blackstart.health import utc_now_iso
from blackstart.rescue.wire.xid import normalise_pci, parse_lines
from blackstart.target import Target, cluster_provider, resolve_target

__all__ = ["inject_xid", "restore_xid_nodes", "xid_storm"]

LINE_FORMATS = ("kmsg", "dmesg", "syslog", "iso")

# What the driver prints after the code, by Xid (a generic text for others).
MESSAGES: dict[int, str] = {
    13: "Graphics SM Warp Exception on (GPC 0, TPC 0, SM 0): Out Of Range Address",
    31: "Ch 00000009, engmask 00000101, intr 10000000",
    43: "Ch 00000010",
    45: "Ch 00000002",
    48: "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer "
    "at physAddr 0x1f4e2a000",
    61: "0cec(3098) 00000000 00000000",
    62: "0cec(3098) 00000000 00000000",
    63: "Row Remapper: New row marked for remapping, reset gpu to activate.",
    64: "Row Remapper: Failed to remap row: sbe address 0x1f4e2a000",
    74: "NVLink: fatal error detected on link 2(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)",
    79: "GPU has fallen off the bus.",
    92: "High single-bit ECC error rate",
    94: "Contained ECC error.",
    95: "Uncontained ECC error.",
    119: "Timeout after 6s of waiting for RPC response from GPU0 GSP! Expected function 76 "
    "(GSP_RM_CONTROL) (0x20800a4c 0x4).",
    154: "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)",
}
# Xids the driver logs without a process (the GPU itself failed)
_NO_PROCESS = frozenset({48, 63, 64, 74, 79, 92, 94, 95, 119, 154})

_KMSG_RECORD = re.compile(rb"^\d+,(\d+),(\d+),[^;]*;", re.MULTILINE)


def xid_body(
    xid: int,
    pci: str,
    message: str,
    pid: int,
    gpu_instance: str = "",
    compute_instance: str = "",
    bare: bool = False,
) -> str:
    """The ``NVRM: Xid`` message body the driver prints.

    ``gpu_instance`` (and ``compute_instance``) give the MIG form
    ``(PCI:0000:c1:00 GPU-I:07 GPU-CI:00)``; ``bare`` the record with nothing
    after the code.
    """
    where = f"PCI:{pci}"
    if gpu_instance:
        where += f" GPU-I:{gpu_instance}"
        if compute_instance:
            where += f" GPU-CI:{compute_instance}"
    if bare:
        return f"NVRM: Xid ({where}): {xid}"
    text = message or MESSAGES.get(xid, f"Xid {xid} reported by blackstart fault injection")
    if xid == 79:
        process = "pid='<unknown>', name=<unknown>, "
    elif xid in _NO_PROCESS:
        process = ""
    else:
        process = f"pid={pid}, name=python3, "
    return f"NVRM: Xid ({where}): {xid}, {process}{text}"


def _last_kmsg(path: Path) -> tuple[int, int]:
    """(last sequence number, last usec) of the kmsg records at the end of ``path``."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - 65536))
        tail = f.read()
    records = _KMSG_RECORD.findall(tail)
    if not records:
        return -1, 0
    seq, usec = records[-1]
    return int(seq), int(usec)


def format_lines(
    bodies: list[str], line_format: str, node: str, path: Path, boot_time: float
) -> list[str]:
    """``bodies`` as kernel log lines of ``line_format``, continuing the file's numbering."""
    now = time.time()
    uptime_us = max(1, int((now - boot_time) * 1_000_000))
    lines = []
    if line_format == "kmsg":
        seq, usec = _last_kmsg(path)
        for body in bodies:
            seq += 1
            usec = max(usec + 1, uptime_us)
            lines.append(f"3,{seq},{usec},-;{body}")
    elif line_format == "dmesg":
        for index, body in enumerate(bodies):
            us = uptime_us + index
            lines.append(f"[{us // 1_000_000:>5}.{us % 1_000_000:06d}] {body}")
    elif line_format == "syslog":
        stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%b %e %H:%M:%S")
        lines = [f"{stamp} {node} kernel: {body}" for body in bodies]
    else:
        stamp = dt.datetime.fromtimestamp(now, dt.UTC).isoformat()
        lines = [f"{stamp} {node} kernel: {body}" for body in bodies]
    return lines


def _append(path: Path, lines: list[str]) -> None:
    data = ("\n".join(lines) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)  # one write: the agent never sees half a burst
        os.fsync(fd)
    finally:
        os.close(fd)


_INSTANCE = re.compile(r"[0-9]{1,4}")


def _check_instances(gpu_instance: Any, compute_instance: Any) -> None:
    for name, value in (("gpu_instance", gpu_instance), ("compute_instance", compute_instance)):
        if not isinstance(value, str) or (value and not _INSTANCE.fullmatch(value)):
            raise ActivityFailed(
                f'{name} must be a MIG instance number as the driver prints it (e.g. "07"), '
                f"or empty, not {value!r}"
            )
    if compute_instance and not gpu_instance:
        raise ActivityFailed(
            f"compute_instance {compute_instance!r} needs gpu_instance: a MIG compute instance "
            "lives in a GPU instance"
        )


def _check_arguments(xid: Any, pci: Any, count: Any, line_format: Any) -> str:
    if isinstance(xid, bool) or not isinstance(xid, int) or not 1 <= xid <= 999:
        raise ActivityFailed(f"xid must be an Xid code from 1 to 999, not {xid!r}")
    address = normalise_pci(pci) if isinstance(pci, str) else None
    if address is None:
        raise ActivityFailed(f"pci must be a PCI address such as 0000:03:00, not {pci!r}")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
        raise ActivityFailed(f"count must be a whole number from 1 to 100, not {count!r}")
    if line_format not in LINE_FORMATS:
        raise ActivityFailed(
            f"line_format must be one of {', '.join(LINE_FORMATS)}, not {line_format!r}"
        )
    return address


def _was_cordoned(target: Target, node: str) -> bool | None:
    """Whether ``node`` is cordoned now; None when the API server cannot tell (it is down)."""
    try:
        core = client.CoreV1Api(target.api(1))
        found = core.read_node(node, _request_timeout=2)
    except ApiException as err:
        if err.status == 404:
            raise ActivityFailed(f"node {node} does not exist in {target.describe()}") from err
        return None
    except Exception:
        return None
    return bool(found.spec and found.spec.unschedulable)


def _write_xids(
    target: Target,
    node: str,
    xid: int,
    pci: str,
    count: int,
    line_format: str,
    message: str,
    gpu_uuid: str,
    gpu_instance: str = "",
    compute_instance: str = "",
    bare: bool = False,
) -> Injection:
    provider = cluster_provider(target, "inject_xid")
    state = target.require_state("inject_xid")
    try:
        path = provider.kernel_log(state.name, node)
    except ClusterError as err:
        raise ActivityFailed(
            f"{err}: only GPU and standby nodes have a kernel log; pick one of those"
        ) from err
    node = kubernetes_node_name(state, node)
    was_cordoned = _was_cordoned(target, node)
    pid = random.randint(1000, 60000)
    bodies = []
    if gpu_uuid:
        bodies.append(f"NVRM: GPU at PCI:{pci}: {gpu_uuid}")
    bodies += [
        xid_body(xid, pci, message, pid, gpu_instance, compute_instance, bare) for _ in range(count)
    ]
    lines = format_lines(bodies, line_format, node, path, state.created_at or time.time())
    parsed = list(parse_lines(lines))
    if len(parsed) != count or any(
        e.xid != xid or e.pci != pci or (e.gpu_instance or "") != gpu_instance for e in parsed
    ):
        raise ActivityFailed(
            f"the {line_format} lines built for Xid {xid} do not parse back as {count} Xid "
            f"{xid} at {pci} (got {[(e.xid, e.pci) for e in parsed]}); this is a bug in blackstart"
        )
    written_at = utc_now_iso()
    _append(path, lines)
    injection = Injection(
        cluster=state.name,
        node=node,
        xid=xid,
        pci=pci,
        count=count,
        line_format=line_format,
        written_at=written_at,
        was_cordoned=was_cordoned,
        log=str(path),
    )
    record(target, injection)
    return injection


def _node_with_pods(target: Target, selector: str, namespace: str) -> str:
    core = client.CoreV1Api(target.api())
    pods: list[Any]
    if namespace:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    else:
        pods = core.list_pod_for_all_namespaces(label_selector=selector).items
    nodes = sorted(
        {
            str(p.spec.node_name)
            for p in cast(list[Any], pods)
            if p.spec.node_name and p.status.phase == "Running"
        }
    )
    if not nodes:
        raise ActivityFailed(
            f"no Running pod matches {selector!r}"
            + (f" in namespace {namespace}" if namespace else "")
            + ": no node to inject into"
        )
    return nodes[0]


def inject_xid(
    node: str = "",
    xid: int = 62,
    pci: str = "0000:03:00",
    count: int = 1,
    line_format: str = "kmsg",
    message: str = "",
    gpu_uuid: str = "",
    node_with_pods: str = "",
    namespace: str = "",
    gpu_instance: str = "",
    compute_instance: str = "",
    bare: bool = False,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Write ``count`` Xid ``xid`` lines for the GPU at ``pci`` into ``node``'s kernel log.

    - ``node``: a GPU or standby node; or leave it empty and give
      ``node_with_pods``, a label selector: the node of the first Running pod
      it matches (in ``namespace``, default all) is chosen.
    - ``line_format``: ``kmsg`` (default), ``dmesg``, ``syslog`` or ``iso``.
    - ``message``: the driver's text after the code (a realistic default per Xid).
    - ``gpu_uuid``: also write the ``NVRM: GPU at PCI:...: GPU-...`` line first, so
      the agent can name the GPU.
    - ``gpu_instance`` / ``compute_instance``: a MIG instance (``"07"``, ``"00"``):
      the driver's form ``NVRM: Xid (PCI:0000:c1:00 GPU-I:07 GPU-CI:00): 43, ...``.
    - ``bare``: the record with nothing after the code, ``NVRM: Xid (PCI:...): 45``.

    The lines are checked to parse back (with the rescue agent's parser) as
    written, then appended in one write. Works while the API server is down
    (the log is a file). Returns ``{"cluster", "node", "xid", "pci", "count",
    "line_format", "written_at", "was_cordoned", "log"}``. Raises when the
    node has no kernel log (not a GPU node) or an argument is malformed.
    Roll back with ``restore_xid_nodes``.
    """
    address = _check_arguments(xid, pci, count, line_format)
    _check_instances(gpu_instance, compute_instance)
    if not isinstance(bare, bool):
        raise ActivityFailed(f"bare must be true or false, not {bare!r}")
    if not node and not node_with_pods:
        raise ActivityFailed("give node (a GPU node name) or node_with_pods (a pod selector)")
    target = resolve_target(configuration, secrets)
    if not node:
        node = _node_with_pods(target, node_with_pods, namespace)
    injection = _write_xids(
        target,
        node,
        xid,
        address,
        count,
        line_format,
        message,
        gpu_uuid,
        gpu_instance=gpu_instance,
        compute_instance=compute_instance,
        bare=bare,
    )
    return asdict(injection)


def xid_storm(
    fraction: float = 0.5,
    xid: int = 48,
    label_selector: str = "blackstart.dev/role=gpu",
    pci: str = "0000:3b:00",
    line_format: str = "kmsg",
    seed: int | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Write one Xid ``xid`` line on ``fraction`` (0-1) of the matching, schedulable, Ready nodes.

    As a bad driver roll-out or a faulty batch of GPUs does: the test of a
    controller's storm guard. Nodes are drawn at random (``seed`` for a
    repeatable draw); at least one. Returns ``{"xid", "nodes": [...],
    "candidates", "written_at"}``. Raises when no node matches. Roll back
    with ``restore_xid_nodes``.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise ActivityFailed(f"fraction must be a number above 0 and at most 1, not {fraction!r}")
    address = _check_arguments(xid, pci, 1, line_format)
    target = resolve_target(configuration, secrets)
    core = client.CoreV1Api(target.api())
    listed: list[Any] = core.list_node(label_selector=label_selector or None).items
    candidates: list[str] = [
        str(n.metadata.name)
        for n in listed
        if node_is_ready(n) and not (n.spec and n.spec.unschedulable)
    ]
    if not candidates:
        raise ActivityFailed(
            f"no Ready, schedulable node matches label_selector {label_selector!r}: "
            "nothing to inject into"
        )
    chosen = sorted(
        random.Random(seed).sample(candidates, max(1, math.ceil(fraction * len(candidates))))
    )
    written = [
        _write_xids(target, node, xid, address, 1, line_format, "", "").written_at
        for node in chosen
    ]
    return {
        "xid": xid,
        "nodes": chosen,
        "candidates": len(candidates),
        "written_at": written[0],
    }
