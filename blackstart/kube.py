"""The Kubernetes client factory every part of blackstart uses.

A client comes from an explicit kubeconfig path and context, else from
``$KUBECONFIG``/``~/.kube/config``. Chaos Toolkit activities find theirs
through :mod:`blackstart.target`.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client, config


class KubeconfigError(RuntimeError):
    """No usable kubeconfig; the message says which file or context was wrong."""


def api_client(
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    pool_size: int = 32,
    timeout: float | None = None,
) -> client.ApiClient:
    """An ApiClient for ``kubeconfig``/``context`` with a connection pool of ``pool_size``."""
    path = str(kubeconfig) if kubeconfig else None
    if path and not Path(path).exists():
        raise KubeconfigError(f"kubeconfig {path} does not exist")
    cfg = client.Configuration()
    try:
        config.load_kube_config(config_file=path, context=context, client_configuration=cfg)  # type: ignore[no-untyped-call]
    except config.ConfigException as err:
        where = path or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise KubeconfigError(f"cannot load kubeconfig {where} (context {context}): {err}") from err
    cfg.connection_pool_maxsize = pool_size
    if timeout is not None:
        cfg.retries = 0
    return client.ApiClient(cfg)


def process_api_client(
    kubeconfig: str | None, context: str | None, pool_size: int, timeout: float
) -> client.ApiClient:
    """The client of a long-running process (the rescue controller or agent).

    In a pod with no kubeconfig given, the pod's service account; else the
    kubeconfig. No client-side retries: the processes pace and retry on their own.
    """
    if (
        not kubeconfig
        and not os.environ.get("KUBECONFIG")
        and os.environ.get("KUBERNETES_SERVICE_HOST")
    ):
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        cfg.retries = 0
        cfg.connection_pool_maxsize = pool_size
        return client.ApiClient(cfg)
    return api_client(kubeconfig, context, pool_size=pool_size, timeout=timeout)


def namespace_gone(core: client.CoreV1Api, name: str) -> bool:
    """True once namespace ``name`` no longer exists (404); other API errors raise."""
    try:
        core.read_namespace(name)
    except client.ApiException as err:
        if err.status == 404:
            return True
        raise
    return False
