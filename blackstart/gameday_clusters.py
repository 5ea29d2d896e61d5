"""Where a game day runs: a local cluster, a kind cluster, or an existing kubeconfig context.

Each session brings its cluster up before the experiments (or checks it is
there), starts the rescue controller and agents, gives ``chaos run`` the
environment that points the experiments at the cluster, and tears down what
it created. The game-day runner (:mod:`blackstart.gameday`) uses them
through :class:`ClusterSession`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from blackstart.clusters.state import ClusterState

__all__ = [
    "ClusterSession",
    "ClusterUnavailable",
    "ContextSession",
    "KindSession",
    "LocalSession",
]

Echo = Callable[[str], None]


class ClusterUnavailable(RuntimeError):
    """The game day's cluster could not be brought up or reached; the message says why."""


class ClusterSession(Protocol):
    """Where the experiments run: brought up before, torn down after."""

    description: str

    def up(self) -> None: ...

    def start_rescue(self) -> str: ...

    def down(self) -> str: ...

    def chaos_env(self) -> dict[str, str | None]:
        """Environment for ``chaos run``; a None value removes the variable."""
        ...

    def facts(self) -> dict[str, str]: ...


class LocalSession:
    """The local provider: real control plane as processes, KWOK nodes, CoreDNS, Prometheus."""

    def __init__(
        self,
        cache: Path,
        name: str,
        spec_path: str | None,
        echo: Echo,
        up_timeout: float = 600.0,
    ) -> None:
        self.cache = cache
        self.name = name
        self.spec_path = spec_path
        self.echo = echo
        self.up_timeout = up_timeout
        self.created = False
        self.reused = False
        self.description = f"local cluster {name}"
        self._provider: Any = None

    def _local(self) -> Any:
        if self._provider is None:
            from blackstart.clusters.local.provider import LocalProvider
            from blackstart.clusters.toolchain import ToolchainError, resolve

            try:
                toolchain, missing = resolve(self.cache)
            except ToolchainError as err:
                raise ClusterUnavailable(str(err)) from err
            if missing:
                names = ", ".join(n for _, n in missing)
                raise ClusterUnavailable(
                    f"missing binaries: {names}; run `blackstart toolchain install` first"
                )
            self._provider = LocalProvider(self.cache, toolchain, progress=self.echo)
        return self._provider

    def up(self) -> None:
        from blackstart.clusters.processes import ProcessError
        from blackstart.clusters.provider import ClusterError
        from blackstart.clusters.spec import SpecError, load_spec
        from blackstart.clusters.state import ClusterNotFound

        local = self._local()
        if (local.state_dir(self.name) / "cluster.json").exists():
            try:
                statuses = local.status(self.name)
            except (ClusterNotFound, ClusterError) as err:
                raise ClusterUnavailable(str(err)) from err
            bad = [s.name for s in statuses if not s.healthy]
            if bad:
                raise ClusterUnavailable(
                    f"a cluster named {self.name!r} already exists but is unhealthy "
                    f"({', '.join(bad)}); run `blackstart cluster down --name {self.name}` "
                    "or pass another --name"
                )
            self.echo(f"[gameday] reusing the running cluster {self.name!r}; it will be kept")
            self.reused = True
            return
        try:
            spec = load_spec(self.spec_path)
            local.up(spec, name=self.name, timeout=self.up_timeout)
        except (ClusterError, ProcessError, SpecError) as err:
            raise ClusterUnavailable(f"the local cluster could not come up: {err}") from err
        self.created = True

    def start_rescue(self) -> str:
        local = self._local()
        start = getattr(local, "start_rescue", None)
        if not callable(start):
            return (
                "this blackstart has no rescue controller to start "
                "(LocalProvider.start_rescue is missing); Xid experiments will not be remediated"
            )
        if not self.created and self._rescue_running():
            return "the reused cluster's rescue controller is running already"
        try:
            start(self.name)
        except Exception as err:  # any failure to start it means no game day
            raise ClusterUnavailable(f"the rescue controller could not start: {err}") from err
        return "rescue controller and node agents started"

    def _rescue_running(self) -> bool:
        from blackstart.clusters import local as local_module
        from blackstart.clusters.processes import is_alive, read_pid

        components = getattr(local_module, "RESCUE_COMPONENTS", ("rescue-controller",))
        provider = self._local()
        return any(is_alive(read_pid(provider.pid_file(self.name, c))) for c in components)

    def down(self) -> str:
        if self.reused:
            return f"cluster {self.name!r} was running before this game day; left running"
        if not self.created:
            return "no cluster was created; nothing to tear down"
        stopped = self._local().down(self.name)
        self.created = False
        return f"cluster {self.name!r} deleted; stopped {', '.join(stopped) or 'nothing'}"

    def chaos_env(self) -> dict[str, str | None]:
        from blackstart.clusters.state import CLUSTER_ENV

        return {CLUSTER_ENV: self.name, "BLACKSTART_PROVIDER": "local"}

    def facts(self) -> dict[str, str]:
        return {
            "provider": "local (real control plane as processes, KWOK nodes)",
            "cluster": self.name,
            "cluster spec": self.spec_path or "clusters/gpu-fleet.yaml (default)",
        }


class KindSession:
    """The kind provider (needs Docker): the default kind fleet, or ``--spec``.

    A kind cluster of that name that is running and healthy is reused and kept, as
    the local provider's is; otherwise one is created and deleted afterwards.
    """

    def __init__(self, cache: Path, name: str, spec_path: str | None, echo: Echo) -> None:
        self.cache = cache
        self.name = name
        self.spec_path = spec_path
        self.echo = echo
        self.created = False
        self.reused = False
        self.state: ClusterState | None = None
        self.description = f"kind cluster {name}"

    def up(self) -> None:
        from blackstart.clusters.kind import KIND_DEFAULT_SPEC
        from blackstart.clusters.kind_provider import KindProvider
        from blackstart.clusters.provider import ClusterError
        from blackstart.clusters.spec import SpecError, load_spec
        from blackstart.clusters.state import ClusterNotFound, load_state

        provider = KindProvider(self.cache, progress=self.echo)
        try:
            existing: ClusterState | None = load_state(self.name, self.cache)
        except ClusterNotFound:
            existing = None
        if existing is not None and existing.provider == "kind":
            try:
                bad = [s.name for s in provider.status(self.name) if not s.healthy]
            except ClusterError as err:
                raise ClusterUnavailable(str(err)) from err
            if bad:
                raise ClusterUnavailable(
                    f"a kind cluster named {self.name!r} already exists but is unhealthy "
                    f"({', '.join(bad)}); run `blackstart cluster down --name {self.name}` "
                    "or pass another --name"
                )
            self.echo(f"[gameday] reusing the running kind cluster {self.name!r}; it will be kept")
            self.state = existing
            self.reused = True
            return
        try:
            spec = load_spec(self.spec_path or KIND_DEFAULT_SPEC)
            self.echo(f"[gameday] creating kind cluster {self.name} (Docker)")
            self.state = provider.up(spec, self.name)
        except (ClusterError, SpecError) as err:
            raise ClusterUnavailable(f"the kind cluster could not come up: {err}") from err
        self.created = True

    def start_rescue(self) -> str:
        """The controller and agents as pods: images built and loaded, the chart installed
        (on a reused cluster after its release is removed, so the pods run these images)."""
        from blackstart.rescue.kind_chart import ChartError, install_on_kind, uninstall

        if self.state is None:
            return "kind: no cluster, no rescue controller"
        try:
            if self.reused:  # its pods may run older images under the same tag
                self.echo("[gameday] removing the reused cluster's rescue release first")
                uninstall(self.cache, self.state, missing_ok=True)
            seconds = install_on_kind(self.cache, self.state, progress=self.echo)
        except ChartError as err:
            raise ClusterUnavailable(
                f"the rescue controller could not be installed: {err}"
            ) from err
        return f"rescue controller and agents installed with the Helm chart in {seconds:.0f} s"

    def down(self) -> str:
        if self.reused:
            return f"kind cluster {self.name!r} was running before this game day; left running"
        if not self.created:
            return "kind cluster not created; nothing to delete"
        from blackstart.clusters.kind_provider import KindProvider

        KindProvider(self.cache, progress=self.echo).down(self.name)
        self.created = False
        return f"kind cluster {self.name!r} deleted"

    def chaos_env(self) -> dict[str, str | None]:
        from blackstart.clusters.state import CLUSTER_ENV

        return {CLUSTER_ENV: self.name, "BLACKSTART_PROVIDER": "kind"}

    def facts(self) -> dict[str, str]:
        return {
            "provider": "kind (real nodes as Docker containers, the controller and agents as pods)",
            "cluster": self.name,
            "cluster spec": self.spec_path or "clusters/kind-gpu.yaml (default)",
        }


class ContextSession:
    """An existing cluster reached through a kubeconfig context: not created, not deleted.

    Every experiment runs on that context: ``$BLACKSTART_CONTEXT`` pins it for
    blackstart's activities and controls (over any cluster an experiment names,
    see :mod:`blackstart.target`), ``$KUBERNETES_CONTEXT`` for chaostoolkit-kubernetes.
    Before anything runs, :meth:`up` checks that the context exists, that its API
    server answers and that it is allow-listed (``$BLACKSTART_ALLOWED_CONTEXTS``),
    also when blackstart created the cluster behind it under another name.
    """

    def __init__(self, context: str, kubeconfig: str | None = None) -> None:
        self.context = context
        found = kubeconfig or os.environ.get("KUBECONFIG")
        self.kubeconfig = str(Path(found).expanduser().resolve()) if found else None
        self.description = f"kubeconfig context {context}"
        self.behind: str | None = None

    @property
    def suite_provider(self) -> str:
        """Whose entries of the suite run: the provider of a blackstart cluster behind the
        context (a kind cluster it adopted runs the kind entries), else ``context``.

        Read from the kubeconfig and blackstart's saved states; no request is made.
        """
        from blackstart.target import blackstart_state_behind

        behind = blackstart_state_behind(self.kubeconfig, self.context)
        return behind.provider if behind is not None else "context"

    def up(self) -> None:
        """Check the context exists, is allow-listed (before any request) and answers."""
        from kubernetes import client

        from blackstart.controls.guard import ALLOWED_ENV, allow_list, target_allowed
        from blackstart.kube import KubeconfigError, api_client
        from blackstart.target import context_target

        where = self.kubeconfig or "~/.kube/config"
        try:
            api = api_client(self.kubeconfig, self.context, pool_size=1)
        except KubeconfigError as err:
            raise ClusterUnavailable(
                f"kubeconfig context {self.context!r} cannot be used: {err}; pass a context "
                f"of {where} (`kubectl config get-contexts`) or set KUBECONFIG"
            ) from err
        target = context_target(self.kubeconfig, self.context, pinned=True)
        if target.cluster:
            self.behind = f"{target.provider} cluster {target.cluster!r}"
        ok, why = target_allowed(target, allow_list(None, None))
        if not ok:
            raise ClusterUnavailable(
                f"{why} ({ALLOWED_ENV} is {os.environ.get(ALLOWED_ENV, '')!r})"
            )
        try:
            version = client.VersionApi(api).get_code(_request_timeout=10)
        except Exception as err:
            raise ClusterUnavailable(
                f"the API server of context {self.context!r} ({api.configuration.host}) does "
                f"not answer: {err}"
            ) from err
        self.description = (
            f"kubeconfig context {self.context} ({api.configuration.host}, Kubernetes "
            f"{version.git_version}{', ' + self.behind if self.behind else ''}; {why})"
        )

    def start_rescue(self) -> str:
        return (
            "existing context: nothing is started; experiments that need the rescue controller "
            "check that its CRDs are installed there (`blackstart rescue install`)"
        )

    def down(self) -> str:
        return f"context {self.context!r} left as it was"

    def chaos_env(self) -> dict[str, str | None]:
        from blackstart.clusters.state import CLUSTER_ENV
        from blackstart.target import PINNED_CONTEXT_ENV

        env: dict[str, str | None] = {
            # blackstart's activities and controls: over any cluster the experiment names
            PINNED_CONTEXT_ENV: self.context,
            # chaostoolkit-kubernetes' activities
            "KUBERNETES_CONTEXT": self.context,
            "BLACKSTART_PROVIDER": "context",
            CLUSTER_ENV: None,
        }
        if self.kubeconfig:
            env["KUBECONFIG"] = self.kubeconfig
        return env

    def facts(self) -> dict[str, str]:
        facts = {"provider": "existing cluster", "context": self.context}
        if self.kubeconfig:
            facts["kubeconfig"] = self.kubeconfig
        if self.behind:
            facts["cluster behind the context"] = f"blackstart {self.behind}"
        return facts
