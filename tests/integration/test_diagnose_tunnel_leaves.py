"""Where the path leaves the machine through a tunnel, on a real kernel: node1's VXLAN device sends
to a remote that lives in a network namespace bpftools cannot discover (nothing names it, no
process is in it, it is mounted nowhere: this test holds it by a file descriptor). `diagnose ping`
must say which outer packet leaves by which interface to which next hop, that it was counted
leaving, and print a far-node command that, run on that side, traces the same ping there."""
from __future__ import annotations

import json
import os
import shlex
import subprocess

import pytest

from bpftools import namespaces
from bpftools.topology import run
from bpftools_proc import BpftoolsProcess, cli

VNI = 42
UNDERLAY, REMOTE = "10.71.0.1", "10.71.0.2"
POD, TARGET = "10.72.0.1", "10.72.0.2"
FAR_MAC = "02:00:0a:48:00:02"   # the far pod's MAC as a static entry: the echoes themselves are sent


@pytest.fixture
def hidden_netns(tmp_path):
    """A namespace made on a bind-mount file in tmp_path, then held only by this process's open
    descriptor (unmounted, the file removed): no `ip netns` name, no process, no mount, so
    bpftools' discovery cannot find it. Yields a path that opens it: /proc/PID/fd/N."""
    file = tmp_path / "far-node-net"
    file.touch()
    fd, mounted = None, False
    try:
        subprocess.run(["unshare", f"--net={file}", "true"], check=True)
        mounted = True
        fd = os.open(file, os.O_RDONLY)
        subprocess.run(["umount", "--lazy", str(file)], check=True)   # busy while fd holds it: detach
        mounted = False
        file.unlink()
        yield f"/proc/{os.getpid()}/fd/{fd}"
    finally:
        if mounted:
            subprocess.run(["umount", "--lazy", str(file)], check=False)
        if fd is not None:
            os.close(fd)   # the last reference: the namespace and its veth end go
        file.unlink(missing_ok=True)


def in_hidden(path: str, *args: str) -> None:
    run("nsenter", f"--net={path}", *args)


@pytest.fixture
def leaving(topo, hidden_netns):
    """pod (eth0 10.72.0.1) - node1 (br0: veth-pod, vxlan0 VNI 42 remote 10.71.0.2 over ul1
    10.71.0.1) == veth == the hidden namespace (10.71.0.2, no VXLAN device)."""
    node, pod = topo.netns("node1"), topo.netns("pod")
    for ns in (node, pod):   # no IPv6 chatter through the tunnel
        topo.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", 1)
        topo.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", 1)
    run("ip", "link", "add", "ul1", "type", "veth", "peer", "name", "ul-far", netns=node)
    run("ip", "link", "set", "ul-far", "netns", hidden_netns, netns=node)
    in_hidden(hidden_netns, "ip", "addr", "add", f"{REMOTE}/24", "dev", "ul-far")
    in_hidden(hidden_netns, "ip", "link", "set", "ul-far", "up")
    run("ip", "addr", "add", f"{UNDERLAY}/24", "dev", "ul1", netns=node)
    run("ip", "link", "set", "ul1", "up", netns=node)
    run("ip", "link", "add", "vxlan0", "type", "vxlan", "id", str(VNI), "local", UNDERLAY, "remote", REMOTE,
        "dstport", "4789", "dev", "ul1", netns=node)
    topo.veth(pod, "eth0", node, "veth-pod", f"{POD}/24")
    run("ip", "link", "set", "eth0", "mtu", "1450", netns=pod)
    topo.bridge(node, "br0", ["veth-pod", "vxlan0"])
    run("ip", "link", "set", "vxlan0", "up", netns=node)
    run("ip", "neigh", "replace", TARGET, "lladdr", FAR_MAC, "dev", "eth0", "nud", "permanent", netns=pod)
    return node, pod, hidden_netns


@pytest.mark.feature("vxlan_module")
def test_the_outer_packet_leaves_into_a_namespace_bpftools_cannot_enter(leaving):
    node, pod, hidden = leaving
    hidden_inode = os.stat(hidden).st_ino
    assert hidden_inode not in {ns.inode for ns in namespaces.discover(max_age=0)}   # the premise

    proc = cli("diagnose", "ping", TARGET, "--netns", pod, "--count", "2", "--timeout", "1", "--json", timeout=120)
    result = json.loads(proc.stdout)
    assert proc.returncode == 2 and not result["reachable"], proc.stdout + proc.stderr   # unknown: beyond here
    assert all(h["netns"] in (node, pod) for h in result["path"]), result["path"]
    leave = result["path"][-1]
    assert (leave["direction"], leave["netns"], leave["oif"], leave["action"], leave["nexthop"]) == (
        "request", node, "ul1", "leave", REMOTE), result["path"]
    assert leave["outer"] == {"kind": "vxlan", "src": UNDERLAY, "dst": REMOTE, "proto": "udp", "dport": 4789,
                              "vni": VNI, "key": None}
    assert leave["packets"]["unit"] == "echo" and leave["packets"]["out"] == 2, leave   # seen leaving
    assert [h["action"] for h in result["path"]] == ["send", "bridge", "tunnel", "leave"], result["path"]
    assert [c["cause"] for c in result["causes"]] == ["unknown"]
    assert any("may be beyond it" in e for e in result["causes"][0]["evidence"]), result["causes"]

    text = cli("diagnose", "ping", TARGET, "--netns", pod, "--count", "2", "--timeout", "1", timeout=120).stdout
    assert (f"  the request leaves encapsulated: VXLAN (UDP port 4789, VNI {VNI}) {UNDERLAY} -> {REMOTE} through ul1 "
            f"in {node} to {REMOTE} (2 echo counted leaving)") in text, text
    far = [ln.split(": ", 1)[1] for ln in text.splitlines() if ln.startswith("  on the far node, run: ")]
    assert far and far[0] == f"bpftools trace-drops --all-netns --src {POD} --dst {TARGET}", text
    assert "not followed further" not in text

    # The far-node command, run on the far side (as its own namespace), traces the same ping there.
    argv = shlex.split(far[0])
    assert argv[0] == "bpftools"
    with BpftoolsProcess(*argv[1:], "--json", prefix=("nsenter", f"--net={hidden}")) as tracer:
        run("ping", "-n", "-c", "3", "-i", "0.2", "-w", "2", TARGET, netns=pod, check=False)
        drops = tracer.wait_for(lambda events: [e for e in events if e.get("type") == "drop" and e.get("inner")],
                                "the far side's drop of the tunnel packet", timeout=30)
    drop = next(e for e in drops if e.get("type") == "drop" and e.get("inner"))
    assert drop["netns_inode"] == hidden_inode and drop["ifname"] == "ul-far", drop
    assert (drop["src"], drop["dst"], drop["dport"], drop["encap"]["vni"]) == (UNDERLAY, REMOTE, 4789, VNI), drop
    assert (drop["inner"]["src"], drop["inner"]["dst"]) == (POD, TARGET), drop
