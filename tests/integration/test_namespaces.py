"""The namespace registry on real namespaces: one only a process holds (selected by pid:,
path and inode:), Docker containers (docker:NAME), labels that round-trip through --netns,
bad selectors, and serve's bpftools_netns_info."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from bpftools import namespaces
from bpftools.errors import BpftoolsError
from bpftools_proc import BpftoolsProcess, cli, end_process
from packets import send_udp
from prometheus_server import free_port
from test_serve import wait_metrics


@pytest.fixture
def held_netns():
    """A namespace only a `sleep` holds (no `ip netns` name), lo up; yields the sleep's PID."""
    proc = subprocess.Popen(["unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep 600"])
    try:
        deadline = time.monotonic() + 10
        while namespaces._comm(proc.pid) != "sleep":  # wait for the exec (lo is up by then)
            assert time.monotonic() < deadline and proc.poll() is None, "unshare did not start"
            time.sleep(0.05)
        yield proc.pid
    finally:
        end_process(proc, timeout=5)


def assert_one_line_error(proc, *fragments):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("bpftools: error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def selects(selector: str) -> bool:
    """`detach lo --netns SELECTOR` resolves the selector and touches only that namespace."""
    proc = cli("detach", "lo", "--netns", selector)
    assert proc.returncode == 0, (selector, proc.stderr)
    return True


def test_a_namespace_only_a_process_holds(held_netns):
    pid = held_netns
    inode = os.stat(f"/proc/{pid}/ns/net").st_ino
    ns = {n.inode: n for n in namespaces.discover(max_age=0)}[inode]
    assert (ns.label, ns.kind, ns.pid) == (f"pid:{pid} (sleep)", "pid", pid)
    for selector in (f"pid:{pid}", f"pid:{pid} (sleep)", f"/proc/{pid}/ns/net", f"inode:{inode}"):
        assert namespaces.resolve(selector, hold=False).inode == inode
        assert selects(selector)


def test_trace_drops_in_a_process_namespace_by_pid(held_netns):
    pid = held_netns
    inode = os.stat(f"/proc/{pid}/ns/net").st_ino
    with BpftoolsProcess("trace-drops", "--netns", f"pid:{pid}", "--json", "--no-hints", "--count", "3") as tracer:
        send_udp(namespaces.resolve(f"pid:{pid}", hold=False), "127.0.0.1", 9, 3)  # NO_SOCKET on its lo
        assert tracer.wait(timeout=30) == 0, tracer.stderr
    drops = [d for d in tracer.json_lines() if d["type"] == "drop"]
    assert drops and {(d["netns"], d["netns_inode"], d["ifname"]) for d in drops} == {(f"pid:{pid} (sleep)", inode, "lo")}


def test_every_label_that_trace_drops_and_status_print_is_a_selector(held_netns, veth_pair, docker_env):
    web = docker_env.run("web")
    targets = [namespaces.resolve(s, hold=False) for s in (f"pid:{held_netns}", veth_pair.ns_a, f"docker:{web.name}")]
    with BpftoolsProcess("trace-drops", "--all-netns", "--json", "--no-hints", "--duration", "3") as tracer:
        for target in targets:
            send_udp(target, "127.0.0.1", 9, 2)
        assert tracer.wait(timeout=30) == 0, tracer.stderr
    printed = {d["netns"]: d["netns_inode"] for d in tracer.json_lines() if d["type"] == "drop"}
    assert {t.label for t in targets} <= set(printed), printed
    status = [r for r in map(json.loads, cli("status", "--json", check=True).stdout.splitlines()) if r["netns_inode"]]
    printed.update({r["netns"]: r["netns_inode"] for r in status})
    mine = {t.label for t in targets}
    for label, inode in printed.items():
        kind, _ = namespaces.parse_selector(label)  # every printed label parses as a selector
        if label in mine:  # (other engineers' namespaces come, go and get recreated meanwhile)
            assert namespaces.resolve(label, hold=False).inode == inode, label
            assert selects(label)


def test_a_drop_inside_a_container_is_labelled_by_the_container(docker_env):
    web = docker_env.run("web")
    inode = os.stat(web.netns_path).st_ino
    with BpftoolsProcess("trace-drops", "--netns", f"docker:{web.name}", "--json", "--no-hints", "--reason", "NO_SOCKET",
                         "--count", "3") as tracer:
        send_udp(namespaces.resolve(f"docker:{web.name}", hold=False), "127.0.0.1", 9, 3)  # NO_SOCKET on its lo
        assert tracer.wait(timeout=30) == 0, tracer.stderr
    drops = [d for d in tracer.json_lines() if d["type"] == "drop"]
    assert drops and {(d["netns"], d["netns_inode"], d["reason"]) for d in drops} == {
        (f"docker:{web.name}", inode, "NO_SOCKET")}
    assert {d["ifname"] for d in drops} == {"lo"}


def test_encap_stats_in_a_container_by_id(docker_env):
    a, b = docker_env.run("a"), docker_env.run("b")
    with BpftoolsProcess("encap-stats", "eth0", "--netns", f"docker:{a.id[:12]}", "--json", "--duration", "3") as stats:
        assert f"eth0 (netns docker:{a.name})" in stats.stderr
        assert a.exec("ping", "-c", "3", "-i", "0.2", "-W", "2", b.ip).returncode == 0
        assert stats.wait(timeout=30) == 0, stats.stderr
    rows = [r for r in stats.json_lines() if r["type"] == "encap"]
    assert rows and {(r["netns"], r["ifname"]) for r in rows} == {(f"docker:{a.name}", "eth0")}
    assert max(r["packets"] for r in rows if r["direction"] == "egress") >= 3


def test_bad_selectors_are_one_line_and_attach_nothing(docker_env):
    stopped = docker_env.run("stopped")
    docker_env.stop(stopped)
    gone = subprocess.Popen(["true"])
    gone.wait()
    cases = [
        (f"docker:{docker_env.name('nosuch')}", "no such Docker container"),
        (f"docker:{stopped.name}", "is not running"),
        (f"pid:{gone.pid}", "does not exist"),
        ("/etc/hostname", "is not a namespace file"),
        ("/proc/self/ns/mnt", "not a network namespace"),
        ("inode:1", "no network namespace with inode 1"),
        ("pod:default", "pod:NAMESPACE/NAME"),
        ("bt-no-such-netns", "not found"),
    ]
    for selector, message in cases:
        assert_one_line_error(cli("trace-drops", "--netns", selector, "--duration", "1"), message)
        assert_one_line_error(cli("encap-stats", "eth0", "--netns", selector, "--duration", "1"), message)
    assert docker_env.token not in cli("status", "--json", check=True).stdout  # (others' attachments come and go)


def test_serve_exports_one_info_series_per_live_namespace(topo, docker_env):
    named = topo.netns("info")
    topo.veth(named, "i0", named, "i1")
    web = docker_env.run("web")
    port = free_port()
    with BpftoolsProcess("serve", "--listen", f"127.0.0.1:{port}", "--encap", f"{named}/i0") as serve:
        container = (f'bpftools_netns_info{{container_name="{web.name}",k8s_namespace="",k8s_pod="",k8s_pod_uid="",'
                     f'netns="docker:{web.name}",runtime="docker"}} 1.0')
        plain = (f'bpftools_netns_info{{container_name="",k8s_namespace="",k8s_pod="",k8s_pod_uid="",netns="{named}",'
                 f'runtime=""}} 1.0')
        text = wait_metrics(port, lambda t: container in t and plain in t)
        assert ('bpftools_netns_info{container_name="",k8s_namespace="",k8s_pod="",k8s_pod_uid="",netns="host",'
                'runtime=""} 1.0') in text
        docker_env.engine.api.remove_container(web.id, force=True)
        wait_metrics(port, lambda t: f'netns="docker:{web.name}"' not in t)
        assert serve.stop() == 0


def test_veth_peers_are_followed_into_and_out_of_a_container(docker_env):
    """The nsid maps both ways: container eth0 -> its host-side veth -> back to eth0 in the container."""
    from bpftools.netlink import resolve_interface, veth_peer

    web = docker_env.run("web")
    container = namespaces.resolve(f"docker:{web.name}", hold=False)
    eth0 = resolve_interface("eth0", container)
    host_side = veth_peer(eth0)
    assert host_side is not None and host_side.netns_inode == namespaces.own_inode() and host_side.kind == "veth"
    back = veth_peer(host_side)
    assert back is not None and (back.netns_inode, back.ifindex, back.netns_label) == (
        container.inode, eth0.ifindex, f"docker:{web.name}")
    host = {ns.inode: ns for ns in namespaces.discover(max_age=0)}
    assert host[container.inode].nsid is not None  # the host numbers the container's namespace


def test_hints_read_the_firewall_inside_a_container(docker_env):
    """A drop by an iptables rule inside a container is explained from the container's own
    ruleset, and the command the hint shows enters the container's namespace (its PID found when
    the command is run, as in diagnose's fixes)."""
    web = docker_env.run("fw")
    web.host_exec("iptables", "-A", "INPUT", "-p", "udp", "--dport", "9999", "-j", "DROP")
    with BpftoolsProcess("trace-drops", "--netns", f"docker:{web.name}", "--json", "--reason", "NETFILTER_DROP",
                         "--count", "3") as tracer:
        send_udp(namespaces.resolve(f"docker:{web.name}", hold=False), web.ip, 9999, 3)
        assert tracer.wait(timeout=60) == 0, tracer.stderr
    drops = [d for d in tracer.json_lines() if d["type"] == "drop"]
    assert drops and all(d["netns"] == f"docker:{web.name}" for d in drops)
    hint = drops[-1]["hint"]
    enter = f"nsenter -n -t \"$(docker inspect -f '{{{{.State.Pid}}}}' {web.name})\" "   # as diagnose's fixes
    assert "--dport 9999 -j DROP" in hint and enter in hint, hint
