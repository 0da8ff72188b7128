"""Each filter of trace-drops excludes what it should, in the kernel (interface in a
namespace, source/destination address, protocol, port, reason wanted or excluded)."""
from __future__ import annotations

import contextlib
import socket
import struct
import time

from bpftools.netlink import in_netns
from bpftools.topology import run
from bpftools.traffic import resolve_neighbour, send_udp, tcp_connect, udp_socket
from bpftools_proc import BpftoolsProcess, cli
from waiting import wait_until


def traced(*args: str) -> BpftoolsProcess:
    return BpftoolsProcess("trace-drops", "--json", "--no-hints", *args)


def drop_events(lines: list) -> list:
    return [e for e in lines if e["type"] == "drop"]


def finish(proc: BpftoolsProcess, wanted: int) -> list:
    """Stop once the `wanted` events were printed (the ring buffer's rest is read at the end);
    the drop events it printed."""
    proc.wait_for(lambda lines: len(drop_events(lines)) >= wanted, f"{wanted} drop event(s)")
    assert proc.stop() == 0, proc.stderr
    return drop_events(proc.json_lines())


def udp_no_ports(ns: str) -> int:
    """The namespace's Udp NoPorts counter: datagrams the kernel dropped for want of a socket."""
    lines = [line.split() for line in run("cat", "/proc/net/snmp", netns=ns).stdout.splitlines()
             if line.startswith("Udp:")]
    return int(dict(zip(lines[0][1:], lines[1][1:]))["NoPorts"])


def finish_summary(proc: BpftoolsProcess, ns: str, no_ports_before: int, datagrams: int) -> dict:
    """Stop a --summary run once the kernel has dropped all `datagrams` sent to closed ports in
    `ns` (its counts are read from the kernel's maps at the end); the summary."""
    wait_until(lambda: udp_no_ports(ns) - no_ports_before >= datagrams, f"{datagrams} datagrams dropped in {ns}")
    assert proc.stop() == 0, proc.stderr
    return [e for e in proc.json_lines() if e["type"] == "summary"][0]


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
        events = finish(proc, wanted=3)
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
        events = finish(proc, wanted=2)
    assert [(e["src"], e["dst"], e["dport"]) for e in events] == [("10.11.0.1", "10.11.0.3", 6101)] * 2


def test_protocol_filter(veth_pair):
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with traced("--netns", veth_pair.ns_b, "--proto", "tcp") as proc:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6201, count=2, gap=0.02)  # excluded
        tcp_connect(veth_pair.ns_a, veth_pair.addr_b, 6202)  # SYN to a closed port: NO_SOCKET, tcp
        events = finish(proc, wanted=1)
    assert events and {(e["proto"], e["dport"]) for e in events} == {("tcp", 6202)}, events


def test_reason_filter(veth_pair):
    run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "6301", "-j", "DROP", netns=veth_pair.ns_b)
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with traced("--netns", veth_pair.ns_b, "--reason", "NETFILTER_DROP") as proc:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6301, count=2, gap=0.02)  # NETFILTER_DROP
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6302, count=2, gap=0.02)  # NO_SOCKET: excluded
        events = finish(proc, wanted=2)
    assert [(e["reason"], e["dport"]) for e in events] == [("NETFILTER_DROP", 6301)] * 2, events


def test_packet_filters_apply_to_kernel_counting_too(veth_pair):
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with traced("--netns", veth_pair.ns_b, "--summary", "--proto", "udp", "--src", "10.11.0.1") as proc:
        before = udp_no_ports(veth_pair.ns_b)
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6401, count=3, gap=0.02)  # counted
        tcp_connect(veth_pair.ns_a, veth_pair.addr_b, 6402)  # tcp: excluded
        send_udp(veth_pair.ns_b, "127.0.0.1", 6403, count=2, gap=0.02)  # other source: excluded
        summary = finish_summary(proc, veth_pair.ns_b, before, datagrams=5)
    assert [(d["ifname"], d["reason"], d["count"]) for d in summary["drops"]] == [("vb", "NO_SOCKET", 3)]


def send_from_port(ns: str, src: str, sport: int, dst: str, dport: int, count: int = 2) -> None:
    """UDP datagrams from a fixed source port."""
    with contextlib.closing(udp_socket(ns)) as sock:
        sock.bind((src, sport))
        for _ in range(count):
            sock.sendto(b"bpftools", (dst, dport))
            time.sleep(0.02)


def test_destination_port_filter_udp_and_tcp(veth_pair):
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with traced("--netns", veth_pair.ns_b, "--dport", "6501") as proc:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6501, count=2, gap=0.02)  # wanted: NO_SOCKET
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6502, count=2, gap=0.02)  # other port
        tcp_connect(veth_pair.ns_a, veth_pair.addr_b, 6501)  # SYN to a closed port: wanted too
        tcp_connect(veth_pair.ns_a, veth_pair.addr_b, 6503)  # other port
        events = finish(proc, wanted=3)
    assert sorted({(e["proto"], e["dport"], e["reason"]) for e in events}) == [("tcp", 6501, "NO_SOCKET"),
                                                                              ("udp", 6501, "NO_SOCKET")], events
    assert sum(e["proto"] == "udp" for e in events) == 2


def test_port_matches_either_direction_and_sport_the_source(veth_pair):
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    a, b = veth_pair.addr_a, veth_pair.addr_b
    with traced("--netns", veth_pair.ns_b, "--port", "6601") as either, \
            traced("--netns", veth_pair.ns_b, "--sport", "6601") as source:
        send_from_port(veth_pair.ns_a, a, 6601, b, 6611)  # from 6601: both
        send_udp(veth_pair.ns_a, b, 6601, count=2, gap=0.02)  # to 6601: --port only
        send_from_port(veth_pair.ns_a, a, 6602, b, 6612)  # neither
        either_events, source_events = finish(either, wanted=4), finish(source, wanted=2)
    assert sorted((e["sport"], e["dport"]) for e in either_events if e["sport"] == 6601) == [(6601, 6611)] * 2
    assert [e["dport"] for e in either_events if e["sport"] != 6601] == [6601] * 2, either_events
    assert [(e["sport"], e["dport"]) for e in source_events] == [(6601, 6611)] * 2, source_events


def test_exclude_reason_hides_it_in_events_and_counts(veth_pair):
    run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "6701", "-j", "DROP", netns=veth_pair.ns_b)
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    # NOT_SPECIFIED: IPv6 neighbour discovery noise of a new link
    with traced("--netns", veth_pair.ns_b, "--exclude-reason", "NO_SOCKET", "--exclude-reason", "NOT_SPECIFIED",
                "--proto", "udp") as proc, \
            traced("--netns", veth_pair.ns_b, "--summary", "--exclude-reason", "no_socket",
                   "--exclude-reason", "NOT_SPECIFIED") as counting:
        before = udp_no_ports(veth_pair.ns_b)
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6701, count=2, gap=0.02)  # NETFILTER_DROP
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6702, count=3, gap=0.02)  # NO_SOCKET: hidden
        events = finish(proc, wanted=2)
        summary = finish_summary(counting, veth_pair.ns_b, before, datagrams=3)
    assert [(e["reason"], e["dport"]) for e in events] == [("NETFILTER_DROP", 6701)] * 2, events
    assert [(d["reason"], d["count"]) for d in summary["drops"]] == [("NETFILTER_DROP", 2)], summary


def test_port_filter_applies_to_kernel_counting(veth_pair):
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with traced("--netns", veth_pair.ns_b, "--summary", "--dport", "6801") as proc:
        before = udp_no_ports(veth_pair.ns_b)
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6801, count=3, gap=0.02)  # counted
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6802, count=2, gap=0.02)  # other port
        summary = finish_summary(proc, veth_pair.ns_b, before, datagrams=5)
    assert [(d["ifname"], d["reason"], d["count"]) for d in summary["drops"]] == [("vb", "NO_SOCKET", 3)]


def test_unknown_exclude_reason_is_a_one_line_error():
    proc = cli("trace-drops", "--exclude-reason", "NO_SUCH_REASON_BT")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0] == "bpftools: error: unknown drop reason 'NO_SUCH_REASON_BT' on this kernel " \
                       "(e.g. NETFILTER_DROP, NO_SOCKET)"


def send_sctp(ns: str, src: str, dst: str, sport: int, dport: int) -> None:
    """One SCTP common header (no chunks) through a raw socket: dropped on arrival whether or not
    the kernel has SCTP (no protocol handler, or a malformed packet)."""
    sctp = struct.pack("!HHII", sport, dport, 0, 0)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(sctp), 0, 0x4000, 64, 132, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    with in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with contextlib.closing(sock):
        sock.sendto(header + sctp, (dst, 0))


def test_ports_of_sctp(veth_pair):
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with traced("--netns", veth_pair.ns_b, "--proto", "sctp", "--dport", "7401") as proc:
        send_sctp(veth_pair.ns_a, veth_pair.addr_a, veth_pair.addr_b, 5000, 7401)  # wanted
        send_sctp(veth_pair.ns_a, veth_pair.addr_a, veth_pair.addr_b, 5000, 7402)  # other port
        events = finish(proc, wanted=1)
    assert [(e["proto"], e["sport"], e["dport"]) for e in events] == [("sctp", 5000, 7401)], events
