"""``blackstart rescue install``: put the CRDs and RBAC of the rescue components on a cluster.

Applies, with server-side apply (field manager ``blackstart-rescue``), the manifests
shipped in ``rescue/deploy/``: the CRDs (``crds.yaml``), the controller's RBAC
(``controller-rbac.yaml``) and the agent's (``agent-rbac.yaml``), then waits until
the CRDs are Established so a controller started next finds them. The controller
may patch ``nodes/status`` only with ``local_reboot`` (the KWOK reboot driver,
``controller-rbac-local-reboot.yaml``).

The agent's ValidatingAdmissionPolicy (each agent may write the Xid condition of
its own node only) needs the API server to serve ValidatingAdmissionPolicy (v1,
Kubernetes 1.30) and to put the node name in service account tokens (1.32). On an
older cluster it is skipped with a warning, and the agent works without it; what
is lost there: RBAC alone lets any agent's identity write the ``GPUXidError``
condition of any node, so a stolen agent token could have the controller cordon,
drain or reboot every GPU node.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

import yaml
from kubernetes import client, dynamic

__all__ = [
    "DEPLOY_FILES",
    "LOCAL_REBOOT_FILE",
    "admission_policy_support",
    "apply_documents",
    "deploy_documents",
    "install",
    "wait_established",
]

DEPLOY_FILES = ("crds.yaml", "controller-rbac.yaml", "agent-rbac.yaml")
LOCAL_REBOOT_FILE = "controller-rbac-local-reboot.yaml"
FIELD_MANAGER = "blackstart-rescue"
NODE_BOUND_TOKENS = (1, 32)  # service account tokens carry the node name from here on
_ADMISSION_POLICY_KINDS = frozenset(
    {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
)
WITHOUT_ADMISSION_POLICY = (
    "the agent works, but RBAC alone lets any agent's identity write the GPUXidError "
    "condition of any node (a stolen agent token could have the controller cordon, drain "
    "or reboot every GPU node); upgrade to Kubernetes 1.32 or later for the per-node policy"
)


def deploy_documents(names: Iterable[str] = DEPLOY_FILES) -> list[dict[str, Any]]:
    """The YAML documents of the packaged ``rescue/deploy`` files ``names``, in order."""
    folder = resources.files("blackstart.rescue").joinpath("deploy")
    documents: list[dict[str, Any]] = []
    for name in names:
        entry = folder.joinpath(name)
        if not entry.is_file():
            raise FileNotFoundError(f"rescue/deploy/{name} is missing from the installed package")
        documents.extend(doc for doc in yaml.safe_load_all(entry.read_text()) if doc)
    return documents


def apply_documents(
    api: client.ApiClient, documents: Iterable[dict[str, Any]], progress: Callable[[str], None]
) -> list[str]:
    """Server-side apply every document; returns ``kind/name`` of each."""
    dyn = dynamic.DynamicClient(api)  # type: ignore[no-untyped-call]
    applied = []
    for doc in documents:
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        meta = doc.get("metadata") or {}
        dyn.server_side_apply(  # type: ignore[no-untyped-call]
            resource,
            body=doc,
            name=meta.get("name"),
            namespace=meta.get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        what = f"{doc['kind']}/{meta.get('name')}"
        progress(f"applied {what}")
        applied.append(what)
    return applied


def wait_established(api: client.ApiClient, names: Iterable[str], timeout: float = 60.0) -> None:
    """Wait until every CRD in ``names`` is Established; raise :class:`TimeoutError` naming it."""
    ext = client.ApiextensionsV1Api(api)
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            crd = ext.read_custom_resource_definition(name)
            conditions = (crd.status.conditions if crd.status else None) or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} was not Established within {timeout:.0f} s")
            time.sleep(0.2)


def admission_policy_support(
    served: bool, version: tuple[int, int] | None
) -> tuple[bool, str | None]:
    """Whether to install the agent's admission policy; when not, why (for the warning).

    ``served``: the API server serves admissionregistration.k8s.io/v1
    ValidatingAdmissionPolicy. ``version``: its (major, minor), None when unknown.
    """
    if not served:
        return False, "this API server does not serve ValidatingAdmissionPolicy (v1)"
    if version is not None and version < NODE_BOUND_TOKENS:
        return False, (
            f"Kubernetes {version[0]}.{version[1]} puts no node name in service account "
            "tokens (1.32 does): the policy would refuse every agent"
        )
    return True, None


def _server_version(api: client.ApiClient) -> tuple[int, int] | None:
    try:
        code = client.VersionApi(api).get_code()
        return int(str(code.major).rstrip("+")), int(str(code.minor).rstrip("+"))
    except (ValueError, TypeError, AttributeError):
        return None


def _serves(api: client.ApiClient, api_version: str, kind: str) -> bool:
    dyn = dynamic.DynamicClient(api)  # type: ignore[no-untyped-call]
    return bool(dyn.resources.search(api_version=api_version, kind=kind))


def install(
    api: client.ApiClient, progress: Callable[[str], None] = print, local_reboot: bool = False
) -> list[str]:
    """Apply the CRDs and RBAC and wait for the CRDs; returns what was applied.

    ``local_reboot``: also let the controller patch ``nodes/status`` (only the
    ``local`` reboot driver, on KWOK nodes, needs it).
    """
    documents = deploy_documents([*DEPLOY_FILES, *([LOCAL_REBOOT_FILE] if local_reboot else [])])
    install_policy, why = admission_policy_support(
        _serves(api, "admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"),
        _server_version(api),
    )
    if not install_policy:
        progress(f"warning: the agent's admission policy is not installed: {why}; "
                 f"{WITHOUT_ADMISSION_POLICY}")  # fmt: skip
        documents = [d for d in documents if d["kind"] not in _ADMISSION_POLICY_KINDS]
    applied = apply_documents(api, documents, progress)
    crds = [d["metadata"]["name"] for d in documents if d["kind"] == "CustomResourceDefinition"]
    wait_established(api, crds)
    return applied
