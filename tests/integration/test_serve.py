"""`bpftools serve` scraped by a real Prometheus while namespaces make drops, VXLAN traffic
and ipip traffic for the decapsulator; every dashboard and alert expression is then queried
through Prometheus' HTTP API."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bpftools.topology import run
from bpftools_proc import BpftoolsProcess, cli
from packets import send_frames, send_udp
from prometheus_server import Prometheus, free_port
from waiting import stays

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed (bootstrap installs it)")

DROPPED_UDP = 300  # dropped by an INPUT rule in B: the kernel's own counter must match Prometheus
SPOOFED = 40  # from a source B routes elsewhere: strict rp_filter drops them
READY_TIMEOUT = 120  # three BPF programs compiled by bcc on a loaded 2-core machine


@dataclass
class Site:
    a: str
    b: str
    a_addr: str = "10.61.0.1"
    b_addr: str = "10.61.0.2"


@pytest.fixture
def site(topo) -> Site:
    """A:va 10.61.0.1 <-> B:vb 10.61.0.2, a VXLAN (VNI 61) over it, and in B an INPUT rule
    dropping UDP 9999 plus a route that makes 10.62.0.0/24 fail B's strict rp_filter on vb."""
    s = Site(topo.netns("sa"), topo.netns("sb"))
    for ns in (s.a, s.b):
        topo.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", 1)
    topo.veth(s.a, "va", s.b, "vb", f"{s.a_addr}/24", f"{s.b_addr}/24")
    for ns, local, remote, inner in ((s.a, s.a_addr, s.b_addr, "10.63.0.1/24"), (s.b, s.b_addr, s.a_addr, "10.63.0.2/24")):
        run("ip", "link", "add", "vx61", "type", "vxlan", "id", "61", "local", local, "remote", remote,
            "dstport", "4789", netns=ns)
        run("ip", "addr", "add", inner, "dev", "vx61", netns=ns)
        run("ip", "link", "set", "vx61", "up", netns=ns)
    run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "9999", "-j", "DROP", netns=s.b)
    topo.veth(s.b, "side0", s.b, "side1")
    run("ip", "route", "add", "10.62.0.0/24", "dev", "side0", netns=s.b)
    for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.vb.rp_filter"):
        topo.sysctl(s.b, key, 1)
    return s


def iptables_input_drops(ns: str) -> int:
    out = run("iptables", "-L", "INPUT", "-v", "-n", "-x", netns=ns).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if "dpt:9999" in line)


def make_traffic(site: Site) -> None:
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.l2 import Ether

    from bpftools.netlink import interface_mac, resolve_interface

    send_udp(site.a, site.b_addr, 9999, DROPPED_UDP)
    run("ping", "-c", "20", "-i", "0.05", "-W", "1", "10.63.0.2", netns=site.a)  # through the VXLAN
    a_mac = interface_mac(resolve_interface("va", site.a))
    b_mac = interface_mac(resolve_interface("vb", site.b))
    spoofed = [bytes(Ether(src=a_mac, dst=b_mac) / IP(src="10.62.0.9", dst=site.b_addr) / UDP(dport=7) / b"x")
               for _ in range(SPOOFED)]
    ipip = [bytes(Ether(src=a_mac, dst=b_mac) / IP(src=site.a_addr, dst=site.b_addr, proto=4)
                  / IP(src=site.a_addr, dst=site.b_addr) / ICMP(seq=i)) for i in range(25)]
    send_frames(site.a, "va", spoofed + ipip)


def substitute(expr: str) -> str:
    """Grafana variables -> values Prometheus understands (all instances/namespaces/devices)."""
    return (expr.replace("$__rate_interval", "20s").replace("$__range", "5m")
            .replace("$job", ".*").replace("$instance", ".*").replace("$netns", ".*").replace("$device", ".*"))


def dashboard_expressions():
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                yield panel["title"], substitute(target["expr"]), set(re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")))


def alert_rules():
    for group in yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())["groups"]:
        yield from group["rules"]


def alert_core(expr: str) -> str:
    """The vector an alert compares, without its threshold (first operand of `and`)."""
    first = re.split(r"\n\s*(?:and|or)\s*\n| and | or ", expr.strip())[0]
    return re.sub(r"\s*(>|<|==|!=|>=|<=)\s*[-\d.]+\s*$", "", first.strip())


def labels_in_annotations(rule) -> set:
    return set(re.findall(r"\$labels\.(\w+)", json.dumps(rule.get("annotations", {}))))


def test_prometheus_sees_what_the_kernel_counted(site):
    port = free_port()
    serve_args = ["serve", "--listen", f"127.0.0.1:{port}", "--drops", "--all-netns",
                  "--encap", f"{site.b}/vb", "--decap", f"{site.b}/vb", "--allow-remote", f"{site.a_addr}/32"]
    with BpftoolsProcess(*serve_args, ready_timeout=READY_TIMEOUT) as serve, \
            Prometheus([f"127.0.0.1:{port}"], rule_files=[str(DASHBOARDS / "alerts.yml")]) as prom:
        prom.wait_for('up{job="bpftools"} == 1')
        make_traffic(site)
        kernel = iptables_input_drops(site.b)
        assert kernel == DROPPED_UDP
        ours = f'bpftools_drops_total{{netns="{site.b}", device="vb", reason="NETFILTER_DROP"}}'
        prom.wait_for(ours, predicate=lambda r: r and float(r[0]["value"][1]) >= kernel)
        scrapes = int(prom.query(f"count_over_time({ours}[1m])")[0]["value"][1])
        prom.wait_for(f"count_over_time({ours}[1m])",  # more scrapes: nothing counted twice
                      predicate=lambda r: r and int(r[0]["value"][1]) >= scrapes + 2)
        assert float(prom.query(f"max_over_time({ours}[1m])")[0]["value"][1]) == kernel
        rp = prom.wait_for(f'bpftools_drops_total{{netns="{site.b}", reason="IP_RPFILTER"}}')
        assert float(rp[0]["value"][1]) == SPOOFED
        decap = prom.wait_for(f'bpftools_xdp_decap_packets_total{{netns="{site.b}", result="decapsulated"}}')
        assert float(decap[0]["value"][1]) == 25
        vxlan = prom.wait_for(f'bpftools_encap_packets_total{{netns="{site.b}", device="vb", encap="vxlan", direction="ingress"}}')
        assert float(vxlan[0]["value"][1]) >= 20
        prom.wait_for(f'count_over_time(bpftools_encap_packets_total{{netns="{site.b}"}}[1m])',  # rates need samples
                      predicate=lambda r: r and min(int(x["value"][1]) for x in r) >= 3)

        for title, expr, legend_labels in dashboard_expressions():
            result = prom.wait_for(expr, timeout=10)  # wait_for: a scrape may be missed on a loaded machine
            for series in result:
                assert legend_labels <= set(series["metric"]), (title, series["metric"])

        for rule in alert_rules():
            core = alert_core(rule["expr"])
            if core.startswith("absent("):  # empty while the job has a target (alerts_test.yml: it fires without)
                assert prom.query(core) == [], rule["alert"]
                continue
            result = prom.wait_for(core, timeout=10)
            expected = labels_in_annotations(rule) - {"instance"}
            assert all(expected <= set(s["metric"]) for s in result), (rule["alert"], result)
        fired = {r["alert"]: r for r in alert_rules()}
        # (BpftoolsRpFilterDrops needs drops that keep coming, not one burst: alerts_test.yml shows both)

        # A program detached behind our back shows as attached == 0 and trips the alert's expression.
        assert cli("detach", "vb", "--netns", site.b, "--force").returncode == 0
        prom.wait_for(fired["BpftoolsProgramDetached"]["expr"])

        assert serve.stop(signal.SIGTERM) == 0
        prom.wait_for(fired["BpftoolsExporterDown"]["expr"])


def panel_expression(title: str) -> str:
    for panel_title, expr, _legend in dashboard_expressions():
        if panel_title == title:
            return expr
    raise KeyError(title)


def test_exporter_up_panel_shows_0_for_a_stopped_exporter(veth_pair):
    """The panel's own expression, through a real Prometheus: 1 while serve runs, 0 (not "No
    data") once it is stopped; the instance stays selectable in the dashboard's variable."""
    port = free_port()
    expr = panel_expression("Exporter up")
    serve = BpftoolsProcess("serve", "--listen", f"127.0.0.1:{port}", "--drops", "--netns", veth_pair.ns_b,
                            ready_timeout=READY_TIMEOUT)
    with serve, Prometheus([f"127.0.0.1:{port}"]) as prom:
        started = time.time()
        up = prom.wait_for(expr, predicate=lambda r: len(r) == 1 and r[0]["value"][1] == "1")
        assert up[0]["metric"] == {"instance": f"127.0.0.1:{port}"}
        assert serve.stop(signal.SIGTERM) == 0
        down = prom.wait_for(expr, predicate=lambda r: len(r) == 1 and r[0]["value"][1] == "0")
        assert down[0]["metric"] == {"instance": f"127.0.0.1:{port}"}
        variable = prom.api("label/instance/values", start=started - 60, end=time.time(),
                            **{"match[]": 'bpftools_build_info{job=~".*"}'})
        assert variable == [f"127.0.0.1:{port}"]


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def wait_metrics(port: int, predicate, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    text = metrics_text(port)
    while not predicate(text) and time.monotonic() < deadline:
        time.sleep(0.3)
        text = metrics_text(port)
    assert predicate(text), text
    return text


def wait_metrics_at(port: int, predicate, timeout: float = 30) -> str:
    """wait_metrics on a port that may not be listening yet (a reload moves the exporter)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return wait_metrics(port, predicate, timeout=max(0.1, deadline - time.monotonic()))
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_interfaces_that_appear_and_disappear_are_followed(topo):
    ns = topo.netns("sw")
    port = free_port()
    with BpftoolsProcess("serve", "--listen", f"127.0.0.1:{port}", "--encap", f"{ns}/late0",
                         "--decap", f"{ns}/late0", "--allow-any") as serve:
        assert 'device="late0"' not in metrics_text(port)
        for round_ in range(2):  # appear, disappear, and again: nothing stale, nothing crashes
            topo.veth(ns, "late0", ns, "late1", "10.65.0.1/24", "10.65.0.2/24")
            text = wait_metrics(port, lambda t: t.count('bpftools_bpf_program_attached{device="late0"') == 3,
                                timeout=READY_TIMEOUT)  # two compilations on a loaded machine
            assert 'hook="xdp"' in text and 'hook="tc/ingress"' in text and 'hook="tc/egress"' in text
            run("ip", "link", "del", "late0", netns=ns)
            wait_metrics(port, lambda t: 'device="late0"' not in t)
        # an interface that vanishes while it is being attached (compiling takes a while)
        topo.veth(ns, "late0", ns, "late1")
        run("ip", "link", "del", "late0", netns=ns)
        stays(serve.proc.poll, None, "serve keeps running while the interface it attaches to vanishes", duration=2.5)
        assert serve.stop(signal.SIGTERM) == 0
    assert "internal error" not in serve.stderr


def test_concurrent_scrapes_stay_correct(veth_pair):
    port = free_port()
    with BpftoolsProcess("serve", "--listen", f"127.0.0.1:{port}", "--drops", "--netns", veth_pair.ns_b,
                         "--encap", f"{veth_pair.ns_b}/{veth_pair.veth_b}") as serve:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 9, 50)  # NO_SOCKET drops in B
        wait_metrics(port, lambda t: 'reason="NO_SOCKET"} 50.0' in t)
        bodies, errors = [], []

        def scraper():
            for _ in range(25):
                try:
                    bodies.append(metrics_text(port))
                except Exception as exc:  # noqa: BLE001 - collected and asserted below
                    errors.append(exc)

        threads = [threading.Thread(target=scraper) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(bodies) == 150
        expected = f'bpftools_drops_total{{device="{veth_pair.veth_b}",netns="{veth_pair.ns_b}",reason="NO_SOCKET"}} 50.0'
        assert all(expected in body and 'bpftools_scrape_errors_total{source="drops"} 0.0' in body for body in bodies)
        assert serve.stop() == 0


def test_promtool_check_metrics_is_clean(veth_pair):
    port = free_port()
    with BpftoolsProcess("serve", "--listen", f"127.0.0.1:{port}", "--drops", "--netns", veth_pair.ns_b,
                         "--encap", f"{veth_pair.ns_b}/{veth_pair.veth_b}") as serve:
        run("ping", "-c", "3", "-i", "0.1", veth_pair.addr_b, netns=veth_pair.ns_a)
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 9, 5)  # NO_SOCKET drops in B
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            body = response.read().decode()
        assert "bpftools_drops_total{" in body and "bpftools_encap_packets_total{" in body
        check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True)
        assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check.stdout + check.stderr
        serve.stop()


@pytest.mark.parametrize("suffix", [".toml", ".yml"])
def test_config_file_says_the_same_as_flags(tmp_path, veth_pair, suffix):
    port = free_port()
    config = tmp_path / f"serve{suffix}"
    if suffix == ".toml":
        config.write_text(f'listen = "127.0.0.1:{port}"\ndrops = true\nnetns = "{veth_pair.ns_b}"\n'
                          f'encap = ["{veth_pair.ns_b}/{veth_pair.veth_b}"]\n')
    else:
        config.write_text(f'listen: "127.0.0.1:{port}"\ndrops: true\nnetns: {veth_pair.ns_b}\n'
                          f'encap:\n  - {veth_pair.ns_b}/{veth_pair.veth_b}\n')
    with BpftoolsProcess("serve", "--config", str(config)) as serve:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 9, 3)
        body = wait_metrics(port, lambda t: 'reason="NO_SOCKET"' in t and "bpftools_encap_packets_total{" in t)
        assert f'netns="{veth_pair.ns_b}"' in body
        assert serve.stop() == 0


def test_bad_config_is_one_line_error(tmp_path):
    config = tmp_path / "serve.yml"
    config.write_text("drops: true\nbogus: 1\n")
    proc = cli("serve", "--config", str(config))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        proc.stderr.strip().splitlines()[0]] and "unknown setting 'bogus'" in proc.stderr
    assert cli("serve").stderr.startswith("bpftools: error: nothing to export")
    assert "CVE-2020-10136" in cli("serve", "--decap", "eth0").stderr


def test_drop_series_of_a_deleted_namespace_go_away(topo):
    from bpftools.netlink import netns_inode

    ns = topo.netns("gone")
    labels = (f'netns="{ns}"', f'netns="inode:{netns_inode(ns)}"')  # by name, or by inode once unnamed
    port = free_port()
    with BpftoolsProcess("serve", "--listen", f"127.0.0.1:{port}", "--drops", "--all-netns") as serve:
        send_udp(ns, "127.0.0.1", 9, 5)  # NO_SOCKET on lo in that namespace
        wait_metrics(port, lambda t: f'{labels[0]},reason="NO_SOCKET"' in t)
        run("ip", "netns", "del", ns)
        topo.namespaces.remove(ns)
        # the exporter sweeps the counts of vanished namespaces every 10 s
        wait_metrics(port, lambda t: not any(label in t for label in labels), timeout=25)
        assert serve.stop() == 0


CONFIG_SIZE = 1024


def rewrite_unnoticed(path: Path, text: str) -> None:
    """New content with the file's inode, size and mtime kept: only SIGHUP can make serve see it."""
    st = path.stat()
    data = text.encode().ljust(CONFIG_SIZE - 1, b"#") + b"\n"  # a TOML comment pads every version
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def rewrite_noticed(path: Path, text: str) -> None:
    """As an editor or Kubernetes does: a new file moved over the old one."""
    new = path.with_suffix(".new")
    new.write_text(text)
    os.replace(new, path)


def reloads(text: str, result: str) -> float:
    match = re.search(rf'bpftools_config_reloads_total{{result="{result}"}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def test_sighup_reloads_the_config_and_changes_only_what_changed(tmp_path, veth_pair):
    ns, ifname = veth_pair.ns_b, veth_pair.veth_b
    port, new_port = free_port(), free_port()
    config = tmp_path / "serve.toml"
    config.write_bytes(b" " * CONFIG_SIZE)
    rewrite_unnoticed(config, f'listen = "127.0.0.1:{port}"\ndrops = true\nnetns = "{ns}"\nencap = ["{ifname}"]\n')
    with BpftoolsProcess("serve", "--config", str(config), "--log-level", "debug",
                         ready_timeout=READY_TIMEOUT) as serve:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 9, 7)  # NO_SOCKET drops in B
        wait_metrics(port, lambda t: 'reason="NO_SOCKET"} 7.0' in t)
        rewrite_unnoticed(config, f'listen = "127.0.0.1:{new_port}"\ndrops = true\nnetns = "{ns}"\n'
                                  f'encap = ["{ifname}"]\ndecap = ["{ifname}"]\nallow_any = true\n')
        # two rounds of the loop: the file watch must not see a change that kept size and mtime
        stays(lambda: reloads(metrics_text(port), "success"), 0.0, "no reload without SIGHUP", duration=2)
        serve.proc.send_signal(signal.SIGHUP)
        text = wait_metrics_at(new_port, lambda t: 'hook="xdp"' in t, timeout=READY_TIMEOUT)
        # unchanged: the drop tracer kept its counts, encap was not re-attached
        assert 'reason="NO_SOCKET"} 7.0' in text and text.count(f'device="{ifname}",hook="tc/') == 2
        assert 'bpftools_config_reloads_total{result="success"} 1.0' in text
        with pytest.raises(OSError):
            metrics_text(port)  # the old address is closed

        rewrite_unnoticed(config, f'listen = "127.0.0.1:{new_port}"\ndrops = true\nnetns = "{ns}"\n'
                                  f'decap = ["{ifname}"]\nallow_any = true\n')
        serve.proc.send_signal(signal.SIGHUP)
        text = wait_metrics_at(new_port, lambda t: 'hook="tc/' not in t)
        assert 'hook="xdp"' in text and 'reason="NO_SOCKET"} 7.0' in text
        assert 'source="encap:' in text  # the scrape-error counter of a removed source stays (never goes back)

        rewrite_unnoticed(config, "drops = true\nbogus = 1\n")  # a broken file keeps the running config
        serve.proc.send_signal(signal.SIGHUP)
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 9, 3)
        text = wait_metrics_at(new_port, lambda t: 'reason="NO_SOCKET"} 10.0' in t and reloads(t, "failure") >= 1)
        assert "bpftools_config_last_reload_successful 0.0" in text and reloads(text, "success") >= 2
        assert 'hook="xdp"' in text and serve.proc.poll() is None

        # No signal from here on: a changed file (as a ConfigMap update makes it) is reloaded too.
        # Drops move to the other namespace: a new tracer, then the old one and its counts go.
        rewrite_noticed(config, f'listen = "127.0.0.1:{new_port}"\ndrops = true\nnetns = "{veth_pair.ns_a}"\n'
                                f'decap = ["{ns}/{ifname}"]\nallow_any = true\n')
        wait_metrics_at(new_port, lambda t: f'netns="{ns}",reason="NO_SOCKET"' not in t, timeout=READY_TIMEOUT)
        send_udp(ns, veth_pair.addr_a, 9, 4)  # NO_SOCKET drops in A
        text = wait_metrics_at(new_port, lambda t: f'netns="{veth_pair.ns_a}",reason="NO_SOCKET"}} 4.0' in t
                               and "bpftools_config_last_reload_successful 1.0" in t)
        assert text.count('hook="tracepoint"') == 1
        assert 'hook="xdp"' in text  # decap, the same interface named another way: kept

        rewrite_noticed(config, f'listen = "127.0.0.1:{new_port}"\ndecap = ["{ns}/{ifname}"]\nallow_any = true\n')
        # (>= : a stat that races rewrite_unnoticed sees one more change)
        text = wait_metrics_at(new_port, lambda t: 'hook="tracepoint"' not in t and reloads(t, "success") >= 4)
        assert 'hook="xdp"' in text and "bpftools_drops_total{" not in text
        rc = serve.stop(signal.SIGTERM)
        assert rc == 0, serve.stderr
    log = serve.stderr
    assert "msg=\"drops: stopped\"" in log and "changed: reloading" in log
    assert log.count("msg=\"encap attached to") == 1 and log.count("msg=\"decap attached to") == 1
    assert "encap on vb stopped: removed from the config" in log
    assert "level=error logger=bpftools.serve msg=\"config reload failed, keeping the running config:" in log
    assert "unknown setting 'bogus'" in log and "Traceback" not in log
    for line in log.splitlines():
        if not line.startswith("bpftools: ready"):
            assert re.match(r"time=\S+Z level=(debug|info|warning|error) logger=bpftools\.\S+ msg=", line), line
