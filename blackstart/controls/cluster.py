"""Cluster control: have the experiment's target cluster ready before it runs.

Arguments (all optional)::

    {"create": true,             # create the cluster when it does not exist
     "spec": "gpu-fleet.yaml",   # cluster spec to create it from (file or packaged name)
     "delete_after": true,       # delete it afterwards, only if this control created it
     "rescue": false,            # start the rescue controller and node agents (on
                                 # kind: check the Helm chart's controller runs)
     "rescue_args": [],          # extra `blackstart rescue controller` flags
     "timeout_s": 600}

The cluster is the one named by the configuration key ``blackstart_cluster``
(default ``$BLACKSTART_CLUSTER`` or ``blackstart``). When the experiment
gives a kubeconfig or context instead (``kubeconfig_path``,
``kubernetes_context``, or the ``KUBECONFIG``/``KUBERNETES_CONTEXT`` secrets),
this control leaves the cluster alone and the activities use that context.

When a context is pinned from outside (``$BLACKSTART_CONTEXT``, which
``blackstart gameday --context`` sets), this control never creates, starts or
deletes anything: the experiment runs on that context whatever its own
configuration names, and ``rescue: true`` only checks that the rescue CRDs are
installed there (the controller is expected to be deployed already).

For a blackstart cluster it sets ``blackstart_cluster`` in the configuration
and points ``$KUBECONFIG`` at the cluster's admin kubeconfig for the run, so
chaostoolkit-kubernetes activities reach the same cluster. Rescue components
it started are stopped after the run; components already running are reused
as they are. A cluster that cannot be found or created interrupts the run
(:class:`chaoslib.exceptions.InterruptExecution`) before anything is injected.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Configuration, Experiment, Journal, Secrets
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from blackstart.clusters.local.base import RESCUE_COMPONENTS
from blackstart.clusters.local.provider import LocalProvider
from blackstart.clusters.processes import ProcessError, is_alive, read_pid
from blackstart.clusters.provider import ClusterError
from blackstart.clusters.spec import SpecError, load_spec
from blackstart.clusters.state import CLUSTER_ENV, DEFAULT_CLUSTER, ClusterNotFound, load_state
from blackstart.clusters.toolchain import resolve
from blackstart.controls.journal import blackstart_entry, environment
from blackstart.health import wait_until
from blackstart.names import RESCUE_GROUP, RESCUE_PLANS
from blackstart.paths import cache_dir
from blackstart.target import (
    CLUSTER_KEY,
    PINNED_CONTEXT_ENV,
    Target,
    cluster_target,
    resolve_target,
)

logger = logging.getLogger("chaostoolkit")

__all__ = [
    "after_experiment_control",
    "before_experiment_control",
    "cleanup_control",
    "configure_control",
]

RESCUE_PLANS_CRD = f"{RESCUE_PLANS}.{RESCUE_GROUP}"
_EXPLICIT_KEYS = ("kubeconfig_path", "kubernetes_context", "KUBECONFIG", "KUBERNETES_CONTEXT")


class _Run:
    """What this control did in the current run, to undo it in :func:`cleanup_control`."""

    def __init__(self) -> None:
        self.cluster: str | None = None
        self.created = False
        self.delete_after = True
        self.rescue_started = False
        self.saved_env: dict[str, str | None] = {}
        self.saved_default_kubeconfig: str | None = None
        self.target: Target | None = None


_run = _Run()


def _provider() -> LocalProvider:
    cache = cache_dir()
    toolchain, _missing = resolve(cache)
    return LocalProvider(cache, toolchain, progress=lambda message: logger.info(message))


def _explicit_context(configuration: Configuration, secrets: Secrets) -> bool:
    configuration = configuration or {}
    secrets = secrets or {}
    return any(configuration.get(k) for k in _EXPLICIT_KEYS[:2]) or any(
        secrets.get(k) for k in _EXPLICIT_KEYS[2:]
    )


def _rescue_running(provider: LocalProvider, name: str) -> bool:
    return any(is_alive(read_pid(provider.pid_file(name, c))) for c in RESCUE_COMPONENTS)


def _point_kubeconfig_at(path: str) -> None:
    """Make chaostoolkit-kubernetes (which reads $KUBECONFIG) reach this cluster for the run."""
    from kubernetes.config import kube_config

    _run.saved_env = {"KUBECONFIG": os.environ.get("KUBECONFIG")}
    os.environ["KUBECONFIG"] = path
    # the kubernetes client reads $KUBECONFIG once, at import: update its default too
    _run.saved_default_kubeconfig = kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = path


def configure_control(
    configuration: Configuration = None,
    secrets: Secrets = None,
    experiment: Experiment = None,
    **arguments: Any,
) -> None:
    """Reset what the control remembers; the work happens before the experiment."""
    global _run
    _run = _Run()


def _check_arguments(
    create: Any, delete_after: Any, rescue: Any, rescue_args: Any, timeout_s: Any
) -> None:
    for name, value in (("create", create), ("delete_after", delete_after), ("rescue", rescue)):
        if not isinstance(value, bool):
            raise InterruptExecution(
                f"cluster control: {name} must be true or false, not {value!r}"
            )
    if not isinstance(rescue_args, list) or not all(isinstance(a, str) for a in rescue_args):
        raise InterruptExecution(
            f"cluster control: rescue_args must be a list of strings, not {rescue_args!r}"
        )
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
        raise InterruptExecution(f"cluster control: timeout_s must be seconds, not {timeout_s!r}")


def before_experiment_control(
    context: Experiment,
    configuration: Configuration = None,
    secrets: Secrets = None,
    create: bool = True,
    spec: str | None = None,
    delete_after: bool = True,
    rescue: bool = False,
    rescue_args: list[str] | None = None,
    timeout_s: float = 600.0,
    **_: Any,
) -> None:
    """Find or create the cluster; start the rescue components when asked."""
    rescue_args = list(rescue_args or [])
    _check_arguments(create, delete_after, rescue, rescue_args, timeout_s)
    if configuration is None:
        raise InterruptExecution("cluster control: the experiment has no configuration section")
    pinned = os.environ.get(PINNED_CONTEXT_ENV)
    if pinned:
        _use_pinned_context(pinned, configuration, secrets, rescue)
        return
    if _explicit_context(configuration, secrets):
        if rescue:
            raise InterruptExecution(
                "cluster control: rescue: true needs a blackstart local cluster, but the "
                "experiment targets a kubeconfig context; deploy the rescue controller there "
                "yourself (rescue/deploy) and drop rescue"
            )
        _run.target = resolve_target(configuration, secrets)
        logger.info(f"cluster control: using {_run.target.describe()} as given")
        return
    name = str(configuration.get(CLUSTER_KEY) or os.environ.get(CLUSTER_ENV) or DEFAULT_CLUSTER)
    configuration[CLUSTER_KEY] = name
    _run.cluster = name
    _run.delete_after = delete_after
    provider = _provider()
    try:
        load_state(name)
    except ClusterNotFound:
        if not create:
            raise InterruptExecution(
                f"cluster control: no blackstart cluster named {name!r}; create it with "
                f"`blackstart cluster up --name {name}` or set create: true"
            ) from None
        _create(provider, name, spec, timeout_s)
    try:
        target = cluster_target(name, configuration)
    except Exception as err:
        raise InterruptExecution(f"cluster control: {err}") from err
    _run.target = target
    if target.kubeconfig:
        _point_kubeconfig_at(target.kubeconfig)
    _wait_nodes_settled(target, min(timeout_s, 90.0))
    if rescue and target.provider == "kind":
        _require_rescue_on_kind(target, name, rescue_args)
    elif rescue:
        _start_rescue(provider, name, rescue_args, timeout_s)


def _require_rescue_on_kind(target: Target, name: str, args: list[str]) -> None:
    """On kind the controller runs as the Helm chart's pods (``cluster up --with-rescue``,
    the game day on kind): check it is available; nothing is started on the host."""
    from blackstart.rescue.kind_chart import NAMESPACE

    apps = client.AppsV1Api(target.api(1))
    try:
        deployment = apps.read_namespaced_deployment(
            "rescue-controller", NAMESPACE, _request_timeout=10
        )
        available = (deployment.status.available_replicas or 0) if deployment.status else 0
    except ApiException as err:
        if err.status != 404:
            raise InterruptExecution(
                f"cluster control: cannot check for the rescue controller on kind cluster "
                f"{name!r}: {err.status} {err.reason}"
            ) from err
        available = 0
    except Exception as err:
        raise InterruptExecution(
            f"cluster control: cannot reach kind cluster {name!r} to check for the rescue "
            f"controller: {err}"
        ) from err
    if not available:
        raise InterruptExecution(
            f"cluster control: the experiment needs the rescue controller, which runs on kind "
            f"as the Helm chart's pods, and kind cluster {name!r} has none available "
            f"(Deployment {NAMESPACE}/rescue-controller); install it with `blackstart cluster "
            f"up --provider kind --with-rescue --name {name}`, or run `blackstart gameday "
            "--provider kind`"
        )
    logger.info(
        f"cluster control: the rescue controller of kind cluster {name!r} runs as the chart's "
        "pods; using it as it is" + (f" (rescue_args {args} not applied)" if args else "")
    )


def _use_pinned_context(
    context: str, configuration: Configuration, secrets: Secrets, rescue: bool
) -> None:
    """The run is pinned to ``context``: create nothing, check the rescue CRDs when needed."""
    try:
        target = resolve_target(configuration, secrets)
    except Exception as err:
        raise InterruptExecution(f"cluster control: context {context!r}: {err}") from err
    _run.target = target
    named = configuration.get(CLUSTER_KEY)
    ignored = f" (the experiment's {CLUSTER_KEY} {named!r} is ignored)" if named else ""
    logger.info(
        f"cluster control: ${PINNED_CONTEXT_ENV} pins the run to {target.describe()}{ignored}; "
        "no cluster is created or deleted"
    )
    if rescue:
        _require_rescue_installed(target, context)


def _require_rescue_installed(target: Target, context: str) -> None:
    ext = client.ApiextensionsV1Api(target.api(1))
    try:
        ext.read_custom_resource_definition(RESCUE_PLANS_CRD, _request_timeout=10)
    except ApiException as err:
        if err.status != 404:
            raise InterruptExecution(
                f"cluster control: cannot check for the rescue CRDs on context {context!r}: "
                f"{err.status} {err.reason}"
            ) from err
        raise InterruptExecution(
            f"cluster control: the experiment needs the rescue controller, but context "
            f"{context!r} has no {RESCUE_PLANS_CRD} CRD; install it with `blackstart rescue "
            f"install --context {context}` and deploy the controller and agents there "
            "(rescue/deploy), or run the game day without --context"
        ) from None
    except Exception as err:
        raise InterruptExecution(
            f"cluster control: cannot reach context {context!r} to check for the rescue "
            f"controller: {err}"
        ) from err
    logger.info(
        f"cluster control: the rescue CRDs are installed on {context!r}; the controller is "
        "expected to run there already"
    )


NOT_READY_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def _wait_nodes_settled(target: Target, timeout_s: float) -> None:
    """Wait until no node still carries a not-ready taint (a fresh cluster's do for up to
    the node controller's monitor period, 25 s here), so the steady state is measured on
    a settled fleet."""

    def tainted() -> list[str]:
        core = client.CoreV1Api(target.api(1))
        nodes: list[Any] = core.list_node(_request_timeout=10).items
        return [
            str(n.metadata.name)
            for n in nodes
            if any(t.key in NOT_READY_TAINTS for t in (n.spec.taints or []))
        ]

    settled, waited = wait_until(lambda: not tainted(), timeout_s, 1.0)
    if not settled:
        logger.warning(
            f"cluster control: nodes still carry not-ready taints after {waited:.0f} s: "
            f"{tainted()[:10]}"
        )
    elif waited > 1:
        logger.info(f"cluster control: nodes settled in {waited:.0f} s")


def _create(provider: LocalProvider, name: str, spec: str | None, timeout_s: float) -> None:
    _, missing = resolve(provider.cache)
    if missing:
        names = ", ".join(n for _, n in missing)
        raise InterruptExecution(
            f"cluster control: cannot create cluster {name!r}, binaries missing: {names}; "
            "run `blackstart toolchain install`"
        )
    try:
        cluster_spec = load_spec(spec)
    except SpecError as err:
        raise InterruptExecution(f"cluster control: {err}") from err
    logger.info(f"cluster control: creating cluster {name!r} from {cluster_spec.source}")
    try:
        provider.up(cluster_spec, name=name, timeout=timeout_s)
    except (ClusterError, ProcessError) as err:
        raise InterruptExecution(
            f"cluster control: creating cluster {name!r} failed: {err}"
        ) from err
    _run.created = True


def _start_rescue(provider: LocalProvider, name: str, args: list[str], timeout_s: float) -> None:
    if _rescue_running(provider, name):
        logger.info(
            f"cluster control: the rescue controller of {name} already runs; using it as it is"
            + (f" (rescue_args {args} not applied)" if args else "")
        )
        return
    logger.info(f"cluster control: starting the rescue controller and agents of {name}")
    try:
        provider.start_rescue(
            name, extra_controller_args=tuple(args), timeout=min(timeout_s, 120.0)
        )
    except (ClusterError, ProcessError) as err:
        provider.stop_rescue(name)
        raise InterruptExecution(
            f"cluster control: the rescue controller did not start: {err}"
        ) from err
    _run.rescue_started = True


def after_experiment_control(
    context: Experiment, state: Journal, configuration: Configuration = None, **_: Any
) -> None:
    """Record the environment in the journal's ``blackstart`` extension."""
    if _run.target is None or not isinstance(state, dict):
        return
    entry = blackstart_entry(state)
    if "environment" not in entry:
        try:
            entry["environment"] = environment(_run.target)
        except Exception as err:  # the journal must still be written
            logger.warning(f"cluster control: could not describe the environment: {err}")
    entry.setdefault("environment", {})["created_by_run"] = _run.created


def cleanup_control() -> None:
    """Stop the rescue components this run started; delete the cluster it created."""
    provider = _provider()
    name = _run.cluster
    try:
        if name and _run.rescue_started:
            provider.stop_rescue(name)
            logger.info(f"cluster control: stopped the rescue components of {name}")
        if name and _run.created and _run.delete_after:
            logger.info(f"cluster control: deleting cluster {name!r}, which this run created")
            provider.down(name)
    finally:
        if _run.saved_env:
            previous = _run.saved_env.get("KUBECONFIG")
            if previous is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = previous
        if _run.saved_default_kubeconfig is not None:
            from kubernetes.config import kube_config

            kube_config.KUBE_CONFIG_DEFAULT_LOCATION = _run.saved_default_kubeconfig
