"""`diagnose ping` on topologies it did not build (the shared fixtures), its human output,
its recordings and its errors."""
from __future__ import annotations

import json

import pytest

from bpftools_proc import cli, run_printed
from bpftools.topology import run


def _diagnose(ns: str, dst: str, *extra: str):
    return cli("diagnose", "ping", dst, "--netns", ns, "--count", "2", "--timeout", "1", *extra, timeout=120)


def test_routed_fixture_healthy_then_router_stops_forwarding(routed):
    proc = _diagnose(routed.left, routed.right_addr, "--json")
    result = json.loads(proc.stdout)
    assert proc.returncode == 0 and result["reachable"] and result["causes"] == []
    assert [h["netns"] for h in result["path"] if h["direction"] == "request"] == [routed.left, routed.router,
                                                                                   routed.right]
    run("sysctl", "-qw", "net.ipv4.ip_forward=0", netns=routed.router)
    proc = _diagnose(routed.left, routed.right_addr)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"it breaks in {routed.router}" in proc.stdout and "ip_forward_disabled" in proc.stdout
    assert f"ip netns exec {routed.router} sysctl -w net.ipv4.ip_forward=1" in proc.stdout


def test_bridged_fixture_is_reachable_through_the_switch(bridged):
    proc = _diagnose(bridged.a, bridged.addr_b, "--json")
    result = json.loads(proc.stdout)
    assert proc.returncode == 0 and result["causes"] == []
    assert any(h["action"] == "bridge" and h["netns"] == bridged.switch for h in result["path"])
    assert all(c["ok"] for c in result["checks"]), result["checks"]


def test_strict_rp_filter_with_a_route_back_to_nowhere_names_the_route_with_drop_evidence(topo, veth_pair,
                                                                                         tmp_path):
    """A route back through another interface (a veth pair with nobody behind it) + rp_filter=1 in
    conf/all only (effective = max): rp_filter drops the request, but loosening it would not help,
    the replies would leave by side0 too: the route back is the fault, and its fix works."""
    topo.veth(veth_pair.ns_b, "side0", veth_pair.ns_b, "side1")
    run("ip", "route", "add", f"{veth_pair.addr_a}/32", "dev", "side0", netns=veth_pair.ns_b)
    run("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", netns=veth_pair.ns_b)
    record = tmp_path / "state.json"
    proc = _diagnose(veth_pair.ns_a, veth_pair.addr_b, "--json", "--record", str(record))
    result = json.loads(proc.stdout)
    assert proc.returncode == 1
    first = result["causes"][0]
    assert (first["cause"], first["netns"], first["ifname"]) == ("no_return_route", veth_pair.ns_b, veth_pair.veth_b)
    assert first["fix"] == [f"ip netns exec {veth_pair.ns_b} ip route replace {veth_pair.addr_a}/32 dev "
                            f"{veth_pair.veth_b}"]
    if result["drops"]:  # tracing available: the kernel says so too
        assert any("IP_RPFILTER" in e for e in first["evidence"]), first
    saved = json.loads(record.read_text())
    assert saved["netns"] == veth_pair.ns_a and veth_pair.ns_b in saved["namespaces"]
    for cmd in first["fix"]:
        assert run_printed(cmd).returncode == 0, cmd
    proc = _diagnose(veth_pair.ns_a, veth_pair.addr_b, "--json")
    assert proc.returncode == 0, proc.stdout


def test_unknown_namespace_is_an_environment_error():
    proc = cli("diagnose", "ping", "10.11.0.2", "--netns", "bpftools-no-such-ns")
    assert proc.returncode == 3
    assert proc.stderr.startswith("bpftools: error:") and "not found" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.feature("tracepoint_kfree_skb")
def test_live_part_traces_the_drop_and_counts_the_echoes_per_hop(routed):
    run("iptables", "-A", "FORWARD", "-p", "icmp", "-j", "DROP", netns=routed.router)
    proc = _diagnose(routed.left, routed.right_addr, "--json")
    result = json.loads(proc.stdout)
    assert proc.returncode == 1 and result["notes"] == [], result["notes"]
    assert result["causes"][0]["cause"] == "netfilter_drop"
    assert result["causes"][0]["fix"] == [f"ip netns exec {routed.router} iptables -t filter -D FORWARD -p icmp -j DROP"]
    drops = [d for d in result["drops"] if d["reason"] == "NETFILTER_DROP"]
    assert drops and drops[0]["netns"] == routed.router and drops[0]["count"] == 2
    router_hop = next(h for h in result["path"] if h["netns"] == routed.router and h["direction"] == "request")
    assert router_hop["packets"] == {"in": 2, "out": 0, "unit": "echo"}
    assert "counted: echo requests: 2 entered" in _diagnose(routed.left, routed.right_addr).stdout


def _vxlan_switches(topo):
    """a - sw1 (br0: pa, vx0) ==VXLAN 42 over 10.31.0.0/24== sw2 (br0: vx0, pb) - b, FDB entries by hand."""
    a, sw1, sw2, b = topo.netns("a"), topo.netns("s1"), topo.netns("s2"), topo.netns("b")
    topo.veth(sw1, "u0", sw2, "u1", "10.31.0.1/24", "10.31.0.2/24")
    topo.veth(a, "eth0", sw1, "pa", "10.32.0.1/24")
    topo.veth(b, "eth0", sw2, "pb", "10.32.0.2/24")
    for ns, local, remote in ((sw1, "10.31.0.1", "10.31.0.2"), (sw2, "10.31.0.2", "10.31.0.1")):
        run("ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "local", local, "dstport", "4789",
            "nolearning", netns=ns)
        run("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx0", "dst", remote, netns=ns)
        run("ip", "link", "set", "vx0", "up", netns=ns)
        topo.bridge(ns, "br0", ["vx0", "pa" if ns == sw1 else "pb"])
    for ns in (a, b):
        run("ip", "link", "set", "eth0", "mtu", "1450", netns=ns)
    return a, sw1, sw2, b


@pytest.mark.feature("vxlan_module")
def test_vxlan_segment_is_followed_to_the_remote_vtep_and_an_unused_address_stops_at_the_sender(topo):
    a, sw1, sw2, b = _vxlan_switches(topo)
    proc = _diagnose(a, "10.32.0.2", "--json")
    result = json.loads(proc.stdout)
    assert proc.returncode == 0 and result["causes"] == [], proc.stdout
    request = [(h["netns"], h["iif"], h["oif"]) for h in result["path"] if h["direction"] == "request"]
    assert request == [(a, None, "eth0"), (sw1, "pa", "vx0"), (sw1, None, "vx0"), (sw1, None, "u0"), (sw2, "u1", None),
                       (sw2, "vx0", "pb"), (b, "eth0", None)]
    tunnel = next(h for h in result["path"] if h["action"] == "tunnel")
    assert tunnel["outer"] == {"kind": "vxlan", "src": "10.31.0.1", "dst": "10.31.0.2", "proto": "udp", "dport": 4789,
                               "vni": 42, "key": None}
    proc = _diagnose(a, "10.32.0.77", "--json")
    result = json.loads(proc.stdout)
    assert proc.returncode == 1
    first = result["causes"][0]
    assert (first["cause"], first["netns"], first["ifname"]) == ("neighbor_unreachable", a, "eth0")
    assert f"eth0 in {b}" in first["detail"]   # the station behind the remote VTEP was asked too


@pytest.mark.feature("vxlan_module")
def test_vxlan_to_a_multicast_group_is_not_followed_and_says_so(topo):
    """Frames flooded to a multicast group reach whoever joined it: the walk cannot know the
    members, so it stops at the group and says so (the ping itself works: nothing is claimed)."""
    a, sw1, sw2, b = topo.netns("a"), topo.netns("s1"), topo.netns("s2"), topo.netns("b")
    topo.veth(sw1, "u0", sw2, "u1", "10.33.0.1/24", "10.33.0.2/24")
    topo.veth(a, "eth0", sw1, "pa", "10.34.0.1/24")
    topo.veth(b, "eth0", sw2, "pb", "10.34.0.2/24")
    for ns, underlay, port in ((sw1, "u0", "pa"), (sw2, "u1", "pb")):
        run("ip", "link", "add", "vx0", "type", "vxlan", "id", "7", "group", "239.1.1.7", "dev", underlay,
            "dstport", "4789", netns=ns)
        run("ip", "link", "set", "vx0", "up", netns=ns)
        topo.bridge(ns, "br0", ["vx0", port])
    for ns in (a, b):
        run("ip", "link", "set", "eth0", "mtu", "1450", netns=ns)
    proc = _diagnose(a, "10.34.0.2", "--json")
    result = json.loads(proc.stdout)
    left = [h for h in result["path"] if h["action"] == "leave"]
    assert left and "multicast group 239.1.1.7" in left[0]["note"] and left[0]["outer"]["dst"] == "239.1.1.7", \
        result["path"]
    assert result["reachable"] is True and result["causes"] == [], result["causes"]


def test_unused_addresses_stop_where_arp_goes_unanswered(routed):
    """Issue 11: these used to be "forwarded" back and forth until "too many hops (routing loop?)"."""
    for dst, where, ifname in (("10.21.1.77", routed.left, "eth0"), ("10.21.2.77", routed.router, "r-right")):
        proc = _diagnose(routed.left, dst, "--json")
        result = json.loads(proc.stdout)
        assert proc.returncode == 1, proc.stdout
        assert [(c["cause"], c["netns"], c["ifname"]) for c in result["causes"]] == [
            ("neighbor_unreachable", where, ifname)], result["causes"]
        assert result["path"][-1]["netns"] == where and result["path"][-1]["action"] == "broken"
        assert not any("too many hops" in h["note"] for h in result["path"])


def test_strict_rp_filter_with_a_route_back_over_the_servers_link_gets_a_fix_that_works(routed):
    """Issue 11: the answer also listed local_source on the server, with a fix deleting its address."""
    run("ip", "route", "add", f"{routed.left_addr}/32", "via", routed.right_addr, "dev", "r-right",
        netns=routed.router)
    run("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", netns=routed.router)
    proc = _diagnose(routed.left, routed.right_addr, "--json")
    result = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert [(c["cause"], c["netns"]) for c in result["causes"]] == [("no_return_route", routed.router)]
    fixes = [cmd for c in result["causes"] for cmd in c["fix"]]
    assert fixes == [f"ip netns exec {routed.router} ip route replace {routed.left_addr}/32 dev r-left"]
    for cmd in fixes:
        assert run_printed(cmd).returncode == 0, cmd
    proc = _diagnose(routed.left, routed.right_addr, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["causes"] == [], proc.stdout


@pytest.mark.feature("tracepoint_kfree_skb")
def test_no_cause_is_claimed_where_the_echoes_were_counted_never_to_arrive(routed):
    """Two faults: the router drops the requests, and right has no route back. The requests are
    counted to stop at the router, so right's missing return route (on a path nothing reached
    yet) is not claimed; once the first fix is applied, it is the cause."""
    run("iptables", "-A", "FORWARD", "-p", "icmp", "-j", "DROP", netns=routed.router)
    run("ip", "route", "del", "default", netns=routed.right)
    result = json.loads(_diagnose(routed.left, routed.right_addr, "--json").stdout)
    if result["path"][0]["packets"]["unit"] != "echo":
        pytest.skip(f"no per-hop echo counts here: {result['notes']}")
    assert [(c["cause"], c["netns"]) for c in result["causes"]] == [("netfilter_drop", routed.router)]
    for cmd in result["causes"][0]["fix"]:
        assert run_printed(cmd).returncode == 0, cmd
    result = json.loads(_diagnose(routed.left, routed.right_addr, "--json").stdout)
    assert [(c["cause"], c["netns"]) for c in result["causes"]] == [("no_return_route", routed.right)]
