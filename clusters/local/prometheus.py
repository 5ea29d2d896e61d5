"""What the cluster's Prometheus scrapes: kwokctl's jobs plus file-discovered targets."""

import os
import signal
from pathlib import Path

import yaml

from blackstart.clusters.local.base import LocalBase
from blackstart.clusters.processes import is_alive
from blackstart.clusters.provider import ClusterError

SCRAPE_INTERVAL = "5s"


class LocalPrometheus(LocalBase):
    def add_scrape_target(
        self, name: str, job: str, address: str, labels: dict[str, str] | None = None
    ) -> Path:
        """Have Prometheus scrape ``address`` as ``job`` (file-based discovery, no reload)."""
        folder = self.targets_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{job}.yaml"
        entry = [{"targets": [address], "labels": {"job": job, **(labels or {})}}]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(entry))
        os.replace(tmp, path)
        return path

    def remove_scrape_target(self, name: str, job: str) -> None:
        (self.targets_dir(name) / f"{job}.yaml").unlink(missing_ok=True)

    def _extend_prometheus(self, name: str) -> None:
        """Add a file-discovery job for blackstart's own processes; scrape every 5 s."""
        kc = self.kwok_cluster(name)
        config = yaml.safe_load(kc.prometheus_config.read_text())
        config.setdefault("global", {}).update(
            scrape_interval=SCRAPE_INTERVAL,
            evaluation_interval=SCRAPE_INTERVAL,
            scrape_timeout="4s",
        )
        jobs = config.setdefault("scrape_configs", [])
        jobs[:] = [j for j in jobs if j.get("job_name") != "blackstart"]
        jobs.append(
            {
                "job_name": "blackstart",
                "file_sd_configs": [
                    {"files": [str(self.targets_dir(name) / "*.yaml")], "refresh_interval": "5s"}
                ],
            }
        )
        kc.prometheus_config.write_text(yaml.safe_dump(config, sort_keys=False))
        pid = kc.pid("prometheus")
        if not is_alive(pid):
            raise ClusterError("Prometheus is not running; see " + str(kc.log_file("prometheus")))
        assert pid is not None
        os.kill(pid, signal.SIGHUP)
