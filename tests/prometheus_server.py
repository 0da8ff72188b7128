"""A real Prometheus (Debian's package) on 127.0.0.1 with a temporary data dir, for tests."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import List, Optional

import yaml

from bpftools_proc import end_process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, targets: List[str], job: str = "bpftools", scrape_interval: str = "1s",
                 rule_files: Optional[List[str]] = None, scrape_configs: Optional[List[dict]] = None):
        """One job scraping `targets`, or the given `scrape_configs` (TLS, basic auth...)."""
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bpftools-prom-"))
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": scrape_configs or [{"job_name": job, "static_configs": [{"targets": targets}]}],
        }
        if rule_files:
            config["rule_files"] = [str(Path(f).resolve()) for f in rule_files]
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Prometheus":
        self.proc = subprocess.Popen(
            [shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "prometheus.log", "w"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("Prometheus did not become ready: " + (self.dir / "prometheus.log").read_text()[-2000:])

    def api(self, path: str, **params) -> dict:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list:
        return self.api("query", query=expr)["result"]

    def wait_for(self, expr: str, timeout: float = 30, predicate=bool) -> list:
        deadline = time.monotonic() + timeout
        result: list = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"{expr} did not become true within {timeout}s: {result}")

    def target_health(self) -> dict:
        """job -> (health, lastError) of its first active target."""
        return {t["labels"]["job"]: (t["health"], t["lastError"]) for t in self.api("targets")["activeTargets"]}

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def __exit__(self, *exc) -> None:
        end_process(self.proc, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
