"""Data-plane DNS that survives the control plane: the mitigation blackstart ships.

In December 2024 CoreDNS depended on the API server: once its caches expired
and it restarted, services stopped finding each other. The mitigation has
two parts, both in CoreDNS's own configuration on a local cluster:

- ``serve_stale``: the ``cache`` plugin keeps answering with expired entries
  (up to ``serve_stale_s``) while fresh answers cannot be had;
- a snapshot: the cluster's Service records are written to a hosts-format
  file every ``interval_s`` while the API server answers (by a small writer
  that LISTs from the API server's cache), and CoreDNS's ``hosts`` plugin
  answers from it first, so a CoreDNS that restarts during an API outage
  still resolves every Service it knew (new Services fall through to the
  API; a deleted one lingers at most one interval).

On a real cluster the same is a Corefile change (``hosts`` on a ConfigMap
volume kept fresh by a sidecar, ``serve_stale`` in ``cache``).
:func:`enable_dns_survival` turns it on, :func:`disable_dns_survival` off.
"""

from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from blackstart.actions._checks import flag, number
from blackstart.clusters.processes import ProcessError
from blackstart.health import wait_until
from blackstart.probes.dns import DEFAULT_NAMES, query_once
from blackstart.target import local_provider, resolve_target

__all__ = ["disable_dns_survival", "enable_dns_survival"]

APPLY_TIMEOUT_S = 20.0


def _hosts_entries(metrics_port: int) -> float:
    """``coredns_hosts_entries`` from CoreDNS's metrics: records its hosts plugin serves."""
    import urllib.request

    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as response:
        text = response.read().decode(errors="replace")
    total = 0.0
    for line in text.splitlines():
        if line.startswith("coredns_hosts_entries"):
            total += float(line.rsplit(" ", 1)[-1])
    return total


def enable_dns_survival(
    serve_stale_s: int = 3600,
    snapshot: bool = True,
    interval_s: float = 10.0,
    enabled: bool = True,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Make data-plane DNS survive the control plane: stale answers and a records snapshot.

    - ``serve_stale_s``: how long CoreDNS may answer with expired cache entries
      (0 turns that part off);
    - ``snapshot``: write the Service records to disk now and every
      ``interval_s`` seconds, and have CoreDNS answer from them first;
    - ``enabled``: false does nothing (for a suite that runs an experiment with
      and without the mitigation through a variable).

    Needs the API server up (for the first snapshot). Waits until CoreDNS runs
    the new configuration (its hosts plugin holds the records) and resolves
    ``kubernetes.default.svc``. Returns ``{"enabled", "serve_stale_s",
    "snapshot", "records"}``. Turn it off with ``disable_dns_survival``.
    """
    if not flag("enabled", enabled):
        return {"enabled": False}
    number("serve_stale_s", serve_stale_s, 0, 7 * 86400, integer=True)
    number("interval_s", interval_s, 1, 3600)
    flag("snapshot", snapshot)
    if not serve_stale_s and not snapshot:
        raise ActivityFailed("serve_stale_s is 0 and snapshot is false: nothing to enable")
    target = resolve_target(configuration, secrets)
    provider = local_provider(target, "enable_dns_survival")
    cluster = str(target.cluster)
    try:
        info = provider.enable_dns_survival(cluster, int(serve_stale_s), snapshot, interval_s)
    except ProcessError as err:
        raise ActivityFailed(str(err)) from err
    cfg = provider.coredns_config(cluster)
    host, _, port = provider.state(cluster).dns_address.rpartition(":")

    def applied() -> bool:
        if snapshot and _hosts_entries(cfg.metrics_port) <= 0:
            return False
        return query_once(host, int(port), DEFAULT_NAMES[0], "A", 0.5)[0] == "ok"

    ok, _ = wait_until(applied, APPLY_TIMEOUT_S, 0.25)
    if not ok:
        raise ActivityFailed(
            f"CoreDNS of cluster {cluster} did not take up the DNS mitigation within "
            f"{APPLY_TIMEOUT_S:g} s; see {provider.log_file(cluster, 'coredns')}"
        )
    records = 0
    if info.get("snapshot"):
        text = provider.snapshot_file(cluster).read_text()
        records = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    return {"enabled": True, **info, "records": records}


def disable_dns_survival(
    configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Turn the data-plane DNS mitigation off: the plain Corefile, no snapshot writer.

    Safe when it is off. A running CoreDNS reloads the plain configuration
    within seconds. Returns ``{"was_enabled"}``. On a cluster not of the local
    provider the mitigation cannot have been enabled (``enable_dns_survival``
    refuses it there), so there is nothing to turn off: ``{"was_enabled": false}``.
    """
    target = resolve_target(configuration, secrets)
    if target.state is None or target.state.provider != "local":
        return {"was_enabled": False}
    provider = local_provider(target, "disable_dns_survival")
    return {"was_enabled": provider.disable_dns_survival(str(target.cluster))}
