"""Kubernetes pods from a real containerd (its CRI plugin, the standard CNI plugins; see
tests/cri_env.py), created through the CRI API as the kubelet does: every command selects them by
`pod:NS/NAME` and names them so in its output and metrics, never by CNI's `cni-…` file."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from dataclasses import dataclass

import pytest

from bpftools import namespaces
from bpftools.topology import run
from bpftools_proc import BpftoolsProcess, cli, run_printed
from packets import send_udp
from prometheus_server import free_port
from test_namespaces import assert_one_line_error
from test_serve import wait_metrics
from waiting import wait_until


def bpftools(runtime, *args: str) -> tuple:
    """The arguments of a bpftools command that names pods through the test's containerd."""
    return ("--cri-endpoint", f"unix://{runtime.endpoint}", *args)


def test_a_pod_is_found_selected_and_labelled_by_name(cri_env, cri_runtime):
    web = cri_env.pod("web-0", namespace="shop")
    inode = os.stat(web.netns_path).st_ino
    assert os.path.basename(web.netns_path).startswith("cni-")  # CNI's file: an `ip netns` name too
    found = {ns.inode: ns for ns in namespaces.discover(max_age=0)}[inode]
    assert (found.label, found.kind, found.pod, found.k8s_namespace, found.pod_uid, found.runtime) == (
        web.label, "pod", web.name, "shop", web.uid, "containerd")
    assert namespaces.resolve(web.label, hold=False).inode == inode
    assert namespaces.resolve(os.path.basename(web.netns_path), hold=False).label == web.label  # by its cni- name
    proc = cli(*bpftools(cri_runtime, "detach", "lo", "--netns", web.label))
    assert proc.returncode == 0, proc.stderr


def test_trace_drops_in_a_pod(cri_env, cri_runtime):
    web = cri_env.pod("web-0", namespace="shop")
    inode = os.stat(web.netns_path).st_ino
    with BpftoolsProcess(*bpftools(cri_runtime, "trace-drops", "--netns", web.label, "--json", "--no-hints",
                                   "--reason", "NO_SOCKET", "--count", "3")) as tracer:
        send_udp(namespaces.resolve(web.label, hold=False), "127.0.0.1", 9, 3)  # NO_SOCKET on its lo
        assert tracer.wait(timeout=30) == 0, tracer.stderr
    drops = [d for d in tracer.json_lines() if d["type"] == "drop"]
    assert drops and {(d["netns"], d["netns_inode"], d["reason"]) for d in drops} == {(web.label, inode, "NO_SOCKET")}


def test_status_names_an_attachment_in_a_pod(cri_env, cri_runtime):
    web = cri_env.pod("web-0", namespace="shop")
    with BpftoolsProcess(*bpftools(cri_runtime, "encap-stats", "eth0", "--netns", web.label, "--json")) as stats:
        assert f"eth0 (netns {web.label})" in stats.stderr
        rows = [json.loads(line) for line in cli(*bpftools(cri_runtime, "status", "--json"), check=True).stdout.splitlines()]
        mine = [r for r in rows if r.get("netns_inode") == os.stat(web.netns_path).st_ino]
        assert mine and {r["netns"] for r in mine} == {web.label}, rows
        assert stats.stop() == 0


def test_serve_labels_pods_and_exports_their_identity(cri_env, cri_runtime):
    web = cri_env.pod("web-0", namespace="shop")
    port = free_port()
    with BpftoolsProcess(*bpftools(cri_runtime, "serve", "--listen", f"127.0.0.1:{port}",
                                   "--encap", f"{web.label}/eth0")) as serve:
        info = (f'bpftools_netns_info{{container_name="",k8s_namespace="shop",k8s_pod="{web.name}",'
                f'k8s_pod_uid="{web.uid}",netns="{web.label}",runtime="containerd"}} 1.0')
        text = wait_metrics(port, lambda t: info in t and f'netns="{web.label}"' in t.split("bpftools_netns_info")[0]
                            or info in t and f'bpftools_bpf_program_attached{{device="eth0",hook=' in t, timeout=20)
        assert "cni-" not in text.split("# HELP bpftools_netns_info")[0], "a pod's namespace labelled by its CNI file"
        assert f'netns="{web.label}"' in text
        cri_env.remove(web)
        wait_metrics(port, lambda t: f'netns="{web.label}"' not in t, timeout=20)
        assert serve.stop() == 0


def test_diagnose_ping_between_two_pods_names_both(cri_env, cri_runtime):
    a, b = cri_env.pod("a", namespace="shop"), cri_env.pod("b", namespace="shop")
    proc = cli(*bpftools(cri_runtime, "diagnose", "ping", b.ip, "--netns", a.label, "--count", "2", "--timeout", "1",
                         "--json"), timeout=120)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0 and result["causes"] == [], result
    assert result["netns"] == a.label
    hops = [(h["direction"], h["netns"], h["action"]) for h in result["path"]]
    assert hops[0] == ("request", a.label, "send") and ("request", b.label, "deliver") in hops, hops
    assert not any(h["netns"].startswith("cni-") for h in result["path"]), hops


def test_bad_pod_selectors_are_one_line(cri_env, cri_runtime, tmp_path):
    cases = [
        (bpftools(cri_runtime, "trace-drops", "--netns", "pod:shop/nosuch", "--duration", "1"), "no such ready pod"),
        (("--cri-endpoint", str(tmp_path / "none.sock"), "trace-drops", "--netns", "pod:shop/web-0", "--duration", "1"),
         "no CRI runtime on this node"),
    ]
    for args, message in cases:
        assert_one_line_error(cli(*args), message)


# --- diagnose: pod -> other node's pod subnet, drops in CNI chains and inside a pod ---------------

@dataclass
class OtherNode:
    """A second node: `node` routes the pod subnet `subnet` to `pod` (10.X.78.2), linked to the
    test containerd's node namespace, which routes that subnet to it."""
    node: str
    pod: str
    subnet: str
    pod_ip: str


@pytest.fixture
def other_node(topo, cri_runtime):
    octets = cri_runtime.subnet.split(".")
    subnet, gateway, pod_ip = f"10.{octets[1]}.78.0/24", f"10.{octets[1]}.78.1", f"10.{octets[1]}.78.2"
    other = OtherNode(topo.netns("n2"), topo.netns("p2"), subnet, pod_ip)
    link = f"n2-{uuid.uuid4().hex[:6]}"  # the end in the test containerd's node namespace (removed with n2)
    topo.veth(cri_runtime.node_netns, link, other.node, "n2-n1", "192.168.77.1/30", "192.168.77.2/30")
    topo.veth(other.node, "cni0", other.pod, "eth0", f"{gateway}/24", f"{pod_ip}/24")
    topo.sysctl(other.node, "net.ipv4.ip_forward", 1)
    run("ip", "route", "add", "default", "via", gateway, netns=other.pod)
    run("ip", "route", "add", "default", "via", "192.168.77.1", netns=other.node)
    run("ip", "route", "add", subnet, "via", "192.168.77.2", netns=cri_runtime.node_netns)
    return other


def diagnose(runtime, dst: str, netns: str) -> tuple:
    proc = cli(*bpftools(runtime, "diagnose", "ping", dst, "--netns", netns, "--count", "2", "--timeout", "1",
                         "--json"), timeout=120)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def run_fixes(cause: dict) -> None:
    """Every printed fix, run as printed."""
    assert cause["fix"], cause
    for command in cause["fix"]:
        done = run_printed(command, timeout=60)
        assert done.returncode == 0, f"{command}: {done.stderr}"


def pings(pod, dst: str) -> bool:
    return wait_until(lambda: pod.exec("ping", "-n", "-q", "-c", "1", "-W", "1", dst, check=False).returncode == 0,
                      "the ping to work", timeout=10)


def test_a_pod_reaches_another_nodes_pod_subnet_and_the_path_names_it(cri_env, cri_runtime, other_node):
    a = cri_env.pod("a", namespace="shop")
    rc, result = diagnose(cri_runtime, other_node.pod_ip, a.label)
    assert rc == 0 and result["causes"] == [], result
    hops = [(h["direction"], h["netns"], h["action"]) for h in result["path"]]
    assert hops[0] == ("request", a.label, "send") and hops[-1] == ("reply", a.label, "deliver"), hops
    assert ("request", cri_runtime.node_netns, "bridge") in hops and ("request", other_node.pod, "deliver") in hops


def test_a_drop_in_cni_admin_is_named_and_its_fix_runs_as_printed(cri_env, cri_runtime, other_node):
    a = cri_env.pod("a", namespace="shop")
    cri_runtime.node("iptables", "-I", "CNI-ADMIN", "-s", f"{a.ip}/32", "-d", other_node.subnet, "-j", "DROP")
    rc, result = diagnose(cri_runtime, other_node.pod_ip, a.label)
    cause = result["causes"][0] if result["causes"] else result
    assert rc == 1 and (cause["cause"], cause["netns"]) == ("netfilter_drop", cri_runtime.node_netns), result
    assert "CNI-ADMIN, the chain the CNI firewall plugin leaves to administrators" in cause["detail"]
    run_fixes(cause)
    assert pings(a, other_node.pod_ip)


def test_a_drop_in_a_cni_plugin_chain_is_fixed_in_cni_admin(cri_env, cri_runtime, other_node):
    a = cri_env.pod("a", namespace="shop")
    # after CNI-FORWARD's first rule (its jump to CNI-ADMIN), before the plugin's per-pod ACCEPTs
    cri_runtime.node("iptables", "-I", "CNI-FORWARD", "2", "-s", f"{a.ip}/32", "-d", f"{other_node.pod_ip}/32",
                     "-j", "DROP")
    rc, result = diagnose(cri_runtime, other_node.pod_ip, a.label)
    cause = result["causes"][0] if result["causes"] else result
    assert rc == 1 and (cause["cause"], cause["netns"]) == ("cni_chain_drop", cri_runtime.node_netns), result
    assert "CNI-FORWARD, a chain the CNI firewall plugin rewrites" in cause["detail"]
    assert all(" CNI-ADMIN " in command for command in cause["fix"]), cause["fix"]
    run_fixes(cause)
    assert pings(a, other_node.pod_ip)
    rc, after = diagnose(cri_runtime, other_node.pod_ip, a.label)
    assert rc == 0 and after["causes"] == [], after


def test_a_drop_inside_a_pod_is_located_in_the_pod(cri_env, cri_runtime):
    a, b = cri_env.pod("a", namespace="shop"), cri_env.pod("b", namespace="shop")
    b.exec("iptables", "-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request", "-j", "DROP")
    rc, result = diagnose(cri_runtime, b.ip, a.label)
    cause = result["causes"][0] if result["causes"] else result
    assert rc == 1 and (cause["cause"], cause["netns"], cause["ifname"]) == ("netfilter_drop", b.label, "eth0"), result
    assert cause["netns_inode"] == os.stat(b.netns_path).st_ino
    traced = [d for d in result["drops"] if d["reason"] == "NETFILTER_DROP"]
    if traced:  # drop tracing works here: located, and named, in the pod
        assert {d["netns"] for d in traced} == {b.label}
    assert cause["fix_argv"] and {c["netns"] for c in cause["fix_argv"]} == {b.label}
    for command in cause["fix_argv"]:  # the fix as data, run in the pod (printed: see the next test)
        subprocess.run(["nsenter", f"--net={b.netns_path}", *command["argv"]], check=True, capture_output=True,
                       timeout=60)
    assert pings(a, b.ip)


def test_a_fix_inside_a_pod_runs_as_printed(cri_env, cri_runtime):
    a, b = cri_env.pod("a", namespace="shop"), cri_env.pod("b", namespace="shop")
    b.exec("iptables", "-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request", "-j", "DROP")
    rc, result = diagnose(cri_runtime, b.ip, a.label)
    assert rc == 1 and result["causes"][0]["netns"] == b.label
    run_fixes(result["causes"][0])
    assert pings(a, b.ip)


def test_doctor_reports_the_cri_runtime(cri_runtime):
    report = json.loads(cli(*bpftools(cri_runtime, "doctor", "--json"), check=True, timeout=120).stdout)
    assert report["cri"]["api"] is True and report["cri"]["runtime"] == "containerd", report["cri"]
    assert report["cri"]["endpoint"] == cri_runtime.endpoint


def test_serve_survives_a_dead_runtime_with_one_log_line(tmp_path):
    dead = tmp_path / "containerd.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(dead))  # a socket nobody listens on
    sock.close()
    port = free_port()
    with BpftoolsProcess("--cri-endpoint", f"unix://{dead}", "serve", "--drops", "--listen", f"127.0.0.1:{port}") as serve:
        for _ in range(3):  # scrapes succeed, each re-discovering the namespaces
            text = wait_metrics(port, lambda t: 'bpftools_netns_info{container_name="",' in t)
            assert 'netns="host"' in text
        assert serve.stop() == 0
    assert serve.stderr.count("does not answer") == 1, serve.stderr
