"""What blackstart remembers about a cluster it created: ``<cache>/clusters/<name>/cluster.json``.

Later commands (``cluster status``, ``cluster down``, the chaos actions, the
guard control) read it to find the kubeconfigs, the CoreDNS and Prometheus
addresses and the processes to act on.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from blackstart.paths import cache_dir, clusters_dir

STATE_FILE = "cluster.json"
CLUSTER_ENV = "BLACKSTART_CLUSTER"
DEFAULT_CLUSTER = "blackstart"


class ClusterNotFound(LookupError):
    """No cluster of that name was created by blackstart on this machine."""


@dataclass
class ClusterState:
    name: str
    provider: str
    state_dir: str
    spec_path: str
    kubeconfig: str
    context: str
    apiserver_url: str = ""
    identities: dict[str, str] = field(default_factory=dict)
    dns_address: str = ""
    coredns: dict[str, int] = field(default_factory=dict)
    prometheus_url: str = ""
    kwok_workdir: str = ""
    kernel_log_dir: str = ""
    nodes: int = 0
    created_at: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.state_dir) / STATE_FILE

    def identity_kubeconfig(self, user: str) -> str:
        try:
            return self.identities[user]
        except KeyError:
            raise ClusterNotFound(
                f"cluster {self.name} has no kubeconfig for {user}; "
                f"known: {', '.join(self.identities)}"
            ) from None

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        os.replace(tmp, self.path)


def state_dir_for(name: str, cache: Path | None = None) -> Path:
    return clusters_dir(cache or cache_dir()) / name


def load_state(name: str | None = None, cache: Path | None = None) -> ClusterState:
    """The saved state of cluster ``name`` (default: ``$BLACKSTART_CLUSTER`` or ``blackstart``)."""
    name = name or os.environ.get(CLUSTER_ENV) or DEFAULT_CLUSTER
    path = state_dir_for(name, cache) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ClusterNotFound(
            f"no blackstart cluster named {name!r} (no {path}); "
            "create it with `blackstart cluster up`"
        ) from None
    except json.JSONDecodeError as err:
        raise ClusterNotFound(f"{path} is damaged: {err}") from err
    return ClusterState(**data)


def list_states(cache: Path | None = None) -> list[ClusterState]:
    root = clusters_dir(cache or cache_dir())
    states = []
    for path in sorted(root.glob(f"*/{STATE_FILE}")):
        try:
            states.append(load_state(path.parent.name, cache))
        except ClusterNotFound:
            continue
    return states


def kubernetes_node_name(state: ClusterState, node: str) -> str:
    """The Node's name for ``node``: a kind cluster also takes the spec's names (``gpu-0``).

    The catalogue names nodes as the cluster spec does; a kind cluster's nodes are
    ``<cluster>-worker<N>``, mapped in its state (``cluster status`` shows them).
    """
    node_map = state.extra.get("node_map") if state.provider == "kind" else None
    if isinstance(node_map, dict) and node in node_map:
        return str(node_map[node])
    return node
