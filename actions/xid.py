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

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.clusters.local.kwok_nodes import node_is_ready
from blackstart.clusters.local.kwokctl import NODE_NOT_READY_LABEL
from blackstart.clusters.provider import ClusterError
from blackstart.clusters.spec import load_spec
from blackstart.health import parse_iso, utc_now_iso
from blackstart.names import (
    RESCUE_GROUP,
    RESCUE_PLANS,
    RESCUE_VERSION,
    STANDBY_LABEL,
    TERMINAL_PHASES,
)
from blackstart.rescue.wire.xid import normalise_pci, parse_lines
from blackstart.target import Target, local_provider, resolve_target

__all__ = ["inject_xid", "restore_xid_nodes", "xid_storm"]

LINE_FORMATS = ("kmsg", "dmesg", "syslog", "iso")

# labels the cluster (kubelet/KWOK) sets on every node: never removed when restoring a standby
_MANAGED_LABELS = ("type", "kubernetes.io/os", "kubernetes.io/arch", "kubernetes.io/hostname")

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


@dataclass(frozen=True)
class Injection:
    """What :func:`inject_xid` wrote, kept for the probes and the rollback."""

    cluster: str
    node: str
    xid: int
    pci: str
    count: int
    line_format: str
    written_at: str
    was_cordoned: bool | None
    log: str


_injections: list[Injection] = []
_injections_lock = threading.Lock()


def recorded_injections(cluster: str | None = None) -> list[dict[str, Any]]:
    """The injections this process made (oldest first), optionally of one cluster only."""
    with _injections_lock:
        return [asdict(i) for i in _injections if cluster is None or i.cluster == cluster]


def _forget(cluster: str, nodes: set[str]) -> None:
    with _injections_lock:
        _injections[:] = [i for i in _injections if not (i.cluster == cluster and i.node in nodes)]


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
    provider = local_provider(target, "inject_xid")
    state = target.require_state("inject_xid")
    try:
        path = provider.kernel_log(state.name, node)
    except ClusterError as err:
        raise ActivityFailed(
            f"{err}: only GPU and standby nodes have a kernel log; pick one of those"
        ) from err
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
    with _injections_lock:
        _injections.append(injection)
    with _injections_lock, _journal_file(target).open("a") as journal:
        journal.write(json.dumps(asdict(injection)) + "\n")
    return injection


def _journal_file(target: Target) -> Path:
    """Where a cluster's injections are recorded, with its state: any process can roll back."""
    folder = Path(target.require_state("inject_xid").state_dir) / "chaos"
    folder.mkdir(exist_ok=True)
    return folder / "xid-injections.jsonl"


def _journal_injections(target: Target) -> list[dict[str, Any]]:
    """The injections recorded on disk for ``target``'s cluster and not restored yet."""
    path = _journal_file(target)
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash: the others still count
        if isinstance(record, dict) and isinstance(record.get("node"), str):
            found.append(record)
    return found


def _forget_on_disk(target: Target, nodes: set[str]) -> None:
    path = _journal_file(target)
    with _injections_lock:
        kept = [i for i in _journal_injections(target) if i["node"] not in nodes]
        temporary = path.with_suffix(".tmp")
        temporary.write_text("".join(json.dumps(i) + "\n" for i in kept))
        os.replace(temporary, path)


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


# ------------------------------------------------------------------ rollback
def _plans(target: Target) -> list[dict[str, Any]] | None:
    """Every RescuePlan, or None when the rescue CRDs are not installed."""
    api = client.CustomObjectsApi(target.api())
    try:
        listed = api.list_cluster_custom_object(RESCUE_GROUP, RESCUE_VERSION, RESCUE_PLANS)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return list(listed.get("items", [])) if isinstance(listed, dict) else []


def _plans_since(
    plans: list[dict[str, Any]], nodes: set[str], since: float
) -> list[dict[str, Any]]:
    found = []
    for plan in plans:
        created = (plan.get("metadata") or {}).get("creationTimestamp")
        node = (plan.get("spec") or {}).get("nodeName")
        if node in nodes and created and parse_iso(str(created)).timestamp() >= since - 2:
            found.append(plan)
    return found


def _wait_plans_settled(
    target: Target, nodes: set[str], since: float, timeout_s: float, quiet_s: float
) -> tuple[list[dict[str, Any]], bool]:
    """Wait until no plan for ``nodes`` is active for ``quiet_s`` s; (plans, settled)."""
    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
    plans: list[dict[str, Any]] = []
    while True:
        listed = _plans(target)
        if listed is None:
            return [], True  # no rescue controller in this cluster: nothing to wait for
        plans = _plans_since(listed, nodes, since)
        active = [p for p in plans if (p.get("status") or {}).get("phase") not in TERMINAL_PHASES]
        now = time.monotonic()
        if active:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet_s:
            return plans, True
        if now >= deadline:
            return plans, False
        time.sleep(0.5)


def _spec_labels(target: Target) -> dict[str, dict[str, str]]:
    state = target.state
    if state is None or not state.spec_path:
        return {}
    try:
        spec = load_spec(state.spec_path)
    except Exception:
        return {}
    return {n.name: dict(n.labels) for n in spec.nodes()}


def _rescue_annotations_removed(node: Any) -> dict[str, None]:
    """A patch removing the controller's bookkeeping annotations (its plans are done)."""
    return {
        key: None for key in (node.metadata.annotations or {}) if key.startswith(f"{RESCUE_GROUP}/")
    }


def _restore_standby(core: client.CoreV1Api, name: str, spec_labels: dict[str, str] | None) -> None:
    node: Any = core.read_node(name)
    labels = dict(node.metadata.labels or {})
    patch_labels: dict[str, str | None] = {STANDBY_LABEL: "true"}
    if spec_labels is not None:
        for key in labels:
            if key not in spec_labels and key not in _MANAGED_LABELS and key != STANDBY_LABEL:
                patch_labels[key] = None  # a label copied from the failed node
        for key, value in spec_labels.items():
            if labels.get(key) != value:
                patch_labels[key] = value
    core.patch_node(
        name,
        {
            "metadata": {"labels": patch_labels, "annotations": _rescue_annotations_removed(node)},
            "spec": {"unschedulable": True},
        },
    )


def restore_xid_nodes(
    timeout_s: float = 120.0,
    quiet_s: float = 5.0,
    nodes: list[str] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Put the nodes Xids were injected into back in service (the rollback of Xid injections).

    Waits (up to ``timeout_s``) until the rescue controller has no running
    plan for them for ``quiet_s`` seconds, so it does not race the
    controller; then uncordons each injected node known to have been
    schedulable before its injection, ends a node-not-ready (reboot) stage left
    behind, and returns every warm standby a plan swapped in to standby
    (cordoned, standby label, its spec labels back). The injections are read
    from the cluster's state on disk, so a rollback run by another process
    (a new ``chaos run``) finds them. A node cordoned before, or whose state
    before is unknown (the API server was down at the injection, or it was
    never injected into), stays cordoned and is listed in ``left_cordoned``.
    ``nodes``: restore these instead of every injected one. Safe when
    nothing was injected. Returns ``{"nodes", "uncordoned", "left_cordoned",
    "standbys_restored", "plans", "settled"}``; raises when plans were still
    running at the timeout (the nodes are restored anyway).
    """
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s < 0:
        raise ActivityFailed(f"timeout_s must be seconds, not {timeout_s!r}")
    target = resolve_target(configuration, secrets)
    # the record on disk, with the cluster's state: a rollback in a new process finds it
    injected = (
        _journal_injections(target)
        if target.state is not None
        else recorded_injections(target.cluster)
    )
    cordoned_before: dict[str, bool | None] = {}
    for i in injected:  # the first injection into a node tells how it was before
        cordoned_before.setdefault(i["node"], i.get("was_cordoned"))
    if nodes:
        chosen = set(nodes)
        since = time.time() - 3600
    else:
        chosen = set(cordoned_before)
        since = min((parse_iso(i["written_at"]).timestamp() for i in injected), default=time.time())
    if not chosen:
        return {
            "nodes": [],
            "uncordoned": [],
            "left_cordoned": [],
            "standbys_restored": [],
            "plans": {},
            "settled": True,
        }
    plans, settled = _wait_plans_settled(target, chosen, since, float(timeout_s), float(quiet_s))
    core = client.CoreV1Api(target.api())
    uncordoned = []
    left_cordoned = []
    for name in sorted(chosen):
        try:
            node: Any = core.read_node(name)
        except ApiException as err:
            if err.status == 404:
                continue
            raise
        labels = node.metadata.labels or {}
        if NODE_NOT_READY_LABEL in labels:
            core.patch_node(name, {"metadata": {"labels": {NODE_NOT_READY_LABEL: None}}})
        if not (node.spec and node.spec.unschedulable):
            continue
        if cordoned_before.get(name) is not False:
            # cordoned before the injection, or nobody knows: a person's cordon stays
            left_cordoned.append(name)
            continue
        core.patch_node(
            name,
            {
                "metadata": {"annotations": _rescue_annotations_removed(node)},
                "spec": {"unschedulable": False},
            },
        )
        uncordoned.append(name)
    spec_labels = _spec_labels(target)
    standbys = sorted(
        {
            str((p.get("status") or {}).get("standbyNode"))
            for p in plans
            if (p.get("status") or {}).get("standbyNode")
        }
    )
    for standby in standbys:
        _restore_standby(core, standby, spec_labels.get(standby) if spec_labels else None)
    _forget(str(target.cluster), chosen)
    if target.state is not None:
        _forget_on_disk(target, chosen)
    phases: dict[str, int] = {}
    for plan in plans:
        phase = str((plan.get("status") or {}).get("phase") or "none")
        phases[phase] = phases.get(phase, 0) + 1
    result = {
        "nodes": sorted(chosen),
        "uncordoned": uncordoned,
        "left_cordoned": left_cordoned,
        "standbys_restored": standbys,
        "plans": phases,
        "settled": settled,
    }
    if not settled:
        raise ActivityFailed(
            f"rescue plans on {sorted(chosen)} still ran {timeout_s:g} s into the restore "
            f"(phases {phases}); nodes were restored anyway: {json.dumps(result)}"
        )
    return result
