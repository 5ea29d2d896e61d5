"""``blackstart rescue install``: put the CRDs and RBAC of the rescue components on a cluster.

Applies, with server-side apply (field manager ``blackstart-rescue``), the manifests
shipped in ``rescue/deploy/``: the CRDs (``crds.yaml``), the controller's RBAC
(``controller-rbac.yaml``) and the agent's (``agent-rbac.yaml``), then waits until
the CRDs are Established so a controller started next finds them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

import yaml
from kubernetes import client, dynamic

__all__ = ["DEPLOY_FILES", "apply_documents", "deploy_documents", "install", "wait_established"]

DEPLOY_FILES = ("crds.yaml", "controller-rbac.yaml", "agent-rbac.yaml")
FIELD_MANAGER = "blackstart-rescue"


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


def install(api: client.ApiClient, progress: Callable[[str], None] = print) -> list[str]:
    """Apply the CRDs and RBAC and wait for the CRDs; returns what was applied."""
    documents = deploy_documents()
    applied = apply_documents(api, documents, progress)
    crds = [d["metadata"]["name"] for d in documents if d["kind"] == "CustomResourceDefinition"]
    wait_established(api, crds)
    return applied
