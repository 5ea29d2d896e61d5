"""Which cluster a Chaos Toolkit activity or control acts on, and how to reach it.

Activities and controls take the target from the experiment's
``configuration`` and ``secrets``, in this order:

0. ``$BLACKSTART_CONTEXT``: a kubeconfig context pinned from outside the
   experiment (``blackstart gameday --context`` sets it for every run); it
   overrides whatever the experiment's configuration names, so an experiment's
   own default cluster can never take the run elsewhere. The kubeconfig is
   ``$KUBECONFIG`` (or ``~/.kube/config``).
1. ``blackstart_cluster``: the name of a cluster blackstart created
   (``blackstart cluster up --name ...``); its saved state gives the admin
   kubeconfig, the non-admin identities, CoreDNS and Prometheus addresses, and
   the processes the local provider can stop, hang and restart.
2. A kubeconfig and context as chaostoolkit-kubernetes reads them
   (``KUBECONFIG``/``KUBERNETES_CONTEXT`` secrets, ``kubeconfig_path`` and
   ``kubernetes_context`` configuration keys): any cluster, for the activities
   that only need the Kubernetes API.
3. ``$BLACKSTART_CLUSTER`` or the default cluster ``blackstart``, when it exists.
4. ``$KUBECONFIG`` / ``~/.kube/config``.

A context reached by a kubeconfig that is not blackstart's own (a copy under
another context name, say) still gets the blackstart cluster behind it, matched
by API server address and certificate authority, so process-level faults
(kernel logs, stopping the API server) work there; but such a target carries
``named_context`` and the guard control then needs that context allow-listed,
whoever created the cluster.

A failure to find the target raises :class:`chaoslib.exceptions.ActivityFailed`
naming what was looked for and how to fix it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from chaoslib.exceptions import ActivityFailed
from kubernetes import client

from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.provider import ClusterError, ClusterProvider
from blackstart.clusters.registry import provider_for
from blackstart.clusters.state import (
    CLUSTER_ENV,
    DEFAULT_CLUSTER,
    ClusterNotFound,
    ClusterState,
    list_states,
    load_state,
    state_dir_for,
)
from blackstart.clusters.toolchain import resolve
from blackstart.kube import KubeconfigError, api_client
from blackstart.paths import cache_dir

CLUSTER_KEY = "blackstart_cluster"
PINNED_CONTEXT_ENV = "BLACKSTART_CONTEXT"
PROMETHEUS_KEY = "prometheus_url"
DNS_SERVER_KEY = "dns_server"
KIND_NODE_MAP = "kind-nodes.json"
KIND_KUBECONFIG = "kubeconfig"


@dataclass(frozen=True)
class Target:
    """The cluster an activity acts on.

    ``provider`` is ``local`` (a blackstart local cluster: processes it can
    signal), ``kind`` (a blackstart kind cluster: Docker containers) or
    ``context`` (any cluster reached by kubeconfig: API-only activities).
    """

    provider: str
    kubeconfig: str | None
    context: str | None
    cluster: str | None = None
    state: ClusterState | None = None
    prometheus_url: str | None = None
    dns_server: str | None = None
    #: the kubeconfig context the user named (``$BLACKSTART_CONTEXT``, or a context that
    #: is not blackstart's own name for the cluster): the guard wants it allow-listed
    named_context: str | None = None

    def api(self, pool_size: int = 8) -> client.ApiClient:
        """An admin ApiClient for the target."""
        try:
            return api_client(self.kubeconfig, self.context, pool_size=pool_size)
        except KubeconfigError as err:
            raise ActivityFailed(str(err)) from err

    def identity_api(self, user: str, pool_size: int = 8) -> client.ApiClient:
        """An ApiClient authenticated as one of blackstart's non-admin identities.

        Local clusters and kind clusters blackstart created have them (signed by the
        cluster's CA when it was made); any other target raises naming what is needed.
        """
        state = self.require_state(f"the identity {user}")
        if not state.identities and state.provider == "kind":
            raise ActivityFailed(
                f"kind cluster {state.name!r} has no identity {user}: it was made before "
                "blackstart signed identities on kind; recreate it with "
                f"`blackstart cluster up --provider kind --name {state.name}`"
            )
        try:
            path = state.identity_kubeconfig(user)
        except ClusterNotFound as err:
            raise ActivityFailed(str(err)) from err
        return api_client(path, None, pool_size=pool_size)

    def require_state(self, what: str) -> ClusterState:
        """The saved state of a blackstart local cluster, or raise naming ``what`` needs it."""
        if self.state is None:
            raise ActivityFailed(
                f"{what} needs a cluster blackstart created with the local provider; "
                f"the target is {self.describe()}. Set the configuration key "
                f"{CLUSTER_KEY!r} (or ${CLUSTER_ENV}) to the name of such a cluster"
            )
        return self.state

    def require_prometheus(self) -> str:
        if not self.prometheus_url:
            raise ActivityFailed(
                f"no Prometheus known for {self.describe()}: set the configuration key "
                f"{PROMETHEUS_KEY!r} to its URL (e.g. http://127.0.0.1:9090)"
            )
        return self.prometheus_url

    def describe(self) -> str:
        if self.named_context:
            described = f"kubeconfig context {self.named_context!r}"
            if self.cluster:
                described += f" (blackstart {self.provider} cluster {self.cluster!r})"
            return described
        if self.cluster:
            return f"{self.provider} cluster {self.cluster!r}"
        return (
            f"kubeconfig {self.kubeconfig or '$KUBECONFIG'} (context {self.context or 'current'})"
        )


def _first(*values: Any) -> str | None:
    for value in values:
        if value:
            return str(value)
    return None


def _kind_target(name: str, configuration: Mapping[str, Any]) -> Target | None:
    folder = state_dir_for(name, cache_dir())
    if not (folder / KIND_NODE_MAP).exists():
        return None
    return Target(
        provider="kind",
        kubeconfig=str(folder / KIND_KUBECONFIG),
        context=f"kind-{name}",
        cluster=name,
        prometheus_url=_first(configuration.get(PROMETHEUS_KEY)),
        dns_server=_first(configuration.get(DNS_SERVER_KEY)),
    )


def _local_target(state: ClusterState, configuration: Mapping[str, Any]) -> Target:
    return Target(
        provider=state.provider,
        kubeconfig=state.kubeconfig,
        context=state.context,
        cluster=state.name,
        state=state,
        prometheus_url=_first(configuration.get(PROMETHEUS_KEY), state.prometheus_url),
        dns_server=_first(configuration.get(DNS_SERVER_KEY), state.dns_address),
    )


def cluster_target(name: str, configuration: Mapping[str, Any] | None = None) -> Target:
    """The target for blackstart cluster ``name`` (local or kind); raise when there is none."""
    configuration = configuration or {}
    try:
        return _local_target(load_state(name), configuration)
    except ClusterNotFound as err:
        kind = _kind_target(name, configuration)
        if kind is not None:
            return kind
        raise ActivityFailed(
            f"{err}. Create it with `blackstart cluster up --name {name}`, or let the "
            "cluster control create it (controls: blackstart.controls.cluster)"
        ) from None


def resolve_target(
    configuration: Mapping[str, Any] | None = None, secrets: Mapping[str, Any] | None = None
) -> Target:
    """The target of an activity (see the module documentation for the order)."""
    configuration = configuration or {}
    secrets = secrets or {}
    pinned = os.environ.get(PINNED_CONTEXT_ENV)
    if pinned:
        return context_target(os.environ.get("KUBECONFIG"), pinned, configuration, pinned=True)
    named = _first(configuration.get(CLUSTER_KEY))
    if named:
        return cluster_target(named, configuration)
    kubeconfig = _first(
        secrets.get("KUBECONFIG"),
        configuration.get("kubeconfig_path"),
        configuration.get("KUBECONFIG"),
    )
    context = _first(
        secrets.get("KUBERNETES_CONTEXT"),
        configuration.get("kubernetes_context"),
        configuration.get("KUBERNETES_CONTEXT"),
    )
    if kubeconfig or context:
        return context_target(kubeconfig, context, configuration)
    default = os.environ.get(CLUSTER_ENV) or DEFAULT_CLUSTER
    try:
        return cluster_target(default, configuration)
    except ActivityFailed:
        fallback = Path(os.environ.get("KUBECONFIG") or "~/.kube/config").expanduser()
        if fallback.is_file():
            return context_target(None, os.environ.get("KUBERNETES_CONTEXT"), configuration)
        raise


def context_target(
    kubeconfig: str | None,
    context: str | None,
    configuration: Mapping[str, Any] | None = None,
    pinned: bool = False,
) -> Target:
    """A target reached by kubeconfig/context; a blackstart cluster when it is one of ours.

    Through blackstart's own kubeconfig and context name the target is that cluster, as
    if named by ``blackstart_cluster``. Through any other kubeconfig or context name
    (or when ``pinned``), the target keeps that kubeconfig and context and carries
    ``named_context``; the blackstart cluster behind it, if any, is still found (by API
    server address and certificate authority) for the activities that need its state.
    """
    configuration = configuration or {}
    path = kubeconfig or os.environ.get("KUBECONFIG")
    state = blackstart_state_for(path, context)
    if state is not None and not pinned:
        return _local_target(state, configuration)
    state = state or blackstart_state_behind(path, context)
    named = context or current_context(path)
    if state is not None:
        return replace(
            _local_target(state, configuration),
            kubeconfig=path,
            context=context,
            named_context=named or state.context,
        )
    return Target(
        provider="context",
        kubeconfig=path,
        context=context,
        prometheus_url=_first(configuration.get(PROMETHEUS_KEY)),
        dns_server=_first(configuration.get(DNS_SERVER_KEY)),
        named_context=named if pinned else None,
    )


def current_context(kubeconfig: str | None) -> str | None:
    """The current-context of a kubeconfig file, or None when unreadable."""
    path = Path(kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config").expanduser()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if isinstance(data, dict) and data.get("current-context"):
        return str(data["current-context"])
    return None


def blackstart_state_for(kubeconfig: str | None, context: str | None) -> ClusterState | None:
    """The blackstart cluster whose admin kubeconfig (or context) this is, if any."""
    if not kubeconfig and not context:
        return None
    wanted = Path(kubeconfig).expanduser().resolve() if kubeconfig else None
    ctx = context or (current_context(kubeconfig) if kubeconfig else None)
    for state in list_states():
        same_file = wanted is not None and Path(state.kubeconfig).resolve() == wanted
        if same_file and (ctx is None or ctx == state.context):
            return state
    return None


def _endpoint(kubeconfig: str | None, context: str | None) -> tuple[str, bytes] | None:
    """(API server URL, CA certificate) of a kubeconfig context; None when it cannot load."""
    try:
        cfg = api_client(kubeconfig, context, pool_size=1).configuration
    except (KubeconfigError, OSError, ValueError):
        return None
    ca = b""
    if cfg.ssl_ca_cert:
        try:
            ca = Path(cfg.ssl_ca_cert).read_bytes()
        except OSError:
            return None
    return str(cfg.host).rstrip("/"), ca


def blackstart_state_behind(kubeconfig: str | None, context: str | None) -> ClusterState | None:
    """The blackstart cluster a kubeconfig context reaches, whatever the file or context name.

    Matched by API server URL and certificate authority (each cluster has its own
    port and CA), so a copy of blackstart's kubeconfig under another context name
    still finds the cluster.
    """
    wanted = _endpoint(kubeconfig, context)
    if wanted is None:
        return None
    for state in list_states():
        if state.kubeconfig and _endpoint(state.kubeconfig, state.context) == wanted:
            return state
    return None


def target_summary(target: Target) -> dict[str, Any]:
    """A JSON-able description of the target, for journals and errors."""
    summary: dict[str, Any] = json.loads(
        json.dumps(
            {
                "provider": target.provider,
                "cluster": target.cluster,
                "context": target.context,
                "kubeconfig": target.kubeconfig,
                "prometheus_url": target.prometheus_url,
                "dns_server": target.dns_server,
                "named_context": target.named_context,
            }
        )
    )
    return summary


def cluster_provider(target: Target, what: str) -> ClusterProvider:
    """The provider of a cluster blackstart created (local or kind).

    Raises naming ``what`` when the target is a plain kubeconfig context, whose
    processes blackstart cannot reach.
    """
    state = target.require_state(what)
    try:
        return provider_for(state, cache_dir())
    except ClusterError as err:
        raise ActivityFailed(f"{what}: {err}") from err


def local_provider(target: Target, what: str) -> LocalProvider:
    """The :class:`~blackstart.clusters.local.LocalProvider` of a local target.

    Raises naming ``what`` when the target is not a blackstart local cluster.
    """
    state = target.require_state(what)
    if state.provider != "local":
        raise ActivityFailed(
            f"{what} needs the local provider; cluster {state.name!r} uses {state.provider!r}"
        )
    cache = cache_dir()
    toolchain, _missing = resolve(cache)
    return LocalProvider(cache, toolchain, progress=lambda message: None)
