"""tunnel_fixes: the commands are proven on the model (apply_fix), which answers as the kernel did in
a scratch namespace; tests/integration/test_tunnel_fixes_kernel.py runs the same commands there."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from bpftools.commands import Command
from bpftools.diagnose.apply_fix import Refused, applied, apply_argv
from bpftools.diagnose.state import (Addr, FdbEntry, Link, Neighbour, NetnsState, Route, Snapshot, default_rules,
                                     local_routes)
from bpftools.diagnose.tunnel_fixes import (ZERO_MAC, fdb_fix, inner_mtu_fix, move_remote, recreate,
                                            tunnel_overhead)

FLANNEL_MAC, PEER1_MAC, PEER2_MAC = "1a:2b:3c:4d:5e:01", "1a:2b:3c:4d:5e:02", "1a:2b:3c:4d:5e:03"


def flannel_node() -> NetnsState:
    """Flannel's vxlan backend as it programs a node: flannel.1 (VNI 1, port 8472, nolearning) with
    a /32 address, an onlink route per other node's pod subnet through that node's VTEP address,
    a permanent neighbour for that address and an FDB entry sending its MAC to the node."""
    eth0 = Link(2, "eth0", "veth", mtu=1500, peer_netns="node2", peer_ifindex=2, mac="02:00:00:00:01:01")
    flannel = Link(3, "flannel.1", "vxlan", mtu=1450, mac=FLANNEL_MAC, vni=1, dstport=8472,
                   tunnel_local="192.168.1.1", tunnel_dev=2, learning=False,
                   fdb=[FdbEntry(PEER1_MAC, "192.168.1.2"), FdbEntry(PEER2_MAC, "192.168.1.3")],
                   vxlan_fdb=["192.168.1.2", "192.168.1.3"])
    addrs = [Addr(2, "192.168.1.1", 24), Addr(3, "10.244.0.0", 32)]
    routes = local_routes(addrs) + [Route("192.168.1.0", 24, oif=2, prefsrc="192.168.1.1", scope=253),
                                    Route("10.244.1.0", 24, oif=3, gateway="10.244.1.0"),
                                    Route("10.244.2.0", 24, oif=3, gateway="10.244.2.0")]
    neighbours = [Neighbour(3, "10.244.1.0", "permanent", PEER1_MAC), Neighbour(3, "10.244.2.0", "permanent",
                                                                                 PEER2_MAC),
                  Neighbour(2, "192.168.1.2", "reachable", "02:00:00:00:01:02"),
                  Neighbour(3, "ff02::16", "noarp", "33:33:00:00:00:16")]    # the kernel's own: not made again
    sysctls = {"net.ipv4.conf.default.rp_filter": 2, "net.ipv4.conf.flannel.1.rp_filter": 0,
               "net.ipv4.conf.eth0.rp_filter": 2}
    return NetnsState("node", [Link(1, "lo"), eth0, flannel], addrs, routes, default_rules(4) + default_rules(6),
                      neighbours, sysctls)


def l2_node() -> NetnsState:
    """An L2 overlay: vx0 (remote 10.9.0.2, VNI 42, port 4789) a port of br0, up, with an appended
    default remote and a static unicast entry on its own port/VNI."""
    vx0 = Link(4, "vx0", "vxlan", mtu=1450, mac="02:00:00:00:00:aa", master=3, vni=42, dstport=4789,
               tunnel_remote="10.9.0.2", tunnel_local="10.9.0.1", tunnel_dev=2,
               fdb=[FdbEntry(ZERO_MAC, "10.9.0.2"), FdbEntry(ZERO_MAC, "10.9.0.3"),
                    FdbEntry("02:00:00:00:00:bb", "10.9.0.4", 4791, 99), FdbEntry("02:00:00:00:00:cc", "10.9.0.2",
                                                                                  permanent=False)],
               vxlan_fdb=["10.9.0.2", "10.9.0.3", "10.9.0.4"])
    links = [Link(1, "lo"), Link(2, "eth0", "veth", peer_netns="node2", peer_ifindex=2), Link(3, "br0", "bridge"), vx0]
    addrs = [Addr(2, "10.9.0.1", 24)]
    routes = local_routes(addrs) + [Route("10.9.0.0", 24, oif=2, prefsrc="10.9.0.1", scope=253)]
    return NetnsState("node", links, addrs, routes, default_rules(4) + default_rules(6))


def run(state: NetnsState, fix) -> NetnsState:
    state = copy.deepcopy(state)
    for argv in fix:
        apply_argv(state, list(argv))
    return state


def as_built(state: NetnsState, name: str) -> tuple:
    """The device and what hangs on it, by name (a device made again has another ifindex)."""
    link = state.link_by_name(name)
    index = link.ifindex
    kept = replace(link, ifindex=0, fdb=sorted((e.mac, e.dst, e.port, e.vni) for e in link.fdb if e.permanent),
                   vxlan_fdb=sorted(link.vxlan_fdb))
    return (kept, sorted((a.address, a.prefixlen) for a in state.addrs_on(index)),
            sorted((r.dst, r.dst_len, r.gateway, r.table, r.type) for r in state.routes if r.oif == index),
            sorted((n.dst, n.lladdr, n.state) for n in state.neighbours if n.ifindex == index and ":" not in n.dst),
            {k: v for k, v in state.sysctls.items() if f".{name}." in k})


def test_recreate_flannel_gives_back_the_same_device_with_the_new_vni():
    before = flannel_node()
    fix = recreate(before, before.link_by_name("flannel.1"), vni=2)
    assert [" ".join(a) for a in fix] == [
        "ip link del flannel.1",
        f"ip link add flannel.1 address {FLANNEL_MAC} mtu 1450 type vxlan id 2 dstport 8472 local 192.168.1.1 "
        "dev eth0 nolearning",
        "ip link set flannel.1 up",
        "sysctl -w net.ipv4.conf.flannel/1.rp_filter=0",
        "ip addr add 10.244.0.0/32 dev flannel.1",
        f"bridge fdb append {PEER1_MAC} dev flannel.1 dst 192.168.1.2",
        f"bridge fdb append {PEER2_MAC} dev flannel.1 dst 192.168.1.3",
        f"ip neigh add 10.244.1.0 lladdr {PEER1_MAC} dev flannel.1 nud permanent",
        f"ip neigh add 10.244.2.0 lladdr {PEER2_MAC} dev flannel.1 nud permanent",
        "ip route add 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink",
        "ip route add 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"]
    after = run(before, fix)
    old, new = as_built(before, "flannel.1"), as_built(after, "flannel.1")
    assert new[0].vni == 2 and replace(new[0], vni=1) == old[0]
    assert new[1:] == old[1:]


def test_recreate_l2_keeps_master_remote_and_static_entries_and_changes_the_port():
    before = l2_node()
    fix = recreate(before, before.link_by_name("vx0"), dstport=4789 + 1)
    assert fix[1] == ("ip", "link", "add", "vx0", "address", "02:00:00:00:00:aa", "mtu", "1450", "type", "vxlan",
                      "id", "42", "dstport", "4790", "local", "10.9.0.1", "remote", "10.9.0.2", "dev", "eth0")
    assert ("ip", "link", "set", "vx0", "master", "br0") in fix
    assert not any("02:00:00:00:00:cc" in a for a in fix)          # learned: it comes back by itself
    after = run(before, fix)
    old, new = as_built(before, "vx0"), as_built(after, "vx0")
    assert new[0].dstport == 4790 and replace(new[0], dstport=4789) == old[0]
    assert new[1:] == old[1:]


def test_recreate_deletes_again_a_default_entry_that_had_been_deleted():
    before = l2_node()
    vx0 = before.link_by_name("vx0")
    vx0.fdb = [e for e in vx0.fdb if e.dst != "10.9.0.2"]
    fix = recreate(before, vx0, vni=43)
    assert fix[-1] == ("bridge", "fdb", "del", ZERO_MAC, "dev", "vx0", "dst", "10.9.0.2")
    assert as_built(run(before, fix), "vx0")[0].fdb == as_built(before, "vx0")[0].fdb


def test_recreate_geneve_and_what_it_refuses():
    state = l2_node()
    state.links.append(Link(5, "gn0", "geneve", mtu=1450, mac="02:00:00:00:00:dd", vni=7, dstport=6081,
                            tunnel_remote="10.9.0.2"))
    fix = recreate(state, state.link_by_name("gn0"), vni=8)
    assert " ".join(fix[1]) == "ip link add gn0 address 02:00:00:00:00:dd mtu 1450 type geneve id 8 dstport 6081 " \
                               "remote 10.9.0.2"
    assert as_built(run(state, fix), "gn0")[0] == replace(as_built(state, "gn0")[0], vni=8)
    assert recreate(state, state.link_by_name("eth0"), vni=1) == []
    state.link_by_name("vx0").tunnel_dev = 99      # its underlay is not here: cannot be made again
    assert recreate(state, state.link_by_name("vx0"), vni=1) == []


def test_the_vni_cannot_be_changed_in_place_so_only_recreate_repairs_it():
    state = flannel_node()
    with pytest.raises(Refused, match="Cannot change VNI"):
        run(state, [("ip", "link", "set", "flannel.1", "type", "vxlan", "id", "2")])


def test_fdb_fix_picks_the_verb_the_kernel_takes():
    state = flannel_node()
    flannel = state.link_by_name("flannel.1")
    assert fdb_fix(flannel, PEER1_MAC, "192.168.1.2") == []
    assert fdb_fix(flannel, PEER1_MAC, "192.168.1.9") == [
        ("bridge", "fdb", "replace", PEER1_MAC, "dev", "flannel.1", "dst", "192.168.1.9")]
    new = fdb_fix(flannel, "1A:2B:3C:4D:5E:04", "192.168.1.4", port=8472, vni=1)
    assert new == [("bridge", "fdb", "add", "1a:2b:3c:4d:5e:04", "dev", "flannel.1", "dst", "192.168.1.4")]
    default = fdb_fix(flannel, ZERO_MAC, "192.168.1.4", port=4789)
    assert default == [("bridge", "fdb", "append", ZERO_MAC, "dev", "flannel.1", "dst", "192.168.1.4", "port", "4789")]
    after = run(state, new + default + fdb_fix(flannel, PEER1_MAC, "192.168.1.9"))
    entries = {(e.mac, e.dst, e.port) for e in after.link_by_name("flannel.1").fdb}
    assert {("1a:2b:3c:4d:5e:04", "192.168.1.4", None), (ZERO_MAC, "192.168.1.4", 4789),
            (PEER1_MAC, "192.168.1.9", None)} <= entries and (PEER1_MAC, "192.168.1.2", None) not in entries


def test_move_remote_repoints_the_remote_and_the_entries():
    state = l2_node()
    vx0 = state.link_by_name("vx0")
    vx0.fdb.append(FdbEntry("02:00:00:00:00:ee", "10.9.0.3"))
    fix = move_remote(state, vx0, "10.9.0.2", "10.9.0.20")
    assert fix == [("ip", "link", "set", "vx0", "type", "vxlan", "remote", "10.9.0.20")]
    assert run(state, fix).link_by_name("vx0").tunnel_remote == "10.9.0.20"
    fix = move_remote(state, vx0, "10.9.0.3", "10.9.0.30")
    assert [" ".join(a) for a in fix] == ["bridge fdb del 00:00:00:00:00:00 dev vx0 dst 10.9.0.3",
                                          "bridge fdb append 00:00:00:00:00:00 dev vx0 dst 10.9.0.30",
                                          "bridge fdb replace 02:00:00:00:00:ee dev vx0 dst 10.9.0.30"]
    moved = run(state, fix).link_by_name("vx0")
    assert "10.9.0.3" not in moved.vxlan_fdb and {(e.mac, e.dst) for e in moved.fdb} >= {
        (ZERO_MAC, "10.9.0.30"), ("02:00:00:00:00:ee", "10.9.0.30"), (ZERO_MAC, "10.9.0.2")}
    assert move_remote(state, vx0, "10.9.9.9", "10.9.0.30") == []
    flannel = flannel_node()
    fix = move_remote(flannel, flannel.link_by_name("flannel.1"), "192.168.1.2", "192.168.1.22")
    assert fix == [("bridge", "fdb", "replace", PEER1_MAC, "dev", "flannel.1", "dst", "192.168.1.22")]


@pytest.mark.parametrize("kind, family, okey, overhead", [
    ("vxlan", 4, None, 50), ("vxlan", 6, None, 70), ("geneve", 4, None, 50), ("gre", 4, None, 24),
    ("gre", 4, 5, 28), ("gretap", 4, None, 38), ("ipip", 4, None, 20), ("sit", 4, None, 20),
    ("ip6tnl", 6, None, 48), ("ip6gre", 6, None, 52), ("veth", 4, None, 0)])
def test_tunnel_overhead(kind, family, okey, overhead):
    assert tunnel_overhead(Link(1, "t", kind, tunnel_okey=okey), family) == overhead
    assert tunnel_overhead(Link(1, "g", "geneve"), 4, geneve_options=8) == 58


def overlay() -> Snapshot:
    """pod (eth0, 1500) -- node (veth-pod, 1500, port of br0; vx0 1450 over eth0 1500) -- node2 (eth0)."""
    pod = NetnsState("pod", [Link(1, "lo"), Link(2, "eth0", "veth", mtu=1500, peer_netns="node", peer_ifindex=5)])
    node = l2_node()
    node.links.append(Link(5, "veth-pod", "veth", mtu=1500, master=3, peer_netns="pod", peer_ifindex=2))
    node2 = NetnsState("node2", [Link(1, "lo"), Link(2, "eth0", "veth", mtu=1500, peer_netns="node", peer_ifindex=2)])
    return Snapshot({"pod": pod, "node": node, "node2": node2})


def test_inner_mtu_fix_lowers_both_veth_ends_or_raises_the_underlay_then_the_tunnel():
    snap = overlay()
    vx0 = snap.ns("node").link_by_name("vx0")
    lower, raise_ = inner_mtu_fix(snap, "node", vx0, [("pod", snap.ns("pod").link_by_name("eth0"))], 1500)
    assert [c.render() for c in lower] == ["ip netns exec pod ip link set dev eth0 mtu 1450",
                                           "ip netns exec node ip link set dev veth-pod mtu 1450"]
    assert [c.render() for c in raise_] == ["ip netns exec node ip link set dev eth0 mtu 1550",
                                            "ip netns exec node2 ip link set dev eth0 mtu 1550",
                                            "ip netns exec node ip link set dev vx0 mtu 1500"]
    model = applied(snap, raise_, "host")
    assert model.ns("node").link_by_name("vx0").mtu == 1500 and model.ns("node2").link_by_name("eth0").mtu == 1550
    with pytest.raises(Refused):          # the tunnel first: above its underlay, refused
        applied(snap, [Command(("ip", "link", "set", "dev", "vx0", "mtu", "1500"), "node")], "host")
    model = applied(snap, lower, "host")
    assert model.ns("pod").link_by_name("eth0").mtu == 1450


def test_inner_mtu_fix_without_an_underlay_only_lowers():
    snap = overlay()
    vx0 = snap.ns("node").link_by_name("vx0")
    vx0.tunnel_dev = None
    candidates = inner_mtu_fix(snap, "node", vx0, [("pod", snap.ns("pod").link_by_name("eth0"))], 1500)
    assert len(candidates) == 1
