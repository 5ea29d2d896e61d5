"""A snapshot of the cluster's Service records on disk, for CoreDNS to serve without the API.

Run as ``python -m blackstart.clusters.local.dns_snapshot --kubeconfig K
--out FILE`` (the local provider starts it when the data-plane DNS mitigation
is on). Every ``--interval`` seconds it LISTs Services and EndpointSlices with
``resourceVersion=0`` (served from the API server's cache: cheap, and two
calls per interval at most, so the tool never becomes the storm) and, when
the records changed, rewrites FILE atomically in the hosts format CoreDNS's
``hosts`` plugin reads: ``<ip> <service>.<namespace>.svc.cluster.local``,
one line per ClusterIP, or per ready endpoint of a headless Service. When
the API server does not answer, the last good snapshot stays as it is.
"""

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from blackstart.kube import api_client

DEFAULT_INTERVAL_S = 10.0
DOMAIN = "cluster.local"


def service_records(services: list[Any], slices: list[Any]) -> list[tuple[str, str]]:
    """(ip, name) pairs: each Service's ClusterIPs, or a headless one's ready endpoints."""
    records: set[tuple[str, str]] = set()
    headless: set[tuple[str, str]] = set()
    for svc in services:
        meta, spec = svc.metadata, svc.spec
        if meta is None or spec is None:
            continue
        fqdn = f"{meta.name}.{meta.namespace}.svc.{DOMAIN}"
        # clusterIPs: ``cluster_ips`` in the current client, ``cluster_i_ps`` in older ones
        listed = getattr(spec, "cluster_ips", None) or getattr(spec, "cluster_i_ps", None)
        ips = [ip for ip in (listed or [spec.cluster_ip]) if ip and ip != "None"]
        if ips:
            records.update((ip, fqdn) for ip in ips)
        elif spec.type != "ExternalName":
            headless.add((str(meta.namespace), str(meta.name)))
    for eps in slices:
        meta = eps.metadata
        labels = (meta.labels or {}) if meta else {}
        service = labels.get("kubernetes.io/service-name")
        if meta is None or (meta.namespace, service) not in headless:
            continue
        fqdn = f"{service}.{meta.namespace}.svc.{DOMAIN}"
        for endpoint in eps.endpoints or []:
            if endpoint.conditions is not None and endpoint.conditions.ready is False:
                continue
            records.update((ip, fqdn) for ip in endpoint.addresses or [])
    return sorted(records, key=lambda r: (r[1], r[0]))


def render_hosts(records: list[tuple[str, str]]) -> str:
    lines = ["# blackstart: Service records snapshot for CoreDNS's hosts plugin"]
    lines += [f"{ip} {name}" for ip, name in records]
    return "\n".join(lines) + "\n"


def write_if_changed(path: Path, text: str) -> bool:
    """Replace ``path`` atomically with ``text`` when it differs; True when written."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def take_snapshot(core: client.CoreV1Api, discovery: client.DiscoveryV1Api, timeout: float) -> str:
    """One snapshot of the cluster's records (raises when the API server does not answer)."""
    services = core.list_service_for_all_namespaces(resource_version="0", _request_timeout=timeout)
    slices = discovery.list_endpoint_slice_for_all_namespaces(
        resource_version="0", _request_timeout=timeout
    )
    return render_hosts(service_records(list(services.items), list(slices.items)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S)
    parser.add_argument("--once", action="store_true", help="write one snapshot and exit")
    args = parser.parse_args(argv)
    api = api_client(args.kubeconfig, pool_size=1, timeout=5.0)
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    interval = max(1.0, float(args.interval))
    while True:
        started = time.monotonic()
        try:
            if write_if_changed(args.out, take_snapshot(core, discovery, 5.0)):
                print(f"dns-snapshot: wrote {args.out}", file=sys.stderr, flush=True)
        except Exception as err:  # the API server is away: keep the last good snapshot
            print(f"dns-snapshot: kept the last snapshot ({type(err).__name__})", file=sys.stderr)
            if args.once:
                return 1
        if args.once:
            return 0
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


if __name__ == "__main__":
    sys.exit(main())
