"""Each filter of trace-drops excludes what it should, in the kernel (interface in a
namespace, source/destination address, protocol, reason)."""
from __future__ import annotations

import time

from bpftools.topology import run
from bpftools.traffic import resolve_neighbour, send_udp, tcp_connect
from bpftools_proc import BpftoolsProcess


def traced(*args: str) -> BpftoolsProcess:
    return BpftoolsProcess("trace-drops", "--json", "--no-hints", *args)


def finish(proc: BpftoolsProcess) -> list:
    time.sleep(0.3)
    assert proc.stop() == 0, proc.stderr
    return [e for e in proc.json_lines() if e["type"] == "drop"]


def test_interface_is_matched_in_its_namespace_only(veth_pair, topo):
    # a second pair with the same interface names in two other namespaces
    ns_c, ns_d = topo.netns("c"), topo.netns("d")
    topo.veth(ns_c, "va", ns_d, "vb", "10.11.0.1/24", "10.11.0.2/24")
    for src in (veth_pair.ns_a, ns_c):
        resolve_neighbour(src, veth_pair.addr_b)
    with traced("vb", "--netns", veth_pair.ns_b) as proc:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6001, count=3, gap=0.02)  # wanted
        send_udp(ns_c, veth_pair.addr_b, 6002, count=3, gap=0.02)  # same names, other namespace
        send_udp(veth_pair.ns_b, "127.0.0.1", 6003, count=3, gap=0.02)  # same namespace, lo
        events = finish(proc)
    ours = [e for e in events if e["reason"] == "NO_SOCKET"]
    assert [e["dport"] for e in ours] == [6001] * 3, events
    assert {(e["netns"], e["ifname"]) for e in events} == {(veth_pair.ns_b, "vb")}


def test_source_and_destination_filters(veth_pair):
    run("ip", "addr", "add", "10.11.0.3/24", "dev", "vb", netns=veth_pair.ns_b)
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    resolve_neighbour(veth_pair.ns_a, "10.11.0.3")
    with traced("--netns", veth_pair.ns_b, "--src", "10.11.0.0/24", "--dst", "10.11.0.3") as proc:
        send_udp(veth_pair.ns_a, "10.11.0.3", 6101, count=2, gap=0.02)  # wanted
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6102, count=2, gap=0.02)  # other destination
        send_udp(veth_pair.ns_b, "127.0.0.1", 6103, count=2, gap=0.02)  # other source
        events = finish(proc)
    assert [(e["src"], e["dst"], e["dport"]) for e in events] == [("10.11.0.1", "10.11.0.3", 6101)] * 2


def test_protocol_filter(veth_pair):
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with traced("--netns", veth_pair.ns_b, "--proto", "tcp") as proc:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6201, count=2, gap=0.02)  # excluded
        tcp_connect(veth_pair.ns_a, veth_pair.addr_b, 6202)  # SYN to a closed port: NO_SOCKET, tcp
        events = finish(proc)
    assert events and {(e["proto"], e["dport"]) for e in events} == {("tcp", 6202)}, events


def test_reason_filter(veth_pair):
    run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "6301", "-j", "DROP", netns=veth_pair.ns_b)
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with traced("--netns", veth_pair.ns_b, "--reason", "NETFILTER_DROP") as proc:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6301, count=2, gap=0.02)  # NETFILTER_DROP
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6302, count=2, gap=0.02)  # NO_SOCKET: excluded
        events = finish(proc)
    assert [(e["reason"], e["dport"]) for e in events] == [("NETFILTER_DROP", 6301)] * 2, events


def test_packet_filters_apply_to_kernel_counting_too(veth_pair):
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with traced("--netns", veth_pair.ns_b, "--summary", "--proto", "udp", "--src", "10.11.0.1") as proc:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6401, count=3, gap=0.02)  # counted
        tcp_connect(veth_pair.ns_a, veth_pair.addr_b, 6402)  # tcp: excluded
        send_udp(veth_pair.ns_b, "127.0.0.1", 6403, count=2, gap=0.02)  # other source: excluded
        finish(proc)
    summary = [e for e in proc.json_lines() if e["type"] == "summary"][0]
    assert [(d["ifname"], d["reason"], d["count"]) for d in summary["drops"]] == [("vb", "NO_SOCKET", 3)]
