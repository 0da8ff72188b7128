"""serve's configuration (file + flags) and the metrics collector, without root."""
import io
import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bpftools.errors import BpftoolsError
from bpftools.logs import setup_logging
from bpftools.metrics import METRICS, BpftoolsCollector, Sample
from bpftools.serve_config import (DEFAULT_LISTEN, ServeConfig, build_config, listen_address, read_config_file,
                                   split_interface)


def test_flags_override_the_file_and_defaults_stay_loopback():
    config = build_config({"drops": True, "encap": "eth0", "listen": "0.0.0.0:1"}, {"listen": None, "encap": ("eth1",)})
    assert config.encap == ["eth1"] and config.drops and config.listen == "0.0.0.0:1"
    assert build_config({}, {"drops": True}).listen == DEFAULT_LISTEN == "127.0.0.1:9654"


@pytest.mark.parametrize("settings, message", [
    ({"drops": "yes"}, "drops must be true or false, not 'yes'"),
    ({"drops": True, "encap": 5}, "encap must be a list of strings, not 5"),
    ({"drops": True, "encap": ["eth0", 1]}, "encap must be a list of strings"),
    ({"drops": True, "watch_interval": 0}, "watch_interval must be a number of seconds > 0"),
    ({"drops": True, "netns": 3}, "netns must be a string, not 3"),
    ({"bogus": 1, "drops": True}, "unknown setting 'bogus'"),
    ({}, "nothing to export"),
    ({"decap": ["eth0"]}, "CVE-2020-10136"),
    ({"drops": True, "netns": "a", "all_netns": True}, "exclude each other"),
    ({"drops": True, "listen": "9654"}, "expected HOST:PORT"),
    ({"listen": "127.0.0.1:99999"}, "--listen '127.0.0.1:99999': expected HOST:PORT"),  # before "nothing to export"
])
def test_bad_settings_are_one_line_errors(settings, message):
    with pytest.raises(BpftoolsError, match=message):
        build_config(settings, {})


def test_config_files_toml_and_yaml(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('drops = true\nencap = ["ns1/veth1"]\n')
    yml = tmp_path / "c.yml"
    yml.write_text("drops: true\nencap: [ns1/veth1]\n")
    assert read_config_file(str(toml)) == read_config_file(str(yml)) == {"drops": True, "encap": ["ns1/veth1"]}
    bad = tmp_path / "c.ini"
    bad.write_text("x")
    with pytest.raises(BpftoolsError, match="use .toml"):
        read_config_file(str(bad))
    with pytest.raises(BpftoolsError, match="cannot read config file"):
        read_config_file(str(tmp_path / "missing.toml"))


def test_interface_specs_and_listen_addresses():
    assert split_interface("ns1/veth1", None) == ("ns1", "veth1")
    assert split_interface("eth0", "ns2") == ("ns2", "eth0")
    assert listen_address("[::1]:9654") == ("::1", 9654)
    assert listen_address(":9654") == ("0.0.0.0", 9654)


class FakeSource:
    name = "fake"

    def __init__(self, samples, fail=False):
        self._samples, self.fail = samples, fail

    def samples(self):
        yield from self._samples
        if self.fail:
            raise OSError("map gone")


def scrape(collector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def test_collector_sums_sources_and_counts_a_failing_one_as_scrape_error_of_that_source():
    log = io.StringIO()
    setup_logging("info", stream=log)
    collector = BpftoolsCollector()
    collector.set_source("drops", FakeSource([Sample("bpftools_drops_total", ("ns", "eth0", "NO_SOCKET"), 3.0)]))
    collector.set_source("encap:ns/eth0", FakeSource([Sample("bpftools_drops_total", ("ns", "eth0", "NO_SOCKET"), 2.0)],
                                                     fail=True))
    text = scrape(collector)
    assert 'bpftools_drops_total{device="eth0",netns="ns",reason="NO_SOCKET"} 5.0' in text
    assert 'bpftools_scrape_errors_total{source="encap:ns/eth0"} 1.0' in text
    assert 'bpftools_scrape_errors_total{source="drops"} 0.0' in text
    import os

    from bpftools import __version__
    from bpftools.build import build_info

    assert f'bcc_version="{build_info()["bcc_version"]}"' in text
    assert f'kernel_release="{os.uname().release}"' in text and f'version="{__version__}"' in text
    assert 'revision="' in text and build_info()["revision"]
    assert 'level=warning logger=bpftools.metrics msg="reading encap:ns/eth0 failed: map gone"' in log.getvalue()
    collector.remove_source("encap:ns/eth0")
    text = scrape(collector)
    assert 'reason="NO_SOCKET"} 3.0' in text
    assert 'bpftools_scrape_errors_total{source="encap:ns/eth0"} 1.0' in text  # a counter never goes back


def test_every_metric_in_the_table_is_exposed_with_help_and_type():
    text = scrape(BpftoolsCollector())
    for name, (kind, _labels, _help) in METRICS.items():
        assert f"# TYPE {name} {kind}" in text and f"# HELP {name} " in text


def test_concurrent_scrapes_see_consistent_totals():
    collector = BpftoolsCollector()
    collector.set_source("a", FakeSource([Sample("bpftools_events_lost_total", (), 7.0)]))
    results = []

    def worker():
        for _ in range(50):
            results.append("bpftools_events_lost_total 7.0" in scrape(collector))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 200 and all(results)


def test_the_exporter_registry_has_process_and_platform_metrics():
    from bpftools.metrics import RUNTIME_METRICS
    from bpftools.serve import Exporter

    text = generate_latest(Exporter(build_config({"drops": True}, {})).registry).decode()
    samples = {line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert set(RUNTIME_METRICS) <= samples, set(RUNTIME_METRICS) - samples
    assert "bpftools_build_info" in samples


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape_ok(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return b"bpftools_build_info" in r.read()
    except OSError:
        return False


def test_a_new_listen_address_opens_before_the_old_closes_and_a_bad_one_keeps_the_old():
    from bpftools.serve import Exporter

    exporter = Exporter(build_config({"drops": True}, {}))
    first, second = _free_port(), _free_port()
    exporter._listen(f"127.0.0.1:{first}")
    try:
        exporter._listen(f"127.0.0.1:{second}")
        assert _scrape_ok(second) and not _scrape_ok(first)
        # same port, an address this host does not have: refused, and the old one still serves
        with pytest.raises(BpftoolsError, match=f"cannot listen on 192.0.2.1:{second}"):
            exporter._listen(f"192.0.2.1:{second}")
        assert _scrape_ok(second)
    finally:
        exporter._stop_server()
    assert not _scrape_ok(second)


@pytest.mark.parametrize("spec, message", [
    ("ns/eth0:1", "never holds ':'"),
    ("ns/" + "x" * 16, "at most 15 bytes"),
    ("../x/eth0", "a file name in /run/netns"),
])
def test_interfaces_the_kernel_would_never_name_are_refused(spec, message):
    with pytest.raises(BpftoolsError, match=message):
        ServeConfig(encap=[spec]).validate()


def test_a_pod_label_and_an_awkward_interface_name_are_accepted():
    assert split_interface("pod:shop/web-0/-eth0", None) == ("pod:shop/web-0", "-eth0")
