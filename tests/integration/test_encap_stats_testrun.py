"""The encap classifier through BPF_PROG_TEST_RUN: the no-Ethernet (L3 device) parsing path, the tc
entry point, and a real ipip tunnel device where the kernel has one."""
import socket

import pytest
from bcc import BPF
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, ICMPv6EchoRequest
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from bpftools import bpfsys
from bpftools.encap_stats import PROG_TC_INGRESS, PROG_XDP, load_classifier, read_counters, udp_port_table
from bpftools.topology import run
from bpftools_proc import BpftoolsProcess
from packets import send_udp

INNER4 = IP(src="192.168.8.1", dst="192.168.8.2") / ICMP()
INNER6 = IPv6(src="fd00:88::1", dst="fd00:88::2") / ICMPv6EchoRequest()
INNER_ETH = Ether() / INNER4
TC_ACT_UNSPEC = 0xFFFFFFFF  # -1: let the next program/filter decide
XDP_PASS = 2

# Packets as an L3 device (ipip, gre, tun) hands them over: no Ethernet header.
L3_PACKETS = [
    ("ipip", IP(src="10.44.0.1", dst="10.44.0.2") / INNER4),
    ("sit", IP(src="10.44.0.1", dst="10.44.0.2") / INNER6),
    ("ip6ip6", IPv6(src="fd00:44::1", dst="fd00:44::2") / INNER6),
    ("ip4in6", IPv6(src="fd00:44::1", dst="fd00:44::2") / INNER4),
    ("gretap", IP(src="10.44.0.1", dst="10.44.0.2") / GRE(proto=0x6558) / INNER_ETH),
    ("vxlan", IP(src="10.44.0.1", dst="10.44.0.2") / UDP(dport=4789) / VXLAN() / INNER_ETH),
    ("fou", IP(src="10.44.0.1", dst="10.44.0.2") / UDP(dport=5555) / INNER4),
    ("none", IP(src="10.44.0.1", dst="10.44.0.2") / TCP()),
    # truncated (test runs need at least 14 bytes)
    ("none", bytes(IP(src="10.44.0.1", dst="10.44.0.2") / INNER4)[:16]),
    ("none", bytes(IPv6(src="fd00:44::1", dst="fd00:44::2") / INNER4)[:30]),
    ("none", bytes(IP(src="10.44.0.1", dst="10.44.0.2") / UDP(dport=4789) / VXLAN())[:24]),
]


def run_all(prog_fd, packets, expected_retval):
    for _, packet in packets:
        result = bpfsys.prog_test_run(prog_fd, bytes(packet))
        assert result.retval == expected_retval


def counted(program):
    return {(r.direction, r.encap): (r.packets, r.bytes) for r in read_counters(program, ["lo"])}


def expected(direction, packets):
    totals = {}
    for encap, packet in packets:
        n, size = totals.get((direction, encap), (0, 0))
        totals[(direction, encap)] = (n + 1, size + len(bytes(packet)))
    return totals


@pytest.mark.feature("prog_test_run")
def test_l3_device_path_parses_from_the_ip_header():
    """BPF_PROG_TEST_RUN runs XDP as if on `lo` of our namespace: count that slot as an L3 device."""
    lo = socket.if_nametoindex("lo")
    with load_classifier([lo], [True], udp_port_table([("fou", 5555)])) as program:
        run_all(program.load(PROG_XDP, BPF.XDP), L3_PACKETS, XDP_PASS)
        assert counted(program) == expected("ingress", L3_PACKETS)


@pytest.mark.feature("prog_test_run")
def test_ethernet_slot_misreads_nothing_and_tc_entry_passes():
    """The tc entry point on Ethernet frames, and an interface that is not ours is not counted."""
    lo = socket.if_nametoindex("lo")
    frames = [(encap, Ether() / packet) for encap, packet in L3_PACKETS[:-1]]
    with load_classifier([lo], [False], udp_port_table([("fou", 5555)])) as program:
        run_all(program.load(PROG_TC_INGRESS, BPF.SCHED_CLS), frames, TC_ACT_UNSPEC)
        assert counted(program) == expected("ingress", frames)
    with load_classifier([lo + 1000], [False], udp_port_table()) as program:
        run_all(program.load(PROG_XDP, BPF.XDP), frames, XDP_PASS)
        assert counted(program) == {}


@pytest.mark.feature("ipip_module")
def test_real_ipip_tunnel_device(topo):
    """Inner UDP to a fou port through a real ipip device: the L3 device sees `fou`, the underlay `ipip`."""
    ns_a, ns_b = topo.netns("ia"), topo.netns("ib")
    for ns in (ns_a, ns_b):
        topo.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", 1)
        topo.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", 1)
    topo.veth(ns_a, "va", ns_b, "vb", "10.45.0.1/24", "10.45.0.2/24")
    for ns, local, remote, inner in ((ns_a, "10.45.0.1", "10.45.0.2", "10.45.1.1/24"),
                                     (ns_b, "10.45.0.2", "10.45.0.1", "10.45.1.2/24")):
        run("ip", "link", "add", "ipip0", "type", "ipip", "local", local, "remote", remote, netns=ns)
        run("ip", "addr", "add", inner, "dev", "ipip0", netns=ns)
        run("ip", "link", "set", "ipip0", "up", netns=ns)
    count = 4
    def totals(lines):
        return {(r["ifname"], r["direction"], r["encap"]): r["packets"] for r in lines}

    with BpftoolsProcess("encap-stats", "vb", "ipip0", "--netns", ns_b, "--json", "--interval", "0.2",
                         "--udp-port", "fou=5555") as proc:
        send_udp(ns_a, "10.45.1.2", 5555, count)
        proc.wait_for(lambda lines: totals(lines).get(("vb", "ingress", "ipip")) == count
                      and totals(lines).get(("ipip0", "ingress", "fou")) == count, f"{count} packets counted")
        assert proc.stop() == 0, proc.stderr
    totals = totals(proc.json_lines())
    assert totals[("ipip0", "ingress", "fou")] == count
    assert totals[("vb", "ingress", "ipip")] == count
