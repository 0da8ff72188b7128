"""`bpftools xdp-decap` end to end, without any tunnel module: namespace A crafts IPv4-in-IPv4
ICMP echo requests (scapy) to namespace B, where xdp-decap runs on B's veth.

    A: ta 10.51.0.1/24, 10.52.0.1/32 on lo (inner source)
    B: tb 10.51.0.2/24 (route to 10.52.0.0/24 via A), tc 10.54.0.1/24
    C: tcc 10.54.0.2/24 (route to 10.52.0.0/24 via B)   -- only for --redirect / --route
"""
from __future__ import annotations

import ipaddress
import os
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from typing import List, Optional

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether

import packets
from bpftools.netlink import in_netns, interface_mac, resolve_interface, xdp_prog_id
from bpftools.topology import run
from bpftools.xdp_decap import lpm_key
from bpftools_proc import BpftoolsProcess, cli

ICMP_ID = 0x5A5A


@dataclass
class Tunnel:
    a: str
    b: str
    c: Optional[str] = None
    a_addr: str = "10.51.0.1"
    b_addr: str = "10.51.0.2"
    inner_src: str = "10.52.0.1"
    c_addr: str = "10.54.0.2"


@pytest.fixture
def tunnel(topo) -> Tunnel:
    t = Tunnel(topo.netns("da"), topo.netns("db"))
    topo.veth(t.a, "ta", t.b, "tb", f"{t.a_addr}/24", f"{t.b_addr}/24")
    run("ip", "addr", "add", f"{t.inner_src}/32", "dev", "lo", netns=t.a)
    run("ip", "route", "add", "10.52.0.0/24", "via", t.a_addr, netns=t.b)
    return t


@pytest.fixture
def tunnel_to_c(topo, tunnel) -> Tunnel:
    tunnel.c = topo.netns("dc")
    topo.veth(tunnel.b, "tc", tunnel.c, "tcc", "10.54.0.1/24", f"{tunnel.c_addr}/24")
    run("ip", "route", "add", "10.52.0.0/24", "via", "10.54.0.1", netns=tunnel.c)
    topo.sysctl(tunnel.b, "net.ipv4.ip_forward", 1)
    run("ping", "-c", "1", "-W", "2", tunnel.c_addr, netns=tunnel.b)  # B learns C's MAC
    return tunnel


def ipip_echo_frames(t: Tunnel, inner_dst: str, count: int, outer_src: Optional[str] = None) -> List[bytes]:
    """IPv4-in-IPv4 echo requests from A to B, built with scapy."""
    b_mac = interface_mac(resolve_interface("tb", t.b))
    a_mac = interface_mac(resolve_interface("ta", t.a))
    return [bytes(Ether(src=a_mac, dst=b_mac) / IP(src=outer_src or t.a_addr, dst=t.b_addr, proto=4)
                  / IP(src=t.inner_src, dst=inner_dst) / ICMP(id=ICMP_ID, seq=seq) / b"bpftools-xdp-decap")
            for seq in range(1, count + 1)]


def send_frames(netns: str, ifname: str, frames: List[bytes]) -> None:
    packets.send_frames(netns, ifname, frames, gap=0.01)


class IcmpListener:
    """ICMP echo messages (replies: type 0, requests: type 8) with our identifier arriving in a
    namespace, seen through a raw socket opened there: (source, sequence, TTL) each."""

    def __init__(self, netns: str, icmp_type: int = 0):
        self.icmp_type = icmp_type
        with in_netns(netns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)

    def collect(self, expected: int, timeout: float = 3.0) -> List[tuple]:
        seen = []
        deadline = time.monotonic() + timeout
        while len(seen) < expected and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(2048)
            except socket.timeout:
                break
            icmp_type, _, _, ident, seq = struct.unpack_from("!BBHHH", data, (data[0] & 15) * 4)
            if icmp_type == self.icmp_type and ident == ICMP_ID:
                seen.append((socket.inet_ntoa(data[12:16]), seq, data[8]))
        return seen

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def sources(seen: List[tuple]) -> List[tuple]:
    return sorted((src, seq) for src, seq, _ in seen)


@pytest.fixture
def replies_in_a(tunnel):
    with IcmpListener(tunnel.a) as listener:
        yield listener


def counted(proc: BpftoolsProcess, **expected: int) -> None:
    """Wait until a periodic report shows these counters (what the XDP program has done)."""
    proc.wait_for(lambda lines: any(all(line.get(k) == v for k, v in expected.items()) for line in lines),
                  f"xdp-decap to report {expected}")


def final_counters(proc: BpftoolsProcess) -> dict:
    assert proc.stop() == 0, proc.stderr
    lines = proc.json_lines()
    assert lines and lines[-1]["final"] is True, proc.stdout
    return lines[-1]


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_allow_listed_sender_gets_inner_echo_answered(tunnel, replies_in_a, mode):
    with BpftoolsProcess("xdp-decap", "tb", "--netns", tunnel.b, "--allow-remote", f"{tunnel.a_addr}/32",
                         "--mode", mode, "--json", "--interval", "0.5") as proc:
        send_frames(tunnel.a, "ta", ipip_echo_frames(tunnel, tunnel.b_addr, 5))
        replies = replies_in_a.collect(5)
        counted(proc, decapsulated=5)
        totals = final_counters(proc)
    assert sources(replies) == [(tunnel.b_addr, seq) for seq in range(1, 6)]
    assert totals["type"] == "decap" and totals["netns"] == tunnel.b and totals["ifname"] == "tb"
    assert totals["decapsulated"] == 5
    assert totals["rejected_remote"] == 0 and totals["malformed"] == 0
    assert totals["passed_not_tunnel"] >= 1  # ARP and the echo replies' neighbours at least
    periodic = proc.json_lines()[:-1]
    assert periodic and all(line["final"] is False for line in periodic)
    assert "ready: xdp-decap on tb" in proc.stderr


def test_unknown_sender_is_not_decapsulated(tunnel, replies_in_a):
    with BpftoolsProcess("xdp-decap", "tb", "--netns", tunnel.b, "--allow-remote", "10.99.0.0/24", "--json") as proc:
        send_frames(tunnel.a, "ta", ipip_echo_frames(tunnel, tunnel.b_addr, 5))
        replies = replies_in_a.collect(5, timeout=1.0)
        totals = final_counters(proc)
    assert replies == []
    assert totals["rejected_remote"] == 5
    assert totals["decapsulated"] == 0


def test_wrong_outer_destination_is_rejected(tunnel, replies_in_a):
    """Allowed sender, but the outer destination is not one of tb's addresses (nor --local)."""
    with BpftoolsProcess("xdp-decap", "tb", "--netns", tunnel.b, "--allow-remote", tunnel.a_addr,
                         "--local", "10.51.0.77", "--json") as proc:
        send_frames(tunnel.a, "ta", ipip_echo_frames(tunnel, tunnel.b_addr, 3))
        replies = replies_in_a.collect(3, timeout=1.0)
        totals = final_counters(proc)
    assert replies == [] and totals["rejected_remote"] == 3 and totals["decapsulated"] == 0


def test_allow_list_is_pinned_and_updatable_while_running(tunnel, replies_in_a):
    with BpftoolsProcess("xdp-decap", "tb", "--netns", tunnel.b, "--allow-remote", "10.99.0.0/24", "--json") as proc:
        pin = proc.stderr.split("allow-list pinned at ")[1].split(",")[0]
        assert os.path.exists(pin)
        key = " ".join(f"{b:02x}" for b in lpm_key(ipaddress.ip_network(f"{tunnel.a_addr}/32")))
        subprocess.run(["bpftool", "map", "update", "pinned", pin, "key", "hex", *key.split(),
                        "value", "hex", "01"], check=True, capture_output=True)
        send_frames(tunnel.a, "ta", ipip_echo_frames(tunnel, tunnel.b_addr, 3))
        replies = replies_in_a.collect(3)
        listed = cli("xdp-decap-allow", "tb", "--netns", tunnel.b, check=True).stdout.split()
        assert listed == ["10.51.0.1/32", "10.99.0.0/24"]
        cli("xdp-decap-allow", "tb", "--netns", tunnel.b, "--remove", "10.51.0.1/32", check=True)
        cli("xdp-decap-allow", "tb", "--netns", tunnel.b, "fd00:51::/48", check=True)
        send_frames(tunnel.a, "ta", ipip_echo_frames(tunnel, tunnel.b_addr, 2))
        assert replies_in_a.collect(2, timeout=1.0) == []
        listed = cli("xdp-decap-allow", "tb", "--netns", tunnel.b, check=True).stdout.split()
        totals = final_counters(proc)
    assert len(replies) == 3 and totals["decapsulated"] == 3 and totals["rejected_remote"] == 2
    assert listed == ["10.99.0.0/24", "fd00:51::/48"]
    assert not os.path.exists(pin)
    gone = cli("xdp-decap-allow", "tb", "--netns", tunnel.b)
    assert gone.returncode == 1 and "is `bpftools xdp-decap tb` running there?" in gone.stderr


def test_refuses_to_start_without_allow_list(tunnel):
    proc = cli("xdp-decap", "tb", "--netns", tunnel.b)
    assert proc.returncode == 1
    assert proc.stderr.startswith("bpftools: error: refusing to decapsulate from anyone")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_foreign_xdp_program_needs_force(tunnel):
    with BpftoolsProcess("xdp-decap", "tb", "--netns", tunnel.b, "--allow-any", "--mode", "generic") as first:
        proc = cli("xdp-decap", "tb", "--netns", tunnel.b, "--allow-any")
        assert proc.returncode == 1 and "already has an XDP program" in proc.stderr
        assert "not replacing it without --force" in proc.stderr
        with BpftoolsProcess("xdp-decap", "tb", "--netns", tunnel.b, "--allow-any", "--force") as second:
            assert second.stop() == 0
        assert first.stop() == 0
    assert xdp_prog_id(resolve_interface("tb", tunnel.b)) == 0
    assert not os.path.exists("/sys/fs/bpf/bpftools/xdp-decap/" + tunnel.b)  # the pin went with it


def test_redirect_sends_inner_packets_out_of_another_veth(tunnel_to_c, replies_in_a):
    t = tunnel_to_c
    with BpftoolsProcess("xdp-decap", "tb", "--netns", t.b, "--allow-remote", t.a_addr, "--redirect", "tc",
                         "--json") as proc:
        assert "pass-through XDP program bpftools_xpass" in proc.stderr  # on tcc, in namespace C
        send_frames(t.a, "ta", ipip_echo_frames(t, t.c_addr, 5))
        replies = replies_in_a.collect(5)  # C got the inner echo and answered (routed back by B)
        totals = final_counters(proc)
    assert sources(replies) == [(t.c_addr, seq) for seq in range(1, 6)]
    assert totals["decapsulated"] == 5 and totals["redirected"] == 5 and totals["redirect_failed"] == 0
    assert xdp_detached(t.c, "tcc")


def test_redirect_with_given_mac_and_capture_in_c(tunnel_to_c):
    t = tunnel_to_c
    c_mac = interface_mac(resolve_interface("tcc", t.c))
    with IcmpListener(t.c, icmp_type=8) as requests, \
            BpftoolsProcess("xdp-decap", "tb", "--netns", t.b, "--allow-remote", t.a_addr, "--redirect", "tc",
                            "--dst-mac", c_mac, "--json") as proc:
        send_frames(t.a, "ta", ipip_echo_frames(t, t.c_addr, 4))
        seen = requests.collect(4)
        totals = final_counters(proc)
    assert sorted(seen) == [(t.inner_src, seq, 63) for seq in range(1, 5)]  # TTL decremented once
    assert totals["redirected"] == 4


def test_route_forwards_with_fib_lookup(tunnel_to_c, replies_in_a):
    t = tunnel_to_c
    with BpftoolsProcess("xdp-decap", "tb", "--netns", t.b, "--allow-remote", t.a_addr, "--route",
                         "--json") as proc:
        assert "bpftools_xpass to tcc" in proc.stderr and xdp_detached(t.a, "ta")  # not on the sender's side
        send_frames(t.a, "ta", ipip_echo_frames(t, t.c_addr, 5) + ipip_echo_frames(t, t.b_addr, 2))
        replies = replies_in_a.collect(7)
        totals = final_counters(proc)
    assert sources(replies) == sorted([(t.c_addr, seq) for seq in range(1, 6)] + [(t.b_addr, 1), (t.b_addr, 2)])
    assert totals["decapsulated"] == 7
    assert totals["redirected"] == 5  # to C through the FIB
    assert totals["redirect_failed"] == 2  # local destination: the FIB sends those to the stack


def test_route_sends_inner_ipv6_over_the_egress_mtu_to_the_stack(topo, tunnel_to_c):
    """6in4 with --route, egress MTU 1280: the FIB's MTU check must see the whole inner IPv6 packet
    (40-byte header + payload), so one of 1300 bytes, whose payload alone would fit, is not
    redirected (the stack answers "packet too big") and one of exactly 1280 is."""
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

    t = tunnel_to_c
    run("ip", "addr", "add", "fd00:54::1/64", "dev", "tc", "nodad", netns=t.b)
    run("ip", "addr", "add", "fd00:54::2/64", "dev", "tcc", "nodad", netns=t.c)
    run("ip", "link", "set", "tc", "mtu", "1280", netns=t.b)
    run("ip", "link", "set", "tcc", "mtu", "1280", netns=t.c)
    topo.sysctl(t.b, "net.ipv6.conf.all.forwarding", 1)
    run("ping", "-6", "-c", "1", "-W", "2", "fd00:54::2", netns=t.b)  # B learns C's MAC
    b_mac, a_mac = interface_mac(resolve_interface("tb", t.b)), interface_mac(resolve_interface("ta", t.a))

    def six_in_four(total: int, seq: int) -> bytes:
        inner = IPv6(src="fd00:52::1", dst="fd00:54::2") / ICMPv6EchoRequest(id=ICMP_ID, seq=seq)
        inner = inner / (b"m" * (total - len(inner)))
        assert len(inner) == total
        return bytes(Ether(src=a_mac, dst=b_mac) / IP(src=t.a_addr, dst=t.b_addr, proto=41) / inner)

    fits = [six_in_four(1280, seq) for seq in (1, 2)]
    too_big = [six_in_four(1300, seq) for seq in (3, 4, 5)]  # payload 1260 < 1280 < 1300
    with BpftoolsProcess("xdp-decap", "tb", "--netns", t.b, "--allow-remote", t.a_addr, "--route",
                         "--json", "--interval", "0.2") as proc:
        send_frames(t.a, "ta", fits + too_big)
        counted(proc, decapsulated=5, redirected=2, redirect_failed=3)
        totals = final_counters(proc)
    assert totals["decapsulated"] == 5
    assert (totals["redirected"], totals["redirect_failed"]) == (2, 3), totals


def xdp_detached(netns: str, ifname: str) -> bool:
    return xdp_prog_id(resolve_interface(ifname, netns)) == 0


@pytest.mark.feature("ipip_module")
def test_real_ipip_device_as_sender(tunnel, replies_in_a):
    """A kernel ipip tunnel in A sends the encapsulated pings; B has no tunnel device at all."""
    t = tunnel
    run("ip", "link", "add", "ipa", "type", "ipip", "local", t.a_addr, "remote", t.b_addr, netns=t.a)
    run("ip", "link", "set", "ipa", "up", netns=t.a)
    run("ip", "route", "add", "10.53.0.2/32", "dev", "ipa", "src", t.inner_src, netns=t.a)
    run("ip", "addr", "add", "10.53.0.2/32", "dev", "lo", netns=t.b)
    with BpftoolsProcess("xdp-decap", "tb", "--netns", t.b, "--allow-remote", t.a_addr, "--json") as proc:
        ping = run("ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", t.inner_src, "10.53.0.2", netns=t.a, check=False)
        totals = final_counters(proc)
    assert ping.returncode == 0, ping.stdout
    assert totals["decapsulated"] >= 3


def test_ipv6_inside_ipv4_and_ipv4_inside_ipv6(tunnel, replies_in_a):
    """6in4 (outer IPv4, protocol 41) and IPv4 in outer IPv6: the inner echo requests are
    answered, IPv6 ones over IPv6."""
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

    t = tunnel
    run("ip", "addr", "add", "fd00:51::1/64", "dev", "ta", "nodad", netns=t.a)
    run("ip", "addr", "add", "fd00:52::1/128", "dev", "lo", netns=t.a)
    run("ip", "addr", "add", "fd00:51::2/64", "dev", "tb", "nodad", netns=t.b)
    run("ip", "route", "add", "fd00:52::/64", "via", "fd00:51::1", netns=t.b)
    b_mac, a_mac = interface_mac(resolve_interface("tb", t.b)), interface_mac(resolve_interface("ta", t.a))
    six_in_four = [bytes(Ether(src=a_mac, dst=b_mac) / IP(src=t.a_addr, dst=t.b_addr, proto=41)
                         / IPv6(src="fd00:52::1", dst="fd00:51::2") / ICMPv6EchoRequest(id=ICMP_ID, seq=seq))
                   for seq in (1, 2, 3)]
    four_in_six = [bytes(Ether(src=a_mac, dst=b_mac) / IPv6(src="fd00:51::1", dst="fd00:51::2", nh=4)
                         / IP(src=t.inner_src, dst=t.b_addr) / ICMP(id=ICMP_ID, seq=seq)) for seq in (4, 5)]
    with in_netns(t.a):
        icmp6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    with icmp6, BpftoolsProcess("xdp-decap", "tb", "--netns", t.b, "--allow-remote", t.a_addr,
                                "--allow-remote", "fd00:51::1/128", "--json") as proc:
        send_frames(t.a, "ta", six_in_four + four_in_six)
        replies6 = []
        icmp6.settimeout(3)
        deadline = time.monotonic() + 3
        while len(replies6) < 3 and time.monotonic() < deadline:
            try:
                data, addr = icmp6.recvfrom(2048)
            except socket.timeout:
                break
            icmp_type, _, _, ident, seq = struct.unpack_from("!BBHHH", data)
            if icmp_type == 129 and ident == ICMP_ID:
                replies6.append((addr[0], seq))
        replies4 = replies_in_a.collect(2)
        totals = final_counters(proc)
    assert sorted(replies6) == [("fd00:51::2", seq) for seq in (1, 2, 3)]
    assert sources(replies4) == [(t.b_addr, 4), (t.b_addr, 5)]
    assert totals["decapsulated"] == 5 and totals["malformed"] == 0
