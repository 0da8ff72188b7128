"""`bpftools encap-stats` end to end: real VXLAN tunnels, crafted packets of every type, top pairs."""
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass

import pytest
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, ICMPv6EchoRequest
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN

from bpftools.status import find_attachments
from bpftools.topology import run
from bpftools_proc import BpftoolsProcess
from waiting import wait_until
from packets import send_frames

DST_MAC, SRC_MAC = "02:00:00:00:00:02", "02:00:00:00:00:01"  # not the veths' MACs: the stack drops them quietly


@dataclass
class QuietPair:
    """ns_a:va <-> ns_b:vb, no addresses and IPv6 off: nothing but what a test sends crosses it."""
    ns_a: str
    ns_b: str


def quiet_netns(topo, role):
    ns = topo.netns(role)
    for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
        topo.sysctl(ns, key, 1)
    return ns


@pytest.fixture
def quiet_pair(topo) -> QuietPair:
    pair = QuietPair(quiet_netns(topo, "ea"), quiet_netns(topo, "eb"))
    topo.veth(pair.ns_a, "va", pair.ns_b, "vb")
    return pair


def ours(netns):
    """Names of the encap-stats programs attached in `netns` (whatever the attach method)."""
    return [a["prog_name"] for a in find_attachments([netns]) if a["prog_name"].startswith("bpftools_ec")]


def final_totals(lines):
    """(ifname, direction, encap) -> (packets, bytes) from the last report (totals since start)."""
    totals = {}
    for line in lines:
        if line["type"] == "encap":
            totals[(line["ifname"], line["direction"], line["encap"])] = (line["packets"], line["bytes"])
    return totals


def last_report(lines):
    """The rows of the newest report (all rows of one report share its `ts`)."""
    return [line for line in lines if lines and line["ts"] == lines[-1]["ts"]]


def stop_when_counted(proc, expected: dict) -> None:
    """Stop once the periodic reports show `expected` ((ifname, direction, encap) -> (packets,
    bytes), or packets alone for the keys given so): what the kernel counted, no guessing how long."""
    def reached(lines):
        totals = final_totals(lines)
        return all(totals.get(k) == v or (isinstance(v, int) and totals.get(k, (None,))[0] == v)
                   for k, v in expected.items())

    proc.wait_for(reached, f"encap-stats to count {expected}")
    assert proc.stop() == 0, proc.stderr


def v4(proto_layer, src="10.41.0.1", dst="10.41.0.2"):
    return Ether(dst=DST_MAC, src=SRC_MAC) / IP(src=src, dst=dst) / proto_layer


def v6(proto_layer, src="fd00:41::1", dst="fd00:41::2"):
    return Ether(dst=DST_MAC, src=SRC_MAC) / IPv6(src=src, dst=dst) / proto_layer


INNER4 = IP(src="192.168.7.1", dst="192.168.7.2") / ICMP()
INNER6 = IPv6(src="fd00:77::1", dst="fd00:77::2") / ICMPv6EchoRequest()
INNER_ETH = Ether(dst="02:00:00:00:07:02", src="02:00:00:00:07:01") / INNER4
# tc ingress never sees this one (the kernel drops it while taking the tag out); XDP does
CUT_VLAN_TAG = bytes(Ether(dst=DST_MAC, src=SRC_MAC) / Dot1Q(vlan=10) / INNER4)[:14 + 2]
EXTRA_PORTS = ("--udp-port", "vxlan=8472", "--udp-port", "fou=5555", "--udp-port", "gue=5556")


def crafted_frames():
    """(expected type, frame) for every type, with IPv6 outer headers, VLAN tags, odd ports, truncation."""
    plain_udp = v4(UDP(sport=40000, dport=53) / b"q")
    return [
        ("ipip", v4(INNER4)),
        ("sit", v4(INNER6)),
        ("ip6ip6", v6(INNER6)),
        ("ip4in6", v6(INNER4)),
        ("ip4in6", v6(IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / INNER4)),  # extension headers walked
        ("gre", v4(GRE(proto=0x0800) / INNER4)),
        ("gre", v6(GRE(proto=0x86DD) / INNER6)),
        ("gretap", v4(GRE(proto=0x6558) / INNER_ETH)),
        ("vxlan", v4(UDP(sport=41000, dport=4789) / VXLAN(vni=42) / INNER_ETH)),
        ("vxlan", v6(UDP(sport=41000, dport=4789) / VXLAN(vni=42) / INNER_ETH)),
        ("vxlan", v4(UDP(sport=41000, dport=8472) / VXLAN(vni=42) / INNER_ETH)),  # port from --udp-port
        ("vxlan", v6(IPv6ExtHdrFragment(offset=0, m=0) / UDP(sport=41000, dport=4789) / VXLAN() / INNER_ETH)),
        ("geneve", v4(UDP(sport=41000, dport=6081) / GENEVE(vni=42, proto=0x6558) / INNER_ETH)),
        ("geneve", v6(UDP(sport=41000, dport=6081) / GENEVE(vni=42, proto=0x6558) / INNER_ETH)),
        ("fou", v4(UDP(sport=41000, dport=5555) / INNER4)),
        ("gue", v4(UDP(sport=41000, dport=5556) / b"\x00\x04\x00\x00" / INNER4)),
        # VLAN tags: 802.1Q, and 802.1ad + 802.1Q (QinQ)
        ("vxlan", Ether(dst=DST_MAC, src=SRC_MAC) / Dot1Q(vlan=10) / IP(src="10.41.0.1", dst="10.41.0.2")
         / UDP(sport=41000, dport=4789) / VXLAN() / INNER_ETH),
        ("ipip", Ether(dst=DST_MAC, src=SRC_MAC) / Dot1AD(vlan=20) / Dot1Q(vlan=10)
         / IP(src="10.41.0.1", dst="10.41.0.2") / INNER4),
        ("gretap", Ether(dst=DST_MAC, src=SRC_MAC) / Dot1Q(vlan=10) / IPv6(src="fd00:41::1", dst="fd00:41::2")
         / GRE(proto=0x6558) / INNER_ETH),
        # plain traffic
        ("none", v4(TCP(sport=40000, dport=80))),
        ("none", plain_udp),
        ("none", v6(UDP(sport=40000, dport=53))),
        ("none", Ether(dst="ff:ff:ff:ff:ff:ff", src=SRC_MAC) / ARP(pdst="10.41.0.2")),
        ("none", v4(UDP(sport=41000, dport=4790) / VXLAN() / INNER_ETH)),  # not a configured port
        ("none", Ether(dst=DST_MAC, src=SRC_MAC) / IP(src="10.41.0.1", dst="10.41.0.2", frag=100, proto=17)
         / UDP(sport=41000, dport=4789)),  # non-first fragment: no UDP header to trust
        # truncated: counted as none, never a crash
        ("none", bytes(v4(UDP(sport=41000, dport=4789) / VXLAN()))[:14 + 20 + 4]),  # UDP header cut
        ("none", bytes(v4(INNER4))[:14 + 12]),  # IPv4 header cut
        ("none", bytes(v4(GRE(proto=0x6558) / INNER_ETH))[:14 + 20 + 2]),  # GRE header cut
        ("none", bytes(v6(IPv6ExtHdrHopByHop() / INNER4))[:14 + 40 + 4]),  # extension header cut
        ("none", bytes(v6(INNER4))[:14 + 30]),  # IPv6 header cut
        ("none", CUT_VLAN_TAG),
        ("none", bytes(Ether(dst=DST_MAC, src=SRC_MAC, type=0x0800))[:14]),  # Ethernet header only
    ]


def expected_totals(ifname, direction, frames):
    packets, sizes = Counter(), Counter()
    for encap, frame in frames:
        packets[encap] += 1
        sizes[encap] += len(bytes(frame))
    return {(ifname, direction, encap): (packets[encap], sizes[encap]) for encap in packets}


@pytest.mark.parametrize("hook", ["tc", "xdp"])
def test_crafted_packets_of_every_type_are_counted_exactly(quiet_pair, hook):
    frames = crafted_frames()
    assert {encap for encap, _ in frames} == {"none", "ipip", "sit", "ip6ip6", "ip4in6", "gre", "gretap", "vxlan",
                                             "geneve", "fou", "gue"}
    seen_on_ingress = frames if hook == "xdp" else [(e, f) for e, f in frames if f is not CUT_VLAN_TAG]
    expected = {**expected_totals("vb", "ingress", seen_on_ingress), **expected_totals("vb", "egress", frames)}
    with BpftoolsProcess("encap-stats", "vb", "--netns", quiet_pair.ns_b, "--ingress-hook", hook, "--json",
                         "--interval", "0.2", *EXTRA_PORTS) as proc:
        send_frames(quiet_pair.ns_a, "va", [f for _, f in frames])  # arrive on vb: ingress
        send_frames(quiet_pair.ns_b, "vb", [f for _, f in frames])  # leave through vb: egress
        stop_when_counted(proc, expected)
    assert final_totals(last_report(proc.json_lines())) == expected
    assert "Traceback" not in proc.stderr


@dataclass
class VxlanPair:
    ns_a: str
    ns_b: str
    vxlan_b: str = "10.42.1.2"


@pytest.fixture
def vxlan_pair(topo) -> VxlanPair:
    """Underlay va 10.42.0.1 <-> vb 10.42.0.2; vxlan0 (VNI 42) 10.42.1.1 <-> 10.42.1.2 over it; static
    neighbours and IPv6 off, so the only packets crossing are the test's."""
    pair = VxlanPair(quiet_netns(topo, "xa"), quiet_netns(topo, "xb"))
    topo.veth(pair.ns_a, "va", pair.ns_b, "vb", "10.42.0.1/24", "10.42.0.2/24")
    ends = [(pair.ns_a, "va", "10.42.0.1", "10.42.1.1", "02:00:00:42:00:01"),
            (pair.ns_b, "vb", "10.42.0.2", "10.42.1.2", "02:00:00:42:00:02")]
    for (ns, dev, local, inner, mac), (peer_ns, peer_dev, remote, peer_inner, peer_mac) in zip(ends, ends[::-1]):
        peer_dev_mac = run("cat", f"/sys/class/net/{peer_dev}/address", netns=peer_ns).stdout.strip()
        run("ip", "neigh", "add", remote, "lladdr", peer_dev_mac, "dev", dev, "nud", "permanent", netns=ns)
        run("ip", "link", "add", "vxlan0", "address", mac, "type", "vxlan", "id", "42", "local", local, "remote",
            remote, "dstport", "4789", "dev", dev, netns=ns)
        run("ip", "addr", "add", f"{inner}/24", "dev", "vxlan0", netns=ns)
        run("ip", "link", "set", "vxlan0", "up", netns=ns)
        run("ip", "neigh", "add", peer_inner, "lladdr", peer_mac, "dev", "vxlan0", "nud", "permanent", netns=ns)
    return pair


@pytest.mark.parametrize("hook", ["tc", "xdp"])
def test_real_vxlan_tunnel_counts_equal_packets_sent(vxlan_pair, hook):
    count = 5
    with BpftoolsProcess("encap-stats", "vb", "vxlan0", "--netns", vxlan_pair.ns_b, "--ingress-hook", hook,
                         "--json", "--interval", "0.5", "--top", "3") as proc:
        ping = run("ping", "-c", str(count), "-i", "0.2", "-W", "2", vxlan_pair.vxlan_b, netns=vxlan_pair.ns_a,
                   check=False)
        assert f"{count} received" in ping.stdout, ping.stdout
        stop_when_counted(proc, {("vb", "ingress", "vxlan"): count, ("vb", "egress", "vxlan"): count})
    lines = proc.json_lines()
    totals = final_totals(lines)
    frame = 14 + 20 + 8 + 8 + 14 + 84  # underlay Ethernet/IPv4/UDP/VXLAN + inner Ethernet + 84-byte ping
    assert totals[("vb", "ingress", "vxlan")] == (count, count * frame)
    assert totals[("vb", "egress", "vxlan")] == (count, count * frame)
    assert totals[("vxlan0", "ingress", "none")] == (count, count * (14 + 84))
    assert totals[("vxlan0", "egress", "none")] == (count, count * (14 + 84))
    assert not [k for k in totals if k[0] == "vxlan0" and k[2] != "none"]
    assert {line["netns"] for line in lines} == {vxlan_pair.ns_b}
    # several reports, totals only grow, the last is the final one
    assert len({line["ts"] for line in lines}) >= 2
    # the final report's top lines; two reports may share a timestamp (whole seconds), the later wins
    top = {(t["encap"], t["src"], t["dst"]): t for t in lines if t["type"] == "top" and t["ts"] == lines[-1]["ts"]}
    assert sorted(key + (t["packets"],) for key, t in top.items()) == [
        ("vxlan", "10.42.0.1", "10.42.0.2", count), ("vxlan", "10.42.0.2", "10.42.0.1", count)]
    assert sorted(t["rank"] for t in top.values()) == [1, 2]


def test_top_is_bounded_to_n_per_type(quiet_pair):
    frames = [v4(INNER4, src=f"10.43.0.{i}", dst="10.43.1.1") for i in range(1, 6) for _ in range(i)]
    frames += [v4(UDP(sport=1, dport=4789) / VXLAN() / INNER_ETH, src="10.43.2.1", dst="10.43.2.2")]
    frames += [v6(GRE(proto=0x6558) / INNER_ETH, src="fd00:43::1", dst="fd00:43::2")] * 2
    frames += [v4(TCP())] * 9  # plain traffic never enters the pairs map
    with BpftoolsProcess("encap-stats", "vb", "--netns", quiet_pair.ns_b, "--json", "--interval", "0.2",
                         "--top", "2") as proc:
        send_frames(quiet_pair.ns_a, "va", frames)
        stop_when_counted(proc, {("vb", "ingress", "ipip"): 15, ("vb", "ingress", "vxlan"): 1,
                                 ("vb", "ingress", "gretap"): 2})
    top = [(t["encap"], t["rank"], t["src"], t["dst"], t["packets"]) for t in last_report(proc.json_lines())
           if t["type"] == "top"]
    assert top == [("ipip", 1, "10.43.0.5", "10.43.1.1", 5), ("ipip", 2, "10.43.0.4", "10.43.1.1", 4),
                   ("gretap", 1, "fd00:43::1", "fd00:43::2", 2), ("vxlan", 1, "10.43.2.1", "10.43.2.2", 1)]


def test_rates_match_the_packets_counted_between_reports(quiet_pair):
    """packets/s and bits/s beside the totals: each report's rate times the time since the
    previous report is what was counted in between; the final report averages the whole run."""
    frame = v4(INNER4)
    with BpftoolsProcess("encap-stats", "vb", "--netns", quiet_pair.ns_b, "--json", "--interval", "0.3") as proc:
        send_frames(quiet_pair.ns_a, "va", [frame] * 40)
        proc.wait_for(lambda lines: final_totals(lines).get(("vb", "ingress", "ipip"), (0,))[0] == 40, "40 counted")
        send_frames(quiet_pair.ns_a, "va", [frame] * 25)
        stop_when_counted(proc, {("vb", "ingress", "ipip"): 65})
    key = ("vb", "ingress", "ipip")
    # One row of that key in every report from its first on (a counter row appears once it counts
    # and stays); the last report is the final one, whose timestamp may equal the one before it.
    reports = [(line["ts"], line) for line in proc.json_lines() if (line["ifname"], line["direction"], line["encap"]) == key]
    first_ts = proc.json_lines()[0]["ts"]
    for (previous, before), (ts, row) in zip(reports, reports[1:-1]):
        counted = row["packets"] - before["packets"]
        if ts > previous:
            assert row["packets_per_second"] * (ts - previous) == pytest.approx(counted, rel=0.05, abs=0.5)
            assert row["bits_per_second"] == pytest.approx(row["packets_per_second"] * len(bytes(frame)) * 8, rel=1e-3)
    assert reports[-2][1]["packets"] == reports[-1][1]["packets"] == 65
    final = reports[-1][1]
    # averaged over the run, which began one interval before the first report
    assert final["packets_per_second"] == pytest.approx(65 / (final["ts"] - first_ts + 0.3), rel=0.2)
    assert final["bits_per_second"] == pytest.approx(final["packets_per_second"] * len(bytes(frame)) * 8, rel=1e-3)


def test_duration_ends_cleanly_and_detaches(quiet_pair):
    proc = subprocess.run([sys.executable, "-m", "bpftools", "encap-stats", "vb", "--netns", quiet_pair.ns_b,
                           "--duration", "1", "--interval", "0.4"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "IFACE" in proc.stdout and "Traceback" not in proc.stderr
    assert ours(quiet_pair.ns_b) == []


@pytest.mark.parametrize("method", ["link", "netlink"])
def test_sigterm_detaches_and_prints_final_totals(quiet_pair, monkeypatch, method):
    if method == "netlink":
        monkeypatch.setenv("BPFTOOLS_ATTACH", "netlink")  # clsact filters instead of tcx links
    with BpftoolsProcess("encap-stats", "vb", "--netns", quiet_pair.ns_b, "--json", "--interval", "0.2") as proc:
        send_frames(quiet_pair.ns_a, "va", [v4(INNER4)] * 3)
        proc.wait_for(lambda lines: final_totals(lines).get(("vb", "ingress", "ipip"), (0,))[0] == 3,
                      "the 3 ipip packets to be counted")
        assert sorted(ours(quiet_pair.ns_b)) == ["bpftools_ec_eg", "bpftools_ec_in"]
        proc.stop(signal.SIGTERM)
    assert proc.proc.returncode in (0, 130) and "Traceback" not in proc.stderr
    assert final_totals(proc.json_lines())[("vb", "ingress", "ipip")] == (3, 3 * len(bytes(v4(INNER4))))
    assert ours(quiet_pair.ns_b) == []


def test_unknown_interface_is_one_line_error(quiet_pair):
    proc = subprocess.run([sys.executable, "-m", "bpftools", "encap-stats", "nope0", "--netns", quiet_pair.ns_b],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"bpftools: error: interface 'nope0' not found in network namespace {quiet_pair.ns_b!r}"]


def tcp_segments_sent(netns):
    """Segments the namespace's TCP sent (OutSegs + RetransSegs): a GSO packet counts its segments there."""
    lines = [line.split() for line in run("cat", "/proc/net/snmp", netns=netns).stdout.splitlines()
             if line.startswith("Tcp:")]
    values = dict(zip(lines[0][1:], map(int, lines[1][1:])))
    return values["OutSegs"] + values["RetransSegs"]


def test_gso_packets_count_their_segments(vxlan_pair):
    """A TCP transfer through the tunnel: GSO packets on the underlay count as the TCP segments they carry."""
    server = subprocess.Popen(["ip", "netns", "exec", vxlan_pair.ns_b, "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: ":5201 " in run("ss", "-Hltn", netns=vxlan_pair.ns_b).stdout, "iperf3 -s to listen")
        with BpftoolsProcess("encap-stats", "vb", "--netns", vxlan_pair.ns_b, "--json", "--interval", "0.2") as proc:
            before = [tcp_segments_sent(ns) for ns in (vxlan_pair.ns_a, vxlan_pair.ns_b)]
            run("iperf3", "-c", vxlan_pair.vxlan_b, "-n", "8M", netns=vxlan_pair.ns_a)
            server.wait(timeout=10)
            after = [tcp_segments_sent(ns) for ns in (vxlan_pair.ns_a, vxlan_pair.ns_b)]
            stop_when_counted(proc, {("vb", "ingress", "vxlan"): after[0] - before[0],
                                     ("vb", "egress", "vxlan"): after[1] - before[1]})
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    totals = final_totals(proc.json_lines())
    assert totals[("vb", "ingress", "vxlan")][0] == after[0] - before[0]  # A's segments arrive on vb
    assert totals[("vb", "egress", "vxlan")][0] == after[1] - before[1]  # B's leave through vb
    packets, size = totals[("vb", "ingress", "vxlan")]
    assert packets > 500 and 1000 < size / packets < 1500  # full-size segments, a GSO packet's headers once


def test_headers_in_paged_data_are_pulled(quiet_pair):
    """AF_PACKET builds frames over a page with only the Ethernet header linear: tc pulls the rest once."""
    for ns, dev in ((quiet_pair.ns_a, "va"), (quiet_pair.ns_b, "vb")):
        run("ip", "link", "set", dev, "mtu", "9000", netns=ns)
    jumbo = [("vxlan", v4(UDP(sport=41000, dport=4789) / VXLAN() / INNER_ETH / (b"j" * 5000))),
             ("gretap", v6(GRE(proto=0x6558) / INNER_ETH / (b"j" * 5000))),
             ("none", v4(TCP(sport=40000, dport=80) / (b"j" * 5000)))]
    expected = {**expected_totals("vb", "ingress", jumbo), **expected_totals("vb", "egress", jumbo)}
    with BpftoolsProcess("encap-stats", "vb", "--netns", quiet_pair.ns_b, "--json", "--interval", "0.2") as proc:
        send_frames(quiet_pair.ns_a, "va", [f for _, f in jumbo])
        send_frames(quiet_pair.ns_b, "vb", [f for _, f in jumbo])
        stop_when_counted(proc, expected)
    assert final_totals(last_report(proc.json_lines())) == expected
