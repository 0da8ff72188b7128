"""The walk through tunnels (diagnose/tunnel.py): on the overlay labs' recorded state (every fault
named first, on its node, with a fix proven on the model) and on hand-written state for the kinds
this kernel has no module for (GENEVE, ipip, sit, GRE, gretap), an IPv6 underlay, a multicast
group, and a path whose outer packet leaves the machine."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpftools.diagnose import prover_for, replay
from bpftools.diagnose.capture import _gre, _iptun, _vxlan
from bpftools.commands import rendered
from bpftools.diagnose.records import Hop, HopCounts, Outer
from bpftools.diagnose.state import Addr, FdbEntry, Link, Neighbour, Route, Snapshot, default_rules
from bpftools.diagnose.tunnel import describe, leaving_lines, targets
from bpftools.diagnose.verdict import build_causes, counted_cutoff, story, verdict, where_it_stops
from bpftools.diagnose.walk import Walker
from bpftools.lab import TOPOLOGIES

from test_diagnose_checks import ns as _ns, veth


def ns(*args, **kw):
    return _ns(*args, rules=default_rules(4) + default_rules(6), **kw)

OVERLAY = Path(__file__).parent / "fixtures" / "diagnose" / "overlay"
RECORDED = sorted(OVERLAY.glob("*.json")) + sorted(OVERLAY.glob("ipv6/*.json"))


def _id(path: Path) -> str:
    return f"ipv6-{path.stem}" if path.parent.name == "ipv6" else path.stem


def _topology_and_fault(path: Path):
    topology = max((t for t in TOPOLOGIES if path.stem.startswith(f"{t}-")), key=len)
    return TOPOLOGIES[topology], path.stem[len(topology) + 1:], 6 if path.parent.name == "ipv6" else 4


def _complete(data: dict) -> bool:
    """Recordings made by the walk before it crossed tunnels hold only what it visited."""
    return len(data["namespaces"]) >= 4


def request(walk):
    return [(h.netns.split("-")[-1], h.iif, h.oif, h.action) for h in walk.hops if h.direction == "request"]


# -- the overlay labs, recorded ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [p for p in RECORDED if p.stem.endswith("-healthy")], ids=_id)
def test_healthy_overlay_crosses_the_tunnel_both_ways_and_fails_no_check(path):
    walk = replay(json.loads(path.read_text()))
    assert walk.request_delivered and walk.reply_delivered, request(walk)
    assert [f.detail for f in walk.findings if not f.ok] == []
    for direction in ("request", "reply"):
        hops = [h for h in walk.hops if h.direction == direction]
        actions = [h.action for h in hops]
        assert "tunnel" in actions and "decap" in actions, actions
        tunnel = hops[actions.index("tunnel")]
        assert tunnel.outer.kind == "vxlan" and tunnel.outer.proto == "udp"
        assert (tunnel.outer.vni, tunnel.outer.dport) in ((42, 4789), (1, 8472))
        underlay = hops[actions.index("tunnel") + 1:actions.index("decap") + 1]
        assert underlay and all(h.outer == tunnel.outer and h.dst == tunnel.outer.dst for h in underlay)
        assert hops[-1].action == "deliver" and hops[actions.index("decap")].netns != hops[0].netns


def test_l2_overlay_path_in_order():
    walk = replay(json.loads((OVERLAY / "overlay-l2-healthy.json").read_text()))
    assert request(walk) == [("pod1", None, "eth0", "send"), ("node1", "veth-pod", "vxlan0", "bridge"),
                             ("node1", None, "vxlan0", "tunnel"), ("node1", None, "underlay", "send"),
                             ("node2", "underlay", None, "decap"), ("node2", "vxlan0", "veth-pod", "bridge"),
                             ("pod2", "eth0", None, "deliver")]
    outer = walk.hops[2].outer
    assert describe(outer) == "VXLAN (UDP port 4789, VNI 42) 10.80.0.1 -> 10.80.0.2"


def test_flannel_path_routes_into_flannel_1_and_out_of_the_far_one():
    walk = replay(json.loads((OVERLAY / "overlay-flannel-healthy.json").read_text()))
    assert request(walk) == [("pod1", None, "eth0", "send"), ("node1", "veth-pod", "cni0", "bridge"),
                             ("node1", "cni0", "flannel.1", "forward"), ("node1", None, "flannel.1", "tunnel"),
                             ("node1", None, "underlay", "send"), ("node2", "underlay", None, "decap"),
                             ("node2", "flannel.1", "cni0", "forward"), ("pod2", "eth0", None, "deliver")]
    tunnel = walk.hops[3]
    assert "FDB entry for 0e:f1:00:00:00:02" in tunnel.note   # the MAC of flanneld's static neighbour entry
    assert (tunnel.outer.src, tunnel.outer.dst) == ("10.82.0.1", "10.82.0.2")


@pytest.mark.parametrize("path", [p for p in RECORDED if not p.stem.endswith("-healthy")], ids=_id)
def test_overlay_fault_is_named_first_on_its_node_with_a_proven_fix(path):
    data = json.loads(path.read_text())
    if not _complete(data):
        pytest.skip("recorded before the walk crossed tunnels: the far node is missing (re-record with "
                    "tests/unit/fixtures/diagnose/overlay/record.py)")
    topo, fault, family = _topology_and_fault(path)
    walk = replay(data)
    causes = build_causes(walk.findings, [], prover_for(data))
    assert causes and causes[0].cause == fault, [(c.cause, c.netns, c.detail) for c in causes]
    at = topo.fault(fault, family).at
    assert causes[0].netns == topo.ns(at).replace(topo.ns(at).split("-overlay")[0], "bpftlab"), causes[0]
    assert causes[0].proven and causes[0].fix, causes[0]
    assert all(cmd.startswith("ip netns exec bpftlab-") and "<" not in cmd for cmd in rendered(causes[0].fix))
    assert [c for c in causes[1:] if not c.proven] == []


def test_the_faults_name_live_values():
    def first(name):
        data = json.loads((OVERLAY / f"{name}.json").read_text())
        return build_causes(replay(data).findings, [], prover_for(data))[0]

    def fix(name):
        return rendered(first(name).fix)

    cause = first("overlay-l2-tunnel_firewall")
    assert "UDP port 4789, VNI 42" in cause.detail and "10.80.0.1 -> 10.80.0.2" in cause.detail
    assert "--dport 4789 -j DROP" in cause.detail
    cause = first("overlay-l2-tunnel_id_mismatch")
    assert "carry VNI 42, but vxlan0 has VNI 43" in cause.detail
    assert any("type vxlan id 42" in cmd for cmd in rendered(cause.fix))
    cause = first("overlay-l2-tunnel_port_mismatch")
    assert "UDP port 4789" in cause.detail and "listens on port 4790" in cause.detail
    assert fix("overlay-l2-tunnel_no_fdb") == [
        "ip netns exec bpftlab-overlay-l2-node1 bridge fdb append 00:00:00:00:00:00 dev vxlan0 dst 10.80.0.2"]
    assert fix("overlay-flannel-tunnel_no_fdb") == [
        "ip netns exec bpftlab-overlay-flannel-node1 bridge fdb add 0e:f1:00:00:00:02 dev flannel.1 dst 10.82.0.2"]
    cause = first("overlay-l2-tunnel_remote_not_local")
    assert "no namespace has the address 10.80.0.2" in cause.detail and "10.80.0.12" in cause.detail
    assert fix("overlay-l2-mtu") == ["ip netns exec bpftlab-overlay-l2-pod1 ip link set dev eth0 mtu 1450"]


# -- hand-written state: kinds this kernel lacks, IPv6 underlays, groups, leaving the machine -------------------

def _nodes(kind, far_kind=None, underlay=("10.9.0.1", "10.9.0.2"), prefix=24, **tunnel):
    """a - n1 (br0: pa, tun) ==kind over u0/u1== n2 (br0: tun, pb) - b, pods 10.5.0.1/.2 (L2 kinds);
    for L3 kinds: n1 routes 10.6.0.0/24 into tun, n2 has 10.6.0.1 on its tun (pods: none)."""
    local, remote = underlay
    l2 = kind in ("vxlan", "geneve", "gretap")

    def tun(ifindex, name_kind, mine, theirs, **kw):
        attrs = dict(tunnel, **kw)
        return Link(ifindex, "tun0", name_kind, master=4 if l2 else None, tunnel_local=mine, tunnel_remote=theirs,
                    mtu=1400, mac=f"0a:00:00:00:00:{ifindex:02x}", **attrs)

    n1_tun = tun(3, kind, local, remote)
    n2_tun = tun(3, far_kind or kind, remote, local, **tunnel.get("far", {}))
    n1_tun.__dict__.pop("far", None)
    links1 = [veth(2, "pa", "a", 2, master=4), n1_tun, Link(4, "br0", "bridge", mtu=1400), veth(5, "u0", "n2", 5)]
    links2 = [veth(2, "pb", "b", 2, master=4), n2_tun, Link(4, "br0", "bridge", mtu=1400), veth(5, "u1", "n1", 5)]
    net = Addr(5, local, prefix).network
    wire = [] if prefix < 32 else [Route(dst=str(net.network_address), dst_len=prefix, oif=5)]
    n1 = ns("n1", links1, [Addr(5, local, prefix)], wire)
    n2 = ns("n2", links2, [Addr(5, remote, prefix)], wire)
    a = ns("a", [veth(2, "eth0", "n1", 2, mtu=1400)], [Addr(2, "10.5.0.1", 24)])
    b = ns("b", [veth(2, "eth0", "n2", 2, mtu=1400)], [Addr(2, "10.5.0.2", 24)])
    return Snapshot({"a": a, "n1": n1, "n2": n2, "b": b})


def _far(snapshot, **changes):
    for key, value in changes.items():
        setattr(snapshot.ns("n2").link_by_name("tun0"), key, value)
    return snapshot


def _first(walk):
    causes = build_causes(walk.findings, [])
    return (causes[0].cause, causes[0].netns, causes[0].ifname) if causes else None


def test_geneve_crosses_with_its_vni_and_port_and_a_vni_mismatch_is_named_on_the_receiver():
    walk = Walker(_nodes("geneve", vni=7, dstport=6081)).walk("a", "10.5.0.2")
    assert walk.request_delivered and walk.reply_delivered, request(walk)
    tunnel = next(h for h in walk.hops if h.action == "tunnel")
    assert tunnel.outer == Outer("geneve", "10.9.0.1", "10.9.0.2", "udp", 6081, 7, None)
    walk = Walker(_far(_nodes("geneve", vni=7, dstport=6081), vni=8)).walk("a", "10.5.0.2")
    assert _first(walk) == ("tunnel_id_mismatch", "n2", "tun0")


def test_gretap_keys_must_match():
    walk = Walker(_nodes("gretap", tunnel_okey=5, tunnel_ikey=5)).walk("a", "10.5.0.2")
    assert walk.request_delivered and walk.reply_delivered, request(walk)
    assert next(h for h in walk.hops if h.action == "tunnel").outer.proto == "gre"
    walk = Walker(_far(_nodes("gretap", tunnel_okey=5, tunnel_ikey=5), tunnel_ikey=6)).walk("a", "10.5.0.2")
    assert _first(walk) == ("tunnel_id_mismatch", "n2", "tun0")


def test_vxlan_over_an_ipv6_underlay():
    snapshot = _nodes("vxlan", underlay=("fd00:9::1", "fd00:9::2"), prefix=64, vni=42, dstport=4789)
    walk = Walker(snapshot).walk("a", "10.5.0.2")
    assert walk.request_delivered and walk.reply_delivered, request(walk)
    tunnel = next(h for h in walk.hops if h.action == "tunnel")
    assert (tunnel.outer.src, tunnel.outer.dst, tunnel.outer.vni) == ("fd00:9::1", "fd00:9::2", 42)
    # a port mismatch, named where nothing listens
    walk = Walker(_far(_nodes("vxlan", underlay=("fd00:9::1", "fd00:9::2"), prefix=64, vni=42, dstport=4789),
                       dstport=4790)).walk("a", "10.5.0.2")
    assert _first(walk) == ("tunnel_port_mismatch", "n2", "tun0")


def test_vxlan_underlay_firewall_on_the_sender_is_named_there():
    snapshot = _nodes("vxlan", vni=42, dstport=4789)
    snapshot.ns("n1").iptables_save = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                                      "-A OUTPUT -p udp -m udp --dport 4789 -j DROP\nCOMMIT\n")
    walk = Walker(snapshot).walk("a", "10.5.0.2")
    assert _first(walk) == ("tunnel_firewall", "n1", "u0")
    finding = next(f for f in walk.findings if f.cause == "tunnel_firewall")
    assert "VXLAN (UDP port 4789, VNI 42) 10.9.0.1 -> 10.9.0.2" in finding.detail


def test_vxlan_to_a_multicast_group_is_not_followed_and_says_so():
    snapshot = _nodes("vxlan", vni=42, dstport=4789)
    for state in (snapshot.ns("n1"), snapshot.ns("n2")):
        link = state.link_by_name("tun0")
        link.tunnel_remote, link.tunnel_group = None, "239.1.1.1"
        link.fdb = [FdbEntry("00:00:00:00:00:00", "239.1.1.1")]
    walk = Walker(snapshot).walk("a", "10.5.0.2")
    assert not walk.request_delivered
    assert walk.hops[-1].action == "leave" and "multicast group 239.1.1.1" in walk.hops[-1].note
    assert targets(snapshot.ns("n1").link_by_name("tun0")).group == "239.1.1.1"


def test_vxlan_fdb_entry_port_and_vni_override_the_devices():
    link = Link(3, "vx0", "vxlan", vni=42, dstport=4789,
                fdb=[FdbEntry("00:00:00:00:00:00", "10.0.0.2"), FdbEntry("02:00:00:00:00:09", "10.0.0.3", 4790, 43)])
    assert [(t.dst, t.dport, t.vni) for t in targets(link, "02:00:00:00:00:09").found] == [("10.0.0.3", 4790, 43)]
    assert [(t.dst, t.dport, t.vni) for t in targets(link, "02:00:00:00:00:08").found] == [("10.0.0.2", 4789, 42)]
    assert [t.dst for t in targets(link, None).found] == ["10.0.0.2"]


def _l3(kind, inner=("10.6.0.2", "10.6.0.1"), **tunnel):
    """n1 (tun0 inner .2, route to n2's .1 into tun0) ==kind over u0/u1== n2 (tun0 inner .1)."""
    def tun(mine, theirs, **kw):
        return Link(3, "tun0", kind, noarp=True, mtu=1400, tunnel_local=mine, tunnel_remote=theirs,
                    **dict(tunnel, **kw))

    n1 = ns("n1", [tun("10.9.0.1", "10.9.0.2"), veth(5, "u0", "n2", 5)], [Addr(5, "10.9.0.1", 24),
                                                                          Addr(3, inner[0], 32, peer=inner[1])],
            [Route(dst=inner[1], dst_len=32 if ":" not in inner[1] else 128, oif=3)])
    n2 = ns("n2", [tun("10.9.0.2", "10.9.0.1"), veth(5, "u1", "n1", 5)], [Addr(5, "10.9.0.2", 24),
                                                                          Addr(3, inner[1], 32, peer=inner[0])],
            [Route(dst=inner[0], dst_len=32 if ":" not in inner[0] else 128, oif=3)])
    return Snapshot({"n1": n1, "n2": n2})


def test_ipip_and_gre_cross_and_the_gre_key_is_checked():
    walk = Walker(_l3("ipip")).walk("n1", "10.6.0.1")
    assert walk.request_delivered and walk.reply_delivered, request(walk)
    assert [h.action for h in walk.hops if h.direction == "request"] == ["send", "tunnel", "send", "decap", "deliver"]
    assert next(h for h in walk.hops if h.action == "tunnel").outer.proto == "ipip"
    walk = Walker(_l3("gre", tunnel_ikey=9, tunnel_okey=9)).walk("n1", "10.6.0.1")
    assert walk.request_delivered and walk.reply_delivered
    snapshot = _l3("gre", tunnel_ikey=9, tunnel_okey=9)
    snapshot.ns("n2").link_by_name("tun0").tunnel_ikey = None
    assert _first(Walker(snapshot).walk("n1", "10.6.0.1")) == ("tunnel_id_mismatch", "n2", "tun0")


def test_sit_carries_ipv6_over_ipv4():
    snapshot = _l3("sit", inner=("fd00:6::2", "fd00:6::1"))
    for state in (snapshot.ns("n1"), snapshot.ns("n2")):
        state.addrs[-1].prefixlen = 128
    walk = Walker(snapshot).walk("n1", "fd00:6::1")
    assert walk.request_delivered and walk.reply_delivered, request(walk)
    assert next(h for h in walk.hops if h.action == "tunnel").outer.proto == "ipv6"


def test_ipip_remote_that_nobody_has_points_at_the_node_with_the_other_end():
    snapshot = _l3("ipip")
    snapshot.ns("n1").link_by_name("tun0").tunnel_remote = "10.9.0.99"
    walk = Walker(snapshot).walk("n1", "10.6.0.1")
    finding = next(f for f in walk.findings if not f.ok)
    assert (finding.cause, finding.netns) == ("tunnel_remote_not_local", "n1")
    assert "10.9.0.2" in finding.detail


def test_an_outer_packet_that_leaves_the_machine_says_which_where_and_what_to_run_there():
    n1 = ns("n1", [veth(2, "pa", "a", 2, master=4),
                   Link(3, "vx0", "vxlan", master=4, vni=42, dstport=4789, tunnel_local="192.0.2.1",
                        tunnel_remote="198.51.100.7", mtu=1450),
                   Link(4, "br0", "bridge", mtu=1450), Link(5, "eth0", "", mac="02:00:00:00:00:05")],
            [Addr(5, "192.0.2.1", 24)], [Route(oif=5, gateway="192.0.2.254")],
            neighbours=[Neighbour(5, "192.0.2.254", "reachable", "02:00:00:00:00:fe")])
    a = ns("a", [veth(2, "eth0", "n1", 2, mtu=1450)], [Addr(2, "10.5.0.1", 24)],
           neighbours=[Neighbour(2, "10.5.0.2", "reachable", "02:00:00:00:00:77")])
    walk = Walker(Snapshot({"a": a, "n1": n1})).walk("a", "10.5.0.2")
    leave = walk.hops[-1]
    assert leave.action == "leave" and leave.oif == "eth0" and leave.nexthop == "192.0.2.254"
    assert leave.outer.dst == "198.51.100.7" and "bpftools trace-drops --all-netns --src 10.5.0.1 --dst 10.5.0.2" \
        in leave.note
    assert "not followed further" not in leave.note
    result = verdict("10.5.0.2", "a", walk, 3, 0, [])
    for hop in result.path:
        hop.packets = HopCounts(None, 3 if hop is result.path[-1] else None, "echo")
    assert leaving_lines(result.path) == [
        "  the request leaves encapsulated: VXLAN (UDP port 4789, VNI 42) 192.0.2.1 -> 198.51.100.7 through eth0 in "
        "n1 to 192.0.2.254 (3 echo counted leaving)",
        "  on the far node, run: bpftools trace-drops --all-netns --src 10.5.0.1 --dst 10.5.0.2"]
    assert "on the far node, run:" in story(result)
    assert "through eth0 in n1 (the outer packet VXLAN (UDP port 4789, VNI 42) 192.0.2.1 -> 198.51.100.7 leaves " \
        "through eth0 (a physical interface) to 192.0.2.254; on the far node, run: bpftools trace-drops" \
        in result.causes[0].evidence[-1]


# -- capture: IFLA_INFO_DATA -----------------------------------------------------------------------------------

class _Data(dict):
    def get_attr(self, name):
        return self.get(name)


def test_capture_splits_vxlan_remote_from_group_and_reads_port_dev_learning():
    link = Link(3, "vx0", "vxlan")
    _vxlan(link, _Data(IFLA_VXLAN_ID=42, IFLA_VXLAN_GROUP="10.0.0.2", IFLA_VXLAN_LOCAL="10.0.0.1",
                       IFLA_VXLAN_PORT=4789, IFLA_VXLAN_LINK=5, IFLA_VXLAN_LEARNING=0))
    assert (link.vni, link.tunnel_remote, link.tunnel_group, link.dstport, link.tunnel_dev, link.learning) == \
        (42, "10.0.0.2", None, 4789, 5, False)
    link = Link(3, "vx1", "vxlan")
    _vxlan(link, _Data(IFLA_VXLAN_ID=7, IFLA_VXLAN_GROUP6="ff05::100", IFLA_VXLAN_LOCAL6="fd00::1"))
    assert (link.tunnel_remote, link.tunnel_group, link.tunnel_local, link.learning) == \
        (None, "ff05::100", "fd00::1", True)


def test_capture_reads_ip_tunnels_and_gre_keys():
    link = Link(3, "tun1", "ipip")
    _iptun("IFLA_IPIP_")(link, _Data(IFLA_IPIP_LOCAL="10.0.0.1", IFLA_IPIP_REMOTE="10.0.0.2", IFLA_IPIP_LINK=2))
    assert (link.tunnel_local, link.tunnel_remote, link.tunnel_dev) == ("10.0.0.1", "10.0.0.2", 2)
    link = Link(3, "gre1", "gre")
    _gre("IFLA_GRE_")(link, _Data(IFLA_GRE_LOCAL="10.0.0.1", IFLA_GRE_REMOTE="0.0.0.0", IFLA_GRE_IFLAGS=0x2000,
                                  IFLA_GRE_IKEY=9, IFLA_GRE_OFLAGS=0, IFLA_GRE_OKEY=0))
    assert (link.tunnel_remote, link.tunnel_ikey, link.tunnel_okey) == (None, 9, None)


def test_old_recordings_without_fdb_entries_still_cross():
    data = json.loads((Path(__file__).parent / "fixtures" / "diagnose" / "bridge-healthy.json").read_text())
    assert replay(data).request_delivered


def test_an_underlay_into_a_namespace_we_cannot_enter_is_where_the_outer_packet_leaves():
    snapshot = _nodes("vxlan", vni=42, dstport=4789)
    n1 = snapshot.ns("n1")
    n1.link_by_name("u0").peer_netns = "nsid:7"   # the underlay's other end: not a namespace we can read
    snapshot = Snapshot({"a": snapshot.ns("a"), "n1": n1})
    walk = Walker(snapshot).walk("a", "10.5.0.2")
    leave = walk.hops[-1]
    assert leave.action == "leave" and leave.netns == "n1" and leave.oif == "u0" and leave.outer.dst == "10.9.0.2"
    assert "on the far node, run: bpftools trace-drops --all-netns --src 10.5.0.1 --dst 10.5.0.2" in leave.note
    assert leaving_lines(walk.hops)[0].startswith("  the request leaves encapsulated: VXLAN (UDP port 4789, VNI 42)")


# -- the per-hop counts across a tunnel -----------------------------------------------------------------------

def _overlay_counts(underlay_tx, decap_rx, vxlan_rx, underlay_counted=True):
    """pod1 -> node1 (br0 -> vxlan0, encapsulated out of underlay) -> node2 (underlay, vxlan0 -> br0) -> pod2."""
    outer = Outer("vxlan", "10.80.0.1", "10.80.0.2", "udp", 4789, 42)

    def hop(netns, iif, oif, action, inn, out, carried=None):
        underlay = carried is not None and action != "tunnel"
        counts = HopCounts(inn, out, "echo") if underlay_counted or not underlay else None
        return Hop("request", netns, iif, oif, action, "10.81.0.1", "10.81.0.2", outer=carried, packets=counts)

    return [hop("pod1", None, "eth0", "send", None, 3), hop("node1", "veth-pod", "vxlan0", "bridge", 3, 3),
            hop("node1", None, "vxlan0", "tunnel", None, 3, outer),
            hop("node1", None, "underlay", "send", None, underlay_tx, outer),
            hop("node2", "underlay", None, "decap", decap_rx, None, outer),
            hop("node2", "vxlan0", "veth-pod", "bridge", vxlan_rx, vxlan_rx), hop("pod2", "eth0", None, "deliver",
                                                                                 vxlan_rx, None)]


def test_counts_on_the_underlay_say_which_side_of_the_tunnel_the_echoes_stop():
    assert where_it_stops(_overlay_counts(3, 3, 3)) is None
    assert where_it_stops(_overlay_counts(0, 0, 0)) == \
        "echo requests: 3 went into vxlan0 in node1, 0 left node1 (underlay) encapsulated"   # the sender's OUTPUT
    assert where_it_stops(_overlay_counts(3, 0, 0)) == \
        "echo requests: 3 left node1 (underlay), 0 arrived in node2 (underlay)"               # lost between nodes
    assert where_it_stops(_overlay_counts(3, 3, 0)) == \
        "echo requests: 3 arrived in node2 (underlay) encapsulated, 0 arrived in node2 (vxlan0)"   # the receiver's
    # underlay hops without echo counts: the tunnel's ends still tell
    assert where_it_stops(_overlay_counts(3, 3, 0, underlay_counted=False)) == \
        "echo requests: 3 left node1 (vxlan0), 0 arrived in node2 (vxlan0)"


def test_underlay_counts_leave_which_causes_are_claimable_as_they_were():
    path = _overlay_counts(3, 3, 0)
    assert counted_cutoff(path) == {"request": 5}   # node2's vxlan0, as without underlay counts
    assert counted_cutoff(_overlay_counts(0, 0, 0)) == {"request": 5}
