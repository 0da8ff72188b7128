"""trace-drops end to end: each scenario makes the kernel drop packets in namespaces this test
built, and the tool must name the reason, interface, namespace and flow (and a hint)."""
from __future__ import annotations

import contextlib
import os
import signal

import pytest

from bpftools.topology import run
from bpftools.traffic import resolve_neighbour, send_spoofed_udp, send_udp, tcp_connect
from bpftools_proc import BpftoolsProcess, cli
from waiting import wait_until



def trace(*args: str):
    return BpftoolsProcess("trace-drops", "--json", *args)


def drops(proc: BpftoolsProcess, **match) -> list:
    """Drop events matching every field given (filtering by flow keeps IPv6 neighbour discovery out)."""
    return [e for e in proc.json_lines()
            if e["type"] == "drop" and all(e.get(k) == v for k, v in match.items())]


def stop(proc: BpftoolsProcess, count: int = 1, **match) -> None:
    """Stop once `count` drop events matching `match` were printed (what is still in the ring
    buffer then is read before the summary: nothing is cut short)."""
    proc.wait_for(lambda _lines: len(drops(proc, **match)) >= count,
                  f"{count} drop event(s) matching {match or 'anything'}")
    assert proc.stop() == 0, proc.stderr


def first_router_drop(routed, dst: str, match: dict, src: str = ""):
    """Ping dst from `left` while tracing the router; the first drop event matching `match`."""
    with trace("--netns", routed.router) as proc:
        ping(routed.left, dst, **({"src": src} if src else {}))
        stop(proc, **match)
    events = drops(proc, **match)
    assert events, proc.stdout
    return events[0]


def ping(ns: str, dst: str, count: int = 2, src: str = "") -> None:
    run("ping", "-c", str(count), "-i", "0.1", "-W", "0.5", *(["-I", src] if src else []), dst, netns=ns,
        check=False)


def test_rp_filter_strict_with_asymmetric_route(routed, topo):
    # left also owns 10.21.9.2, but the router's route back to 10.21.9.0/24 points right.
    run("ip", "addr", "add", "10.21.9.2/32", "dev", "eth0", netns=routed.left)
    run("ip", "route", "add", "10.21.9.0/24", "via", routed.right_addr, netns=routed.router)
    topo.sysctl(routed.router, "net.ipv4.conf.all.rp_filter", 1)
    topo.sysctl(routed.router, "net.ipv4.conf.r-left.rp_filter", 1)
    resolve_neighbour(routed.left, routed.right_addr)  # ARP from 10.21.9.2 would fail rp_filter too
    event = first_router_drop(routed, routed.right_addr, {"reason": "IP_RPFILTER", "family": "ipv4"}, src="10.21.9.2")
    assert (event["netns"], event["ifname"]) == (routed.router, "r-left")
    assert (event["family"], event["proto"], event["src"], event["dst"]) == ("ipv4", "icmp", "10.21.9.2",
                                                                             routed.right_addr)
    assert (event["icmp_type"], event["icmp_code"], event["sport"]) == (8, 0, None)
    assert event["location"] and event["reason_code"] > 0
    assert "strict" in event["hint"] and "max(all=1, r-left=1) = 1" in event["hint"]
    assert "r-right" in event["hint"]  # the reverse route that made it fail


def test_forward_policy_drop(routed):
    run("iptables", "-P", "FORWARD", "DROP", netns=routed.router)
    event = first_router_drop(routed, routed.right_addr, {"reason": "NETFILTER_DROP", "family": "ipv4"})
    assert (event["netns"], event["ifname"], event["proto"]) == (routed.router, "r-left", "icmp")
    assert (event["src"], event["dst"]) == (routed.left_addr, routed.right_addr)
    assert "FORWARD" in event["hint"] and "policy DROP of chain FORWARD" in event["hint"]


def test_forward_rule_drop(routed):
    run("iptables", "-A", "FORWARD", "-p", "udp", "--dport", "7777", "-j", "DROP", netns=routed.router)
    resolve_neighbour(routed.left, routed.right_addr, port=7)
    with trace("--netns", routed.router) as proc:
        send_udp(routed.left, routed.right_addr, 7777, count=3, gap=0.05)
        stop(proc, count=3, reason="NETFILTER_DROP", dport=7777)
    events = drops(proc, reason="NETFILTER_DROP", dport=7777)
    assert len(events) == 3, proc.stdout
    event = events[0]
    assert (event["netns"], event["ifname"], event["proto"]) == (routed.router, "r-left", "udp")
    assert (event["src"], event["dst"]) == (routed.left_addr, routed.right_addr)
    assert event["sport"] and event["icmp_type"] is None
    assert "chain FORWARD rule 1 `-A FORWARD -p udp -m udp --dport 7777 -j DROP`" in event["hint"]


def test_input_rule_drop(veth_pair):
    run("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "DROP", netns=veth_pair.ns_b)
    with trace("vb", "--netns", veth_pair.ns_b) as proc:
        tcp_connect(veth_pair.ns_a, veth_pair.addr_b, 8080)
        stop(proc, reason="NETFILTER_DROP", family="ipv4")
    events = drops(proc, reason="NETFILTER_DROP", family="ipv4")  # not IPv6 neighbour discovery noise
    assert events, proc.stdout
    event = events[0]
    assert (event["netns"], event["ifname"], event["proto"], event["dport"]) == (veth_pair.ns_b, "vb", "tcp", 8080)
    assert (event["src"], event["dst"]) == (veth_pair.addr_a, veth_pair.addr_b)
    assert "at INPUT" in event["hint"] and "chain INPUT rule 1" in event["hint"]


def test_ip_forward_off_on_router(routed, topo):
    topo.sysctl(routed.router, "net.ipv4.ip_forward", 0)
    event = first_router_drop(routed, routed.right_addr, {"reason": "IP_INADDRERRORS", "family": "ipv4"})
    assert (event["netns"], event["ifname"], event["src"], event["dst"]) == (
        routed.router, "r-left", routed.left_addr, routed.right_addr)
    assert "ip_forward=0" in event["hint"]


def test_ipv6_forwarding_off_names_the_ipv6_sysctl(topo):
    """IPv6 is forwarded by net.ipv6.conf.all.forwarding, whatever net.ipv4.ip_forward says."""
    a, r, c = topo.netns("f6a"), topo.netns("f6r"), topo.netns("f6c")
    topo.veth(a, "f6l", r, "f6rl")
    topo.veth(r, "f6rr", c, "f6c")
    for ns, dev, addr in ((a, "f6l", "fd00:25::1/64"), (r, "f6rl", "fd00:25::2/64"), (r, "f6rr", "fd00:26::1/64"),
                          (c, "f6c", "fd00:26::2/64")):
        run("ip", "addr", "add", addr, "dev", dev, "nodad", netns=ns)
    run("ip", "route", "add", "fd00:26::/64", "via", "fd00:25::2", netns=a)
    topo.sysctl(r, "net.ipv4.ip_forward", 1)
    topo.sysctl(r, "net.ipv6.conf.all.forwarding", 0)
    resolve_neighbour(a, "fd00:25::2")
    with trace("--netns", r, "--reason", "IP_INADDRERRORS") as proc:
        send_udp(a, "fd00:26::2", 6905, count=2, gap=0.05)
        stop(proc, dport=6905)
    events = drops(proc, dport=6905)
    assert events, proc.stdout
    assert (events[0]["family"], events[0]["ifname"], events[0]["dst"]) == ("ipv6", "f6rl", "fd00:26::2")
    assert "net.ipv6.conf.all.forwarding=0 there" in events[0]["hint"], events[0]["hint"]
    assert "ip_forward" not in events[0]["hint"]


def test_missing_route(routed):
    # left's default route leads to the router, which has no route
    event = first_router_drop(routed, "10.21.77.1", {"reason": "IP_INNOROUTES", "dst": "10.21.77.1"})
    assert (event["netns"], event["ifname"], event["src"], event["dst"]) == (
        routed.router, "r-left", routed.left_addr, "10.21.77.1")
    assert "no route to 10.21.77.1" in event["hint"]


def test_martian_local_source(veth_pair):
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with trace("vb", "--netns", veth_pair.ns_b) as proc:
        # a packet claiming to come from b's own address, arriving on vb
        send_spoofed_udp(veth_pair.ns_a, veth_pair.addr_b, veth_pair.addr_b, 5555, count=2)
        stop(proc, reason="IP_LOCAL_SOURCE", family="ipv4")
    events = drops(proc, reason="IP_LOCAL_SOURCE", family="ipv4")  # not IPv6 neighbour discovery noise
    assert events, proc.stdout
    event = events[0]
    assert (event["netns"], event["ifname"], event["proto"], event["dport"]) == (veth_pair.ns_b, "vb", "udp", 5555)
    assert event["src"] == event["dst"] == veth_pair.addr_b
    assert "martian source" in event["hint"] and "accept_local" in event["hint"]


def test_no_socket_ipv6_human_output_and_count(topo):
    a, b = topo.netns("a6"), topo.netns("b6")
    topo.veth(a, "v6a", b, "v6b")
    run("ip", "addr", "add", "fd00:21::1/64", "dev", "v6a", "nodad", netns=a)
    run("ip", "addr", "add", "fd00:21::2/64", "dev", "v6b", "nodad", netns=b)
    resolve_neighbour(a, "fd00:21::2")
    with BpftoolsProcess("trace-drops", "--netns", b, "--reason", "NO_SOCKET", "--count", "2") as proc:
        send_udp(a, "fd00:21::2", 4444, count=5, gap=0.05)
        assert proc.wait(timeout=30) == 0, proc.stderr  # --count ends it
    lines = [ln for ln in proc.stdout.splitlines() if " NO_SOCKET udp " in ln]
    assert len(lines) == 2, proc.stdout
    assert f"{b}/v6b NO_SOCKET udp fd00:21::" in lines[0] and ".4444 len" in lines[0]
    assert "hint: no udp socket for [fd00:21::2]:4444" in proc.stdout
    assert "NETNS" in proc.stdout  # the summary table


def test_all_netns_names_the_namespace(veth_pair):
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with trace("--all-netns", "--reason", "NO_SOCKET", "--dst", f"{veth_pair.addr_b}/32") as proc:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 4321, count=2, gap=0.05)
        stop(proc, dport=4321)
    events = drops(proc, dport=4321)
    assert events and {e["netns"] for e in events} == {veth_pair.ns_b}, proc.stdout


@pytest.mark.parametrize("args, message", [
    (("nosuchif0",), "interface 'nosuchif0' not found"),
    (("--netns", "bpftools-no-such-ns"), "network namespace 'bpftools-no-such-ns' not found"),
    (("--reason", "NOT_A_REASON"), "unknown drop reason 'NOT_A_REASON'"),
    (("--proto", "bogus"), "unknown protocol 'bogus'"),
    (("--src", "10.1.1"), "not an address or CIDR"),
])
def test_bad_input_is_one_line_and_nonzero(args, message):
    proc = cli("trace-drops", *args)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bpftools: error: ") and message in lines[0], proc.stderr


def _prog_ids_held_by(pid: int) -> set:
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("prog_id:"):
                    ids.add(int(line.split()[1]))
    return ids


def test_sigterm_detaches_and_prints_summary(veth_pair):
    from bpftools import bpfsys

    with trace("--netns", veth_pair.ns_b, "--summary") as proc:
        ids = _prog_ids_held_by(proc.proc.pid)
        names = {bpfsys.prog_info(i).name for i in ids if bpfsys.prog_info(i)}
        assert "bpftools_drops" in names, names
        assert proc.stop(signal.SIGTERM) == 0
    assert [e for e in proc.json_lines() if e["type"] == "summary"] == [
        {"type": "summary", "drops": [], "events_lost": 0}]
    # programs are freed after an RCU grace period
    wait_until(lambda: not any(bpfsys.prog_info(i) for i in ids), "the programs to be freed")


def test_locally_generated_drop_without_device_names_the_route_device(veth_pair):
    # OUTPUT runs before ip_output sets skb->dev: the namespace and interface come from the route
    run("iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "6401", "-j", "DROP", netns=veth_pair.ns_a)
    with trace("--netns", veth_pair.ns_a) as proc:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6401, count=2, gap=0.05)
        stop(proc, count=2, reason="NETFILTER_DROP", dport=6401)
    events = drops(proc, reason="NETFILTER_DROP", dport=6401)
    assert len(events) == 2, proc.stdout
    assert (events[0]["netns"], events[0]["ifname"], events[0]["src"]) == (veth_pair.ns_a, "va", veth_pair.addr_a)
    assert "at OUTPUT" in events[0]["hint"] and "chain OUTPUT rule 1" in events[0]["hint"]


def test_perf_tracepoint_fallback(veth_pair, monkeypatch):
    monkeypatch.setenv("BPFTOOLS_TRACEPOINT", "perf")
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with trace("--netns", veth_pair.ns_b, "--reason", "NO_SOCKET") as proc:
        assert "via tracepoint skb:kfree_skb" in proc.stderr
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6501, count=2, gap=0.05)
        stop(proc, dport=6501)
    events = drops(proc, dport=6501)
    assert [(e["netns"], e["ifname"], e["reason"]) for e in events] == [(veth_pair.ns_b, "vb", "NO_SOCKET")] * 2


RING_BUFFER_EVENTS = (256 * 4096) // (96 + 8)  # 1 MiB ring, 96-byte events with an 8-byte header


def test_lost_events_are_reported_and_counts_stay_exact(veth_pair):
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with trace("--netns", veth_pair.ns_b, "--no-hints") as proc:
        # The reader stands still while more drops happen than the ring buffer holds: events
        # must be lost however fast or loaded the machine is.
        proc.proc.send_signal(signal.SIGSTOP)
        try:
            sent = send_udp(veth_pair.ns_a, veth_pair.addr_b, 6601, count=RING_BUFFER_EVENTS + 2000)
        finally:
            proc.proc.send_signal(signal.SIGCONT)
        assert sent > RING_BUFFER_EVENTS
        proc.wait_for(lambda lines: any(e["type"] == "lost" for e in lines), "the reader to report lost events")
        assert proc.stop() == 0, proc.stderr
    lines = proc.json_lines()
    lost = sum(e["count"] for e in lines if e["type"] == "lost")
    shown = len([e for e in lines if e["type"] == "drop"])
    summary = [e for e in lines if e["type"] == "summary"][0]
    assert lost > 0 and summary["events_lost"] == lost  # a flood outruns the reader, and it says so
    assert shown + lost == sum(d["count"] for d in summary["drops"])


def test_netfilter_hint_for_iptables_legacy(veth_pair):
    run("iptables-legacy", "-A", "INPUT", "-p", "udp", "--dport", "6701", "-j", "DROP", netns=veth_pair.ns_b)
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with trace("--netns", veth_pair.ns_b, "--reason", "NETFILTER_DROP") as proc:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 6701, count=2, gap=0.05)
        stop(proc, count=2, dport=6701)
    events = drops(proc, dport=6701)
    assert len(events) == 2, proc.stdout
    assert "iptables-legacy: table filter chain INPUT rule 1 `-A INPUT -p udp -m udp --dport 6701 -j DROP`" \
        in events[0]["hint"]


def native_nft_input_drops(veth_pair, family: str, table: str, chain: str, port: int) -> list:
    """A native nft input base chain `chain` in `table` of `family` drops UDP to `port` with a
    counter; the NETFILTER_DROP events of two such packets from ns_a."""
    ns = veth_pair.ns_b
    run("nft", "add", "table", family, table, netns=ns)
    run("nft", "add", "chain", family, table, chain, "{ type filter hook input priority 0; policy accept; }",
        netns=ns)
    run("nft", "add", "rule", family, table, chain, "udp", "dport", str(port), "counter", "drop", netns=ns)
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with trace("--netns", ns, "--reason", "NETFILTER_DROP") as proc:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, port, count=2, gap=0.05)
        stop(proc, count=2, dport=port)
    events = drops(proc, dport=port)
    assert len(events) == 2, proc.stdout
    assert "at INPUT" in events[0]["hint"]
    return events


def test_netfilter_hint_for_native_nftables(veth_pair):
    run("nft", "add", "table", "inet", "guard", netns=veth_pair.ns_b)
    run("nft", "add", "chain", "inet", "guard", "routed", "{ type filter hook forward priority 0; policy drop; }",
        netns=veth_pair.ns_b)
    events = native_nft_input_drops(veth_pair, "inet", "guard", "in", 6801)
    assert "nft: table inet guard chain in rule handle" in events[0]["hint"] and "`udp dport 6801 drop`" \
        in events[0]["hint"]


def test_netfilter_hint_for_native_nftables_in_a_table_named_like_iptables_one(veth_pair):
    """A native `table ip filter` (not made by iptables): iptables-nft calls it incompatible and
    lists none of its rules, so the hint must take the rule from nft."""
    events = native_nft_input_drops(veth_pair, "ip", "filter", "input", 6999)
    assert "nft: table ip filter chain input rule handle" in events[0]["hint"] and "`udp dport 6999 drop`" \
        in events[0]["hint"], events[0]["hint"]


def test_netfilter_hint_for_native_nftables_policy(routed):
    ns = routed.router
    run("nft", "add", "table", "ip", "edge", netns=ns)
    run("nft", "add", "chain", "ip", "edge", "routing", "{ type filter hook forward priority 0; policy drop; }",
        netns=ns)
    with trace("--netns", ns, "--reason", "NETFILTER_DROP") as proc:
        ping(routed.left, routed.right_addr)
        stop(proc, proto="icmp")
    events = drops(proc, proto="icmp")
    assert events, proc.stdout
    assert "at FORWARD" in events[0]["hint"]
    assert "nft: policy drop of chain routing (table ip edge) (no drop rule counted it)" in events[0]["hint"]


def test_device_without_ethernet_header(topo):
    """A tun device (ARPHRD_NONE): parsing starts at the network header, not a MAC header."""
    import fcntl
    import struct

    from bpftools.netlink import in_netns
    from bpftools.traffic import ipv4_udp_packet

    ns = topo.netns("tun")
    with in_netns(ns):
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"tun9", 0x0001 | 0x1000))  # TUNSETIFF, IFF_TUN|IFF_NO_PI
    try:
        run("ip", "addr", "add", "10.61.0.1/24", "dev", "tun9", netns=ns)
        run("ip", "link", "set", "tun9", "up", netns=ns)
        with trace("tun9", "--netns", ns) as proc:
            for _ in range(2):
                os.write(fd, ipv4_udp_packet("10.61.0.2", "10.61.0.1", 40001, 6901))
            stop(proc, count=2, reason="NO_SOCKET")
    finally:
        os.close(fd)
    events = drops(proc, reason="NO_SOCKET")
    assert len(events) == 2, proc.stdout
    assert (events[0]["netns"], events[0]["ifname"], events[0]["family"], events[0]["proto"]) == (
        ns, "tun9", "ipv4", "udp")
    assert (events[0]["src"], events[0]["dst"], events[0]["sport"], events[0]["dport"]) == (
        "10.61.0.2", "10.61.0.1", 40001, 6901)


def test_non_ip_drop_reports_the_ethertype(veth_pair):
    import socket

    from bpftools.netlink import in_netns

    mac_b = open_sysfs_mac(veth_pair.ns_b, "vb")
    with in_netns(veth_pair.ns_a):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with contextlib.closing(sock):
        sock.bind(("va", 0))
        frame = bytes.fromhex(mac_b.replace(":", "")) + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"\0" * 46
        with trace("vb", "--netns", veth_pair.ns_b) as proc:
            sock.send(frame)
            stop(proc, family="0x88b5")
    events = [e for e in drops(proc) if e["family"] == "0x88b5"]
    assert len(events) == 1, proc.stdout
    assert (events[0]["ifname"], events[0]["proto"], events[0]["src"]) == ("vb", None, None)
    assert events[0]["reason"] == "UNHANDLED_PROTO"


def open_sysfs_mac(ns: str, ifname: str) -> str:
    return run("cat", f"/sys/class/net/{ifname}/address", netns=ns).stdout.strip()


def test_ipv6_netfilter_drop_names_the_ip6tables_rule(topo):
    a, b = topo.netns("a6"), topo.netns("b6")
    topo.veth(a, "v6a", b, "v6b")
    run("ip", "addr", "add", "fd00:22::1/64", "dev", "v6a", "nodad", netns=a)
    run("ip", "addr", "add", "fd00:22::2/64", "dev", "v6b", "nodad", netns=b)
    run("ip6tables", "-A", "INPUT", "-p", "udp", "--dport", "6903", "-j", "DROP", netns=b)
    resolve_neighbour(a, "fd00:22::2")
    with trace("v6b", "--netns", b, "--reason", "NETFILTER_DROP") as proc:
        send_udp(a, "fd00:22::2", 6903, count=2, gap=0.05)
        stop(proc, count=2, dport=6903)
    events = drops(proc, dport=6903)
    assert len(events) == 2, proc.stdout
    assert (events[0]["family"], events[0]["src"], events[0]["dst"]) == ("ipv6", "fd00:22::1", "fd00:22::2")
    assert "at INPUT" in events[0]["hint"] and "chain INPUT rule 1 `-A INPUT -p udp -m udp --dport 6903 -j DROP`" \
        in events[0]["hint"] and "ip6tables-save -c" in events[0]["hint"]


@pytest.mark.parametrize("ifindex_off, nd_net_off", [(224, 264), (228, 264), (220, 264), (224, 268), (260, 224)])
def test_program_loads_for_other_net_device_layouts(ifindex_off, nd_net_off):
    """dev_place() reads ifindex and nd_net in one go when they are close: the verifier must accept
    it whatever the offsets (a misaligned pointer load from the stack copy is rejected)."""
    from bcc import BPF

    from bpftools.kernel.drop_reasons import kfree_skb_format
    from bpftools.program import BpfProgram
    from bpftools.trace_drops import RAW_FN, SOURCE, TP_FN, DropFilter, program_defines

    defines = program_defines(DropFilter(all_netns=True), kfree_skb_format(), summary=False)
    defines.update(OFF_DEV_IFINDEX=ifindex_off, OFF_DEV_ND_NET=nd_net_off)  # after (and over) the BTF ones
    with BpfProgram(SOURCE, defines) as program:
        assert program.load(RAW_FN, BPF.RAW_TRACEPOINT) >= 0
        assert program.load(TP_FN, BPF.TRACEPOINT) >= 0
