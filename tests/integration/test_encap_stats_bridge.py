"""encap-stats on a bridge and on one of its ports: the port sees bridged and local traffic,
the bridge device only what is delivered to (or sent by) the bridge's own stack."""
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from bpftools.netlink import interface_mac, resolve_interface
from bpftools.topology import run
from bpftools_proc import BpftoolsProcess
from packets import send_frames

BRIDGE_ADDR = "10.31.0.254"


def vxlan_frames(src_mac, dst_mac, src, dst, count):
    inner = Ether() / IP(src="192.168.77.1", dst="192.168.77.2") / UDP(dport=5000)
    return [bytes(Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst) / UDP(sport=40000 + i, dport=4789)
                  / VXLAN(vni=7) / inner) for i in range(count)]


def totals(proc):
    rows = [r for r in proc.json_lines() if r["type"] == "encap"]
    final = {}
    for r in rows:
        final[(r["ifname"], r["direction"], r["encap"])] = r["packets"]
    return final


def test_bridge_and_port_counts(bridged, topo):
    for ns in (bridged.a, bridged.b, bridged.switch):
        topo.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", 1)
    run("ip", "addr", "add", f"{BRIDGE_ADDR}/24", "dev", "br0", netns=bridged.switch)
    a_mac = interface_mac(resolve_interface("eth0", bridged.a))
    b_mac = interface_mac(resolve_interface("eth0", bridged.b))
    br_mac = interface_mac(resolve_interface("br0", bridged.switch))
    with BpftoolsProcess("encap-stats", "br0", "pa", "--netns", bridged.switch, "--json", "--interval", "0.5") as proc:
        send_frames(bridged.a, "eth0", vxlan_frames(a_mac, b_mac, bridged.addr_a, bridged.addr_b, 5))  # bridged
        send_frames(bridged.a, "eth0", vxlan_frames(a_mac, br_mac, bridged.addr_a, BRIDGE_ADDR, 3))  # to br0
        proc.wait_for(lambda _lines: totals(proc).get(("pa", "ingress", "vxlan")) == 8
                      and totals(proc).get(("br0", "ingress", "vxlan")) == 3, "the bridge and its port to count")
        assert proc.stop() == 0
    counted = totals(proc)
    assert counted[("pa", "ingress", "vxlan")] == 8, counted
    assert counted[("br0", "ingress", "vxlan")] == 3, counted
