"""Drops of tunnel packets on a real VXLAN overlay: two namespaces joined by an underlay veth, a
VXLAN device in each, real pings through it, and the receiving side's firewall dropping the
outer UDP packets. trace-drops must show the ping inside (text, JSON, pcap comment) and match
--dst on the inner flow and --port on the outer one; diagnose's evidence (drop tracing and the
per-hop counters) must tie the outer packets to the ping on the underlay interfaces."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from bpftools.topology import run
from bpftools_proc import BpftoolsProcess

VNI = 42


@dataclass
class Overlay:
    """ns_a (ul-a 10.61.0.1) == underlay veth == (ul-b 10.61.0.2) ns_b; vx0 VNI 42 on both,
    10.62.0.1/24 in ns_a, 10.62.0.2/24 in ns_b."""
    ns_a: str
    ns_b: str
    underlay_a: str = "10.61.0.1"
    underlay_b: str = "10.61.0.2"
    inner_a: str = "10.62.0.1"
    inner_b: str = "10.62.0.2"
    port: int = 4789


@pytest.fixture
def overlay(topo, request) -> Overlay:
    """The overlay on VXLAN port 4789, or on the port given by indirect parametrisation."""
    net = Overlay(topo.netns("ova"), topo.netns("ovb"), port=getattr(request, "param", 4789))
    for ns in (net.ns_a, net.ns_b):  # no IPv6 chatter (router solicitations) through the tunnel
        topo.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", 1)
        topo.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", 1)
    topo.veth(net.ns_a, "ul-a", net.ns_b, "ul-b", f"{net.underlay_a}/24", f"{net.underlay_b}/24")
    for ns, dev, local, remote, inner in ((net.ns_a, "ul-a", net.underlay_a, net.underlay_b, net.inner_a),
                                          (net.ns_b, "ul-b", net.underlay_b, net.underlay_a, net.inner_b)):
        run("ip", "link", "add", "vx0", "type", "vxlan", "id", str(VNI), "local", local, "remote", remote,
            "dstport", str(net.port), "dev", dev, netns=ns)
        run("ip", "addr", "add", f"{inner}/24", "dev", "vx0", netns=ns)
        run("ip", "link", "set", "vx0", "up", netns=ns)
    # the far end's MAC known in advance: the echo requests themselves are encapsulated, not ARP
    mac_b = json.loads(run("ip", "-j", "link", "show", "vx0", netns=net.ns_b).stdout)[0]["address"]
    run("ip", "neigh", "replace", net.inner_b, "lladdr", mac_b, "dev", "vx0", "nud", "permanent", netns=net.ns_a)
    return net


def drop_underlay_vxlan(net: Overlay) -> None:
    run("iptables", "-A", "INPUT", "-p", "udp", "--dport", str(net.port), "-j", "DROP", netns=net.ns_b)


def ping(net: Overlay, count: int = 3) -> None:
    """Real echo requests through the overlay (replies or not: -w bounds it)."""
    run("ping", "-n", "-c", str(count), "-i", "0.05", "-w", "1", net.inner_b, netns=net.ns_a, check=False)


def tunnel_drops(lines: list) -> list:
    return [e for e in lines if e.get("type") == "drop" and e.get("encap")]


def echo_inside(event: dict, net: Overlay) -> bool:
    inner = event["inner"] or {}
    return (inner.get("proto"), inner.get("src"), inner.get("dst"), inner.get("icmp_type")) == \
        ("icmp", net.inner_a, net.inner_b, 8)


def traced_json(net: Overlay, *args: str) -> BpftoolsProcess:
    return BpftoolsProcess("trace-drops", "--json", "--no-hints", "--netns", net.ns_b, *args)


@pytest.mark.feature("vxlan_module")
def test_dropped_vxlan_packet_shows_the_ping_inside(overlay, tmp_path):
    from scapy.utils import RawPcapNgReader

    net = overlay
    drop_underlay_vxlan(net)
    path = tmp_path / "tunnel.pcapng"
    with traced_json(net, "--pcap", str(path)) as everything, traced_json(net, "--dst", net.inner_b) as by_inner, \
            traced_json(net, "--port", "4789") as by_outer, \
            BpftoolsProcess("trace-drops", "--no-hints", "--netns", net.ns_b, "--count", "1") as text:
        ping(net)
        for proc in (everything, by_inner, by_outer):
            proc.wait_for(lambda lines: [e for e in tunnel_drops(lines) if echo_inside(e, net)],
                          "a dropped VXLAN packet carrying the echo request")
            assert proc.stop() == 0, proc.stderr
        assert text.wait() == 0, text.stderr

    events = [e for e in tunnel_drops(everything.json_lines()) if echo_inside(e, net)]
    first = events[0]
    assert (first["reason"], first["ifname"], first["proto"], first["src"], first["dst"], first["dport"]) == \
        ("NETFILTER_DROP", "ul-b", "udp", net.underlay_a, net.underlay_b, 4789), first
    assert first["encap"] == {"kind": "vxlan", "vni": VNI, "key": None, "dport": 4789}
    assert first["inner"] == {"family": "ipv4", "proto": "icmp", "src": net.inner_a, "dst": net.inner_b,
                              "sport": None, "dport": None, "icmp_type": 8, "icmp_code": 0}

    # --dst matched the inner flow (the outer goes to the underlay address), --port the outer one
    assert all(echo_inside(e, net) for e in by_inner.json_lines() if e["type"] == "drop")
    assert all(e["dport"] == 4789 for e in by_outer.json_lines() if e["type"] == "drop")

    line = text.stdout.splitlines()[0]
    assert (f"NETFILTER_DROP udp {net.underlay_a}:" in line and
            f" > {net.underlay_b}:4789 vxlan vni {VNI} [icmp {net.inner_a} > {net.inner_b} echo-request]" in line), line

    records = list(RawPcapNgReader(str(path)))
    tunnel_comments = [meta.comments[1] for _, meta in records if len(meta.comments) > 1]
    assert (f"bpftools tunnel: vxlan vni {VNI} udp port 4789, inner icmp {net.inner_a} > {net.inner_b} "
            "echo-request").encode() in tunnel_comments, [meta.comments for _, meta in records]


@pytest.mark.feature("vxlan_module")
@pytest.mark.parametrize("overlay", [4790], indirect=True)
def test_a_vxlan_port_is_opened_once_configured(overlay):
    net = overlay
    drop_underlay_vxlan(net)
    with traced_json(net, "--udp-port", "vxlan=4790") as told, traced_json(net, "--dport", "4790") as untold:
        ping(net)
        told.wait_for(lambda lines: [e for e in tunnel_drops(lines) if echo_inside(e, net)],
                      "a dropped VXLAN packet on port 4790 carrying the echo request")
        untold.wait_for(lambda lines: [e for e in lines if e["type"] == "drop"], "a drop to port 4790")
        assert told.stop() == 0 and untold.stop() == 0, told.stderr + untold.stderr
    assert tunnel_drops(told.json_lines())[0]["encap"] == {"kind": "vxlan", "vni": VNI, "key": None, "dport": 4790}
    assert not tunnel_drops(untold.json_lines())  # not a tunnel port it knows: an ordinary UDP packet


@pytest.mark.feature("vxlan_module")
def test_diagnose_evidence_ties_the_outer_drop_and_the_underlay_hops_to_the_ping(overlay):
    from bpftools.diagnose.live import TraceDropsSession, relevant_drops, run_live
    from bpftools.diagnose.verdict import _drop_text
    from bpftools.netlink import resolve_interface

    net = overlay
    drop_underlay_vxlan(net)
    live = run_live(net.ns_a, net.inner_b, 3, 1.0, 56, [net.ns_a, net.ns_b], TraceDropsSession, src=net.inner_a)
    assert live.received == 0 and live.hop_counts is not None, live.notes

    drops = relevant_drops(live.drops, net.inner_a, net.inner_b)
    ours = [d for d in drops if d.encap]
    assert ours and ours[0].reason == "NETFILTER_DROP" and ours[0].inner.dst == net.inner_b, drops
    text = _drop_text(ours[0])
    assert text.endswith(f"udp {net.underlay_a}:{ours[0].sport} > {net.underlay_b}:4789 vxlan vni {VNI} "
                         f"[icmp {net.inner_a} > {net.inner_b} echo-request]"), text

    ul_a = resolve_interface("ul-a", net.ns_a).ifindex
    ul_b = resolve_interface("ul-b", net.ns_b).ifindex
    counts = live.hop_counts
    assert counts.get((net.ns_a, ul_a, "tx", 8), 0) >= 1, counts   # the encapsulated request leaves
    assert counts.get((net.ns_b, ul_b, "rx", 8), 0) >= 1, counts   # and arrives, before the firewall


@pytest.mark.feature("vxlan_module")
@pytest.mark.parametrize("overlay", [4789, 4790], indirect=True)
def test_per_hop_counter_counts_requests_and_replies_on_the_underlay(overlay):
    """On the default port, and on another one the path's VXLAN device uses (diagnose passes it)."""
    from bpftools.diagnose.live import HopCounter
    from bpftools.netlink import resolve_interface
    from waiting import settled

    net = overlay
    ul_a = resolve_interface("ul-a", net.ns_a).ifindex
    ul_b = resolve_interface("ul-b", net.ns_b).ifindex
    with HopCounter([net.ns_a, net.ns_b], net.inner_a, net.inner_b, tunnel_ports=[("vxlan", net.port)]) as counter:
        ping(net, count=3)
        counts = settled(counter.counts, "the per-hop counts", at_least=lambda c: c.get((net.ns_a, ul_a, "rx", 0)))
    assert counts[(net.ns_a, ul_a, "tx", 8)] == counts[(net.ns_b, ul_b, "rx", 8)] == 3, counts
    assert counts[(net.ns_b, ul_b, "tx", 0)] == counts[(net.ns_a, ul_a, "rx", 0)] == 3, counts
