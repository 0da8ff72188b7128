"""serve's HTTP side as operators use it: a real Prometheus scrapes over (mutual) TLS with basic
auth while a wrong password, a missing client certificate and plain HTTP are refused;
/-/ready turns ready only once everything is attached; a web config is reloaded, and a bad one
keeps the running one and says why."""
from __future__ import annotations

import base64
import shutil
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from bpftools.topology import run
from bpftools_proc import BpftoolsProcess, cli
from certs import bcrypt_hash, make_certs
from prometheus_server import Prometheus, free_port
from waiting import wait_until

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed (bootstrap installs it)")
READY_TIMEOUT = 120  # BPF programs compiled by bcc on a loaded 2-core machine
PASSWORD = "s3cret-scrape"


def get(url: str, user: str = None, password: str = None, context=None):
    """(status, body); OSError when the connection itself is refused."""
    request = urllib.request.Request(url)
    if user is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def write_web_config(path: Path, certs, users: dict, mutual: bool = True) -> Path:
    tls = {"cert_file": str(certs.server_cert), "key_file": str(certs.server_key), "min_version": "TLS12"}
    if mutual:
        tls["client_ca_file"] = str(certs.ca)
    path.write_text(yaml.safe_dump({"tls_server_config": tls,
                                    "basic_auth_users": {u: bcrypt_hash(p) for u, p in users.items()}}))
    return path


def job(name: str, port: int, certs, password=PASSWORD, client_cert=True, scheme="https") -> dict:
    config = {"job_name": name, "scheme": scheme, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
    if scheme == "https":
        config["tls_config"] = {"ca_file": str(certs.ca)}
        if client_cert:
            config["tls_config"].update(cert_file=str(certs.client_cert), key_file=str(certs.client_key))
    if password is not None:
        config["basic_auth"] = {"username": "prometheus", "password": password}
    return config


def test_prometheus_scrapes_over_tls_with_basic_auth_and_the_rest_is_refused(tmp_path, veth_pair):
    certs = make_certs(tmp_path / "certs")
    web = write_web_config(tmp_path / "web.yml", certs, {"prometheus": PASSWORD})
    port = free_port()
    jobs = [job("good", port, certs), job("wrong-password", port, certs, password="guess"),
            job("no-password", port, certs, password=None), job("no-client-cert", port, certs, client_cert=False),
            job("plain-http", port, certs, scheme="http")]
    with BpftoolsProcess("serve", "--listen", f"127.0.0.1:{port}", "--drops", "--netns", veth_pair.ns_b,
                         "--web.config.file", str(web), ready_timeout=READY_TIMEOUT) as serve, \
            Prometheus([], scrape_configs=jobs) as prom:
        assert f"serving metrics on https://127.0.0.1:{port}/metrics" in serve.stderr
        info = prom.wait_for('bpftools_build_info{job="good"}')
        labels = info[0]["metric"]
        assert {"version", "revision", "bcc_version", "kernel_release"} <= set(labels)
        health = {}
        wait_until(lambda: health.update(prom.target_health()) or all(h[0] != "unknown" for h in health.values()),
                   "every job scraped once", timeout=30)
        assert health["good"] == ("up", "")
        for name in ("wrong-password", "no-password", "no-client-cert", "plain-http"):
            assert health[name][0] == "down", (name, health[name])
        assert "401" in health["wrong-password"][1] and "401" in health["no-password"][1]
        assert prom.query('up{job="good"}')[0]["value"][1] == "1"

        # the same, by hand: the health endpoints need the TLS but no password
        client = ssl.create_default_context(cafile=str(certs.ca))
        client.load_cert_chain(str(certs.client_cert), str(certs.client_key))
        base = f"https://127.0.0.1:{port}"
        assert get(base + "/-/healthy", context=client) == (200, "OK\n")
        assert get(base + "/-/ready", context=client) == (200, "OK\n")
        assert get(base + "/metrics", "prometheus", "guess", context=client)[0] == 401
        status, body = get(base + "/", "prometheus", PASSWORD, context=client)
        assert status == 200 and 'href="metrics"' in body
        with pytest.raises(OSError):
            get(f"http://127.0.0.1:{port}/metrics", "prometheus", PASSWORD)
        assert serve.stop() == 0
    assert "Traceback" not in serve.stderr


def test_ready_only_after_everything_is_attached(topo):
    ns = topo.netns("rd")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with BpftoolsProcess("serve", "--listen", f"127.0.0.1:{port}", "--drops", "--netns", ns,
                         "--encap", f"{ns}/late0", ready_timeout=READY_TIMEOUT) as serve:
        assert get(base + "/-/healthy") == (200, "OK\n")
        assert get(base + "/-/ready") == (503, f"not ready: not attached: encap on {ns}/late0\n")
        topo.veth(ns, "late0", ns, "late1")
        wait_until(lambda: get(base + "/-/ready") == (200, "OK\n"), "ready once late0 is attached",
                   timeout=READY_TIMEOUT)
        assert 'device="late0"' in get(base + "/metrics")[1]
        run("ip", "link", "del", "late0", netns=ns)
        wait_until(lambda: get(base + "/-/ready")[0] == 503, "not ready once late0 is gone", timeout=30)
        assert serve.stop() == 0


def test_web_config_reloads_and_a_bad_one_keeps_the_running_one(tmp_path, veth_pair):
    certs = make_certs(tmp_path / "certs")
    web = write_web_config(tmp_path / "web.yml", certs, {"alice": "one"}, mutual=False)
    port = free_port()
    client = ssl.create_default_context(cafile=str(certs.ca))
    url = f"https://127.0.0.1:{port}/metrics"
    with BpftoolsProcess("serve", "--listen", f"127.0.0.1:{port}", "--drops", "--netns", veth_pair.ns_b,
                         "--web.config.file", str(web), ready_timeout=READY_TIMEOUT) as serve:
        assert get(url, "alice", "one", context=client)[0] == 200
        new = tmp_path / "web.new"
        new.write_text("basic_auth_users:\n  bob: not-a-hash\n")
        new.replace(web)  # noticed like a ConfigMap update: no signal needed
        serve.wait_for_stderr(lambda t: "config reload failed, keeping the running config: web config file" in t,
                              "the failed reload", timeout=30)
        assert "basic_auth_users.bob must be a bcrypt hash" in serve.stderr
        assert get(url, "alice", "one", context=client)[0] == 200  # the running config stays
        write_web_config(tmp_path / "web.new", certs, {"bob": "two"}, mutual=False).replace(web)
        wait_until(lambda: get(url, "bob", "two", context=client)[0] == 200, "bob let in after the reload", timeout=30)
        assert get(url, "alice", "one", context=client)[0] == 401
        assert serve.stop() == 0
    assert "Traceback" not in serve.stderr


def test_a_bad_web_config_at_start_is_one_line(tmp_path):
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n")
    proc = cli("serve", "--drops", "--web.config.file", str(web))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"bpftools: error: web config file {web}: cannot load the TLS certificate")
