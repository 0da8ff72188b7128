"""Kubernetes pods from a real containerd (its CRI plugin, the standard CNI plugins; see
tests/cri_env.py), created through the CRI API as the kubelet does: every command selects them by
`pod:NS/NAME` and names them so in its output and metrics, never by CNI's `cni-…` file."""
from __future__ import annotations

import json
import os

from bpftools import namespaces
from bpftools_proc import BpftoolsProcess, cli
from packets import send_udp
from prometheus_server import free_port
from test_namespaces import assert_one_line_error
from test_serve import wait_metrics


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
