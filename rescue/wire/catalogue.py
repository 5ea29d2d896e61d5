"""The built-in NVIDIA Xid catalogue: what an Xid code means and what to do about it.

The entries follow NVIDIA's Xid Catalog ("Analyzing Xid Errors with the Xid
Catalog", docs.nvidia.com/deploy/xid-errors/, Ampere and newer). There, every
code has a *Resolution Bucket (Immediate Action)* such as ``RESTART_APP``,
``RESET_GPU`` or ``RESTART_BM``; each entry here keeps that bucket verbatim in
``nvidia_action`` and maps it to one of the actions the self-heal controller
can carry out:

- ``ignore``: nothing to do; informational, or the GPU stays healthy.
- ``restart-app``: the application that hit the error must be restarted.
- ``reset-gpu``: stop the GPU's processes and reset the GPU (``nvidia-smi -r``).
- ``reboot``: reboot the node (NVIDIA's ``RESTART_BM``, restart bare metal).
- ``power-cycle``: cold-reset the node, for errors that survive a reset.
- ``contact-support``: a person has to look; no automatic action is known to help.

Where NVIDIA's bucket is a workflow rather than one action (``WORKFLOW_XID_48``,
``WORKFLOW_NVLINK_ERR``, ``XID_154``...), the action is the one the workflow
text prescribes for the common case, and ``note`` says the rest.

Xid 154 carries its action in the message ("GPU recovery action changed from
0x0 (None) to 0x2 (Node Reboot Required)"): use :func:`action_for` with the
message to get it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, get_args

__all__ = [
    "ACTIONS",
    "CATALOGUE",
    "SEVERITIES",
    "Action",
    "Severity",
    "XidInfo",
    "action_for",
    "describe",
    "recovery_action_154",
]

Action = Literal["ignore", "restart-app", "reset-gpu", "reboot", "power-cycle", "contact-support"]
Severity = Literal["info", "warning", "critical"]

ACTIONS: tuple[Action, ...] = get_args(Action)
SEVERITIES: tuple[Severity, ...] = get_args(Severity)


@dataclass(frozen=True)
class XidInfo:
    """What one Xid code means and what NVIDIA recommends doing about it.

    ``action`` is the immediate action; ``escalation``, when set, is the next
    step NVIDIA names for when the error persists after it. ``known`` is false
    for codes the catalogue does not list.
    """

    code: int
    mnemonic: str
    meaning: str
    action: Action
    severity: Severity
    nvidia_action: str
    note: str = ""
    escalation: Action | None = None
    known: bool = True

    def to_json(self) -> dict[str, str | int | bool | None]:
        """The entry as a JSON-ready dict."""
        return {
            "code": self.code,
            "mnemonic": self.mnemonic,
            "meaning": self.meaning,
            "action": self.action,
            "severity": self.severity,
            "nvidia_action": self.nvidia_action,
            "escalation": self.escalation,
            "note": self.note,
            "known": self.known,
        }


def _entry(
    code: int,
    mnemonic: str,
    meaning: str,
    action: Action,
    nvidia_action: str,
    note: str = "",
    escalation: Action | None = None,
    severity: Severity | None = None,
) -> XidInfo:
    return XidInfo(
        code=code,
        mnemonic=mnemonic,
        meaning=meaning,
        action=action,
        severity=severity or _severity_of(action),
        nvidia_action=nvidia_action,
        note=note,
        escalation=escalation,
    )


def _severity_of(action: Action) -> Severity:
    # The severity follows from what recovery costs: a node-level action is
    # critical, an application restart or a human look is a warning.
    if action in ("reset-gpu", "reboot", "power-cycle"):
        return "critical"
    if action in ("restart-app", "contact-support"):
        return "warning"
    return "info"


_ENTRIES: tuple[XidInfo, ...] = (
    _entry(
        13,
        "ROBUST_CHANNEL_GR_EXCEPTION",
        "Graphics Engine Exception",
        "restart-app",
        "RESTART_APP",
        "Usually an application fault (out-of-bounds access, illegal instruction); debug it "
        "with cuda-gdb or compute-sanitizer. Repeats on the same GPC/TPC across SMs point to "
        "hardware (NVIDIA WORKFLOW_XID_13).",
    ),
    _entry(
        31,
        "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT",
        "GPU memory page fault",
        "restart-app",
        "RESTART_APP",
        "The MMU reported an illegal address access, typically an application bug. Repeated "
        "faults on the same GPU point to hardware (NVIDIA WORKFLOW_XID_31).",
    ),
    _entry(
        43,
        "ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR",
        "GPU stopped processing",
        "ignore",
        "IGNORE",
        "A user application hit a software-induced fault and had to terminate; the GPU "
        "remains healthy.",
    ),
    _entry(
        45,
        "ROBUST_CHANNEL_PREEMPTIVE_REMOVAL",
        "Preemptive cleanup, due to previous errors",
        "ignore",
        "WORKFLOW_XID_45",
        "Logged when the driver tears down an aborted application (Ctrl-C, GPU reset, "
        "SIGKILL). Follow the other Xid seen with it; seen alone, NVIDIA says restart "
        "Fabric Manager.",
    ),
    _entry(
        48,
        "ROBUST_CHANNEL_GPU_ECC_DBE",
        "Double Bit ECC Error",
        "reset-gpu",
        "WORKFLOW_XID_48",
        "An uncorrectable ECC error; a GPU reset or node reboot clears it. With Xid 63/64, "
        "drain the GPU and then reset it.",
        escalation="reboot",
    ),
    _entry(
        61,
        "PMU_BREAKPOINT",
        "Internal micro-controller breakpoint/warning",
        "contact-support",
        "CONTACT_SUPPORT",
        "Listed as unused on Ampere and newer GPUs.",
    ),
    _entry(
        62,
        "PMU_HALT_ERROR",
        "Internal micro-controller halt",
        "reset-gpu",
        "RESET_GPU",
    ),
    _entry(
        63,
        "INFOROM_DRAM_RETIREMENT_EVENT",
        "GPU memory remapping event",
        "ignore",
        "IGNORE",
        "ECC row remapping (Ampere and newer) or page retirement (older GPUs) was recorded; "
        "a pending row remap takes effect at the next GPU reset.",
    ),
    _entry(
        64,
        "INFOROM_DRAM_RETIREMENT_FAILURE",
        "GPU memory remapping failure",
        "reset-gpu",
        "RESET_GPU",
        escalation="contact-support",
    ),
    _entry(
        68,
        "ROBUST_CHANNEL_NVDEC0_ERROR",
        "NVDEC0 Exception (video decoder)",
        "restart-app",
        "RESTART_APP",
    ),
    _entry(
        69,
        "ROBUST_CHANNEL_GR_CLASS_ERROR",
        "Graphics Engine class error",
        "restart-app",
        "RESTART_APP",
    ),
    _entry(
        74,
        "NVLINK_ERROR",
        "NVLink Error",
        "reset-gpu",
        "WORKFLOW_NVLINK_ERR",
        "A GPU reset or node reboot is needed to clear it. May be sympathetic: the device at "
        "the other end of the link can be the one that failed.",
        escalation="reboot",
    ),
    _entry(
        79,
        "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS",
        "GPU has fallen off the bus",
        "reboot",
        "RESTART_BM",
        "The driver cannot reach the GPU over PCI Express, often a PCIe link or hardware "
        "failure; check system and kernel PCI event logs.",
        escalation="contact-support",
    ),
    _entry(
        92,
        "EXCESSIVE_SBE_INTERRUPTS",
        "High single-bit ECC error rate",
        "ignore",
        "IGNORE",
    ),
    _entry(
        94,
        "ROBUST_CHANNEL_CONTAINED_ERROR",
        "Contained memory error",
        "restart-app",
        "RESTART_APP",
        "Contained to one application, which must be restarted; other applications are "
        "unaffected. Reset the GPU when convenient.",
        escalation="reset-gpu",
    ),
    _entry(
        95,
        "ROBUST_CHANNEL_UNCONTAINED_ERROR",
        "Uncontained memory error",
        "reset-gpu",
        "RESET_GPU",
        "Affects multiple applications; the GPU must be reset before they can restart.",
    ),
    _entry(
        109,
        "ROBUST_CHANNEL_CTXSW_TIMEOUT_ERROR",
        "Context Switch Timeout Error",
        "reset-gpu",
        "RESET_GPU",
    ),
    _entry(
        119,
        "GSP_RPC_TIMEOUT",
        "GSP RPC Timeout",
        "reset-gpu",
        "RESET_GPU",
        "The GSP core of the GPU did not answer an RPC in time; a GPU reset or node power "
        "cycle may be needed if it persists.",
        escalation="power-cycle",
    ),
    _entry(
        120,
        "GSP_ERROR",
        "GSP Error",
        "reset-gpu",
        "RESET_GPU",
        "An error in code running on the GSP core of the GPU; a GPU reset or node power "
        "cycle may be needed if it persists.",
        escalation="power-cycle",
    ),
    _entry(
        121,
        "C2C_ERROR",
        "C2C Error",
        "ignore",
        "IGNORE",
        "Corrected errors on the C2C NVLink to a Grace CPU, with no operational impact; "
        "reset the GPU at a service window to retrain the link.",
    ),
    _entry(
        140,
        "UNRECOVERABLE_ECC_ERROR_ESCAPE",
        "ECC Unrecovered Error",
        "reset-gpu",
        "RESET_GPU",
        "Uncorrectable GPU memory errors that kept the driver from offlining pages or "
        "remapping rows.",
        escalation="contact-support",
    ),
    _entry(
        143,
        "GPU_INIT_ERROR",
        "GPU Initialization Error",
        "reset-gpu",
        "RESET_GPU",
    ),
    _entry(
        154,
        "GPU_RECOVERY_ACTION_CHANGED",
        "GPU Recovery Action Changed",
        "contact-support",
        "XID_154",
        "Informational: summarises the recovery action another Xid requires. The action is "
        "in the message (None, Drain P2P, Drain and Reset, GPU Reset Required, Node Reboot "
        "Required); action_for(154, message) decodes it.",
    ),
)

CATALOGUE: Mapping[int, XidInfo] = MappingProxyType({info.code: info for info in _ENTRIES})
"""Every Xid code the catalogue lists, by code."""


def describe(code: int) -> XidInfo:
    """The catalogue entry for ``code``, or an "unknown Xid" entry; never raises."""
    try:
        info = CATALOGUE.get(code)
    except TypeError:  # an unhashable value from an untyped caller
        info = None
    if info is not None:
        return info
    number = code if isinstance(code, int) else -1
    return XidInfo(
        code=number,
        mnemonic="UNKNOWN",
        meaning=f"Unknown Xid {number}",
        action="contact-support",
        severity="warning",
        nvidia_action="",
        note="Not in blackstart's catalogue; look it up in NVIDIA's Xid Catalog.",
        known=False,
    )


# NVML's nvmlDeviceGpuRecoveryAction_t, as Xid 154 prints it: "... to 0x2 (Node Reboot
# Required)". Drain P2P (3) and Recover IMEX Domain (5) have no node-level action of ours.
_RECOVERY_BY_NUMBER: Mapping[int, Action] = MappingProxyType(
    {
        0: "ignore",  # None
        1: "reset-gpu",  # GPU Reset Required
        2: "reboot",  # Node Reboot Required
        3: "contact-support",  # Drain P2P
        4: "reset-gpu",  # Drain and Reset
        5: "contact-support",  # Recover IMEX Domain
        6: "reset-gpu",  # Reset the GPU's PCIe bus
        7: "reboot",  # Reboot the system
    }
)
_RECOVERY_BY_NAME: Mapping[str, Action] = MappingProxyType(
    {
        "none": "ignore",
        "gpu reset required": "reset-gpu",
        "node reboot required": "reboot",
        "drain p2p": "contact-support",
        "drain and reset": "reset-gpu",
    }
)
_RECOVERY_TARGET = re.compile(
    r"\bto\s+(?:0x(?P<number>[0-9a-f]{1,8})\s*)?(?:\((?P<name>[^()]{0,64})\))?",
    re.IGNORECASE | re.ASCII,
)


def recovery_action_154(message: str) -> Action | None:
    """The action an Xid 154 message asks for, or None if the message cannot be decoded.

    ``"GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)"``
    gives ``"reboot"``. The name in parentheses wins over the number when both are
    known; an unknown name falls back to the number.
    """
    for match in _RECOVERY_TARGET.finditer(message):
        name = (match.group("name") or "").strip().lower()
        if name in _RECOVERY_BY_NAME:
            return _RECOVERY_BY_NAME[name]
        number = match.group("number")
        if number is not None:
            return _RECOVERY_BY_NUMBER.get(int(number, 16), "contact-support")
    return None


def action_for(code: int, message: str = "") -> Action:
    """The action for an Xid as logged: the catalogue's, or for Xid 154 the one in its message."""
    if code == 154:
        decoded = recovery_action_154(message)
        if decoded is not None:
            return decoded
    return describe(code).action
