"""`bpftools lab`: common namespace topologies built in namespaces named `bpftlab-<topology>-<role>`,
and the faults that break their pings, for learning, demos and `diagnose` tests.

Nothing here touches the namespace bpftools runs in: the "host" of these setups is a
namespace too (`bpftlab-veth-host`). `lab down --all` removes every `bpftlab-` namespace.

The topologies are dual-stack (IPv4 and IPv6, fd00:7N:: ULA addresses, no duplicate address
detection so nothing waits on "tentative" addresses); a fault with an IPv6 counterpart
(`Fault.ipv6`) breaks the IPv6 ping the same way (`lab break NAME FAULT -6`)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional

from .errors import BpftoolsError, survive
from .netlink import named_netns
from .topology import kill_netns_processes, run, unique_name

log = logging.getLogger(__name__)

from .lab_model import (PREFIX, PREFIX_ENV, STATE_DIR, Fault, LabBuilder, LabTopology, Step,  # noqa: F401
                        fault_label, parse_fault_label, prefix, six)


# -- topologies ---------------------------------------------------------------------------------

def _build_veth(b: LabBuilder) -> None:
    host, ns1 = b.netns("host"), b.netns("ns1")
    b.veth(host, "veth0", ns1, "eth0", "10.70.0.1/24", "10.70.0.2/24")
    b.run("ns1", "ip", "addr", "add", "10.70.0.3/32", "dev", "lo")   # a service address, answered over eth0
    b.addr6("host", "veth0", "fd00:70::1/64")
    b.addr6("ns1", "eth0", "fd00:70::2/64")


def _build_bridge(b: LabBuilder) -> None:
    a, bb, sw = b.netns("a"), b.netns("b"), b.netns("sw")
    b.veth(a, "eth0", sw, "pa", "10.71.0.1/24")
    b.veth(bb, "eth0", sw, "pb", "10.71.0.2/24")
    b.bridge(sw, "br0", ["pa", "pb"], "10.71.0.254/24")
    b.addr6("a", "eth0", "fd00:71::1/64")
    b.addr6("b", "eth0", "fd00:71::2/64")
    b.addr6("sw", "br0", "fd00:71::fe/64")


def _build_routed(b: LabBuilder) -> None:
    left, router, right = b.netns("left"), b.netns("router"), b.netns("right")
    b.veth(left, "eth0", router, "r-left", "10.72.1.2/24", "10.72.1.1/24")
    b.veth(right, "eth0", router, "r-right", "10.72.2.2/24", "10.72.2.1/24")
    b.veth(right, "eth1", router, "r-right2", "10.72.3.2/24", "10.72.3.1/24")  # a second, backup link
    b.sysctl(router, "net.ipv4.ip_forward", 1)
    b.run("left", "ip", "route", "add", "default", "via", "10.72.1.1")
    b.run("right", "ip", "route", "add", "default", "via", "10.72.2.1")
    for role, ifname, cidr in (("left", "eth0", "fd00:72:1::2/64"), ("router", "r-left", "fd00:72:1::1/64"),
                               ("right", "eth0", "fd00:72:2::2/64"), ("router", "r-right", "fd00:72:2::1/64"),
                               ("right", "eth1", "fd00:72:3::2/64"), ("router", "r-right2", "fd00:72:3::1/64")):
        b.addr6(role, ifname, cidr)
    b.sysctl(router, "net.ipv6.conf.all.forwarding", 1)
    b.run("left", "ip", "-6", "route", "add", "default", "via", "fd00:72:1::1")
    b.run("right", "ip", "-6", "route", "add", "default", "via", "fd00:72:2::1")


def _build_ipip(b: LabBuilder) -> None:
    ns1, hub, ns2 = b.netns("ns1"), b.netns("hub"), b.netns("ns2")
    b.veth(ns1, "v1", hub, "v1_p", "10.73.10.2/24", "10.73.10.1/24")
    b.veth(ns2, "v2", hub, "v2_p", "10.73.20.2/24", "10.73.20.1/24")
    b.sysctl(hub, "net.ipv4.ip_forward", 1)
    b.run("ns1", "ip", "route", "add", "10.73.20.0/24", "via", "10.73.10.1")
    b.run("ns2", "ip", "route", "add", "10.73.10.0/24", "via", "10.73.20.1")
    try:
        b.run("ns1", "ip", "tunnel", "add", "tun1", "mode", "ipip", "remote", "10.73.20.2", "local", "10.73.10.2")
    except BpftoolsError:
        raise BpftoolsError("this kernel has no ipip module, so the ipip lab cannot be built "
                            "(see `bpftools doctor`: ipip_module)") from None
    b.run("ns2", "ip", "tunnel", "add", "tun1", "mode", "ipip", "remote", "10.73.10.2", "local", "10.73.20.2")
    b.run("ns1", "ip", "addr", "add", "10.73.100.1", "peer", "10.73.100.2", "dev", "tun1")
    b.run("ns2", "ip", "addr", "add", "10.73.100.2", "peer", "10.73.100.1", "dev", "tun1")
    b.run("ns1", "ip", "link", "set", "tun1", "up")
    b.run("ns2", "ip", "link", "set", "tun1", "up")


def _build_veth_pair(b: LabBuilder) -> None:
    """The usual commands, one for one: both ends of one veth pair in one namespace."""
    b.netns("host")
    for cmd in (["ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"],
                ["ip", "addr", "add", "192.168.4.3/24", "dev", "veth0"],
                ["ip", "addr", "add", "192.168.4.2/24", "dev", "veth1"],
                ["ip", "link", "set", "veth0", "up"], ["ip", "link", "set", "veth1", "up"],
                _sysctl("net.ipv4.conf.all.rp_filter", 0), _sysctl("net.ipv4.conf.veth0.rp_filter", 0)):
        b.run("host", *cmd)


MACVLAN_SHIM = "shim-lan0"   # macvlan.shim_name of the parent lan0: what diagnose's fix names it


def _macvlan_child(b: LabBuilder, role: str, cidr: str, mode: str = "bridge") -> None:
    """A macvlan child of the host's lan0, moved into the namespace of `role` as eth0 (a
    container on a Docker macvlan network)."""
    tmp = unique_name("btm")
    b.run("host", "ip", "link", "add", tmp, "link", "lan0", "type", "macvlan", "mode", mode)
    b.run("host", "ip", "link", "set", tmp, "netns", b.topo.ns(role))
    b.run(role, "ip", "link", "set", tmp, "name", "eth0")
    b.run(role, "ip", "addr", "add", cidr, "dev", "eth0")
    b.run(role, "ip", "link", "set", "eth0", "up")


def _macvlan_shim() -> List[Step]:
    """The host reaches its macvlan child through a shim: a bridge-mode sibling with the host's
    address and a /32 route to the child (what `diagnose` prints for macvlan_parent_isolation)."""
    return [("host", cmd) for cmd in (
        ["ip", "link", "add", MACVLAN_SHIM, "link", "lan0", "type", "macvlan", "mode", "bridge"],
        ["ip", "addr", "add", "10.74.0.1/32", "dev", MACVLAN_SHIM],
        ["ip", "link", "set", MACVLAN_SHIM, "up"],
        ["ip", "route", "add", "10.74.0.2/32", "dev", MACVLAN_SHIM])]


def _build_macvlan(b: LabBuilder) -> None:
    host, lan = b.netns("host"), b.netns("lan")
    b.netns("ctr")
    b.netns("ctr2")
    b.veth(host, "lan0", lan, "eth0", "10.74.0.1/24", "10.74.0.3/24")   # the host's LAN and another host on it
    _macvlan_child(b, "ctr", "10.74.0.2/24")
    _macvlan_child(b, "ctr2", "10.74.0.4/24")
    for role, cmd in _macvlan_shim():
        b.run(role, *cmd)


def _responder(verb: str, ifname: str = "tun0", address: str = "10.75.0.2") -> List[str]:
    """Start or stop the lab's responder (bpftools/lab_tun.py), the program holding a tun/tap device."""
    return [sys.executable, "-m", "bpftools.lab_tun", verb, ifname] + ([address] if verb == "start" else [])


def _build_tun(b: LabBuilder) -> None:
    b.netns("host")
    for cmd in (["ip", "tuntap", "add", "dev", "tun0", "mode", "tun"], ["ip", "addr", "add", "10.75.0.1/24", "dev", "tun0"],
                ["ip", "link", "set", "tun0", "up"], _responder("start")):
        b.run("host", *cmd)


def _vm(verb: str) -> List[str]:
    return _responder(verb, "tap0", "10.76.0.2")


def _build_tap(b: LabBuilder) -> None:
    host = b.netns("host")
    b.run("host", "ip", "tuntap", "add", "dev", "tap0", "mode", "tap")
    b.run("host", "ip", "link", "set", "tap0", "up")
    b.bridge(host, "br0", ["tap0"], "10.76.0.1/24")
    b.run("host", *_vm("start"))


def _sysctl(key: str, value) -> List[str]:
    return ["sysctl", "-qw", f"{key}={value}"]


def _readd6(ifname: str, cidr: str) -> List[str]:
    """An MTU below 1280 removes a link's IPv6 addresses: undoing such a fault puts them back."""
    return ["ip", "-6", "addr", "replace", cidr, "dev", ifname, "nodad"]


TOPOLOGIES: Dict[str, LabTopology] = {t.name: t for t in [
    LabTopology("veth", "a veth pair between a namespace and the host's stand-in (the classic netns + veth setup)",
                _build_veth, "host", "10.70.0.2", ping_to6="fd00:70::2", faults={f.name: f for f in [
                    Fault("link_down", "the namespace's end of the veth pair is down",
                          [("ns1", ["ip", "link", "set", "eth0", "down"])],
                          [("ns1", ["ip", "link", "set", "eth0", "up"])], **six()),
                    Fault("netfilter_drop", "INPUT drops ICMP echo requests in the namespace",
                          [("ns1", ["iptables", "-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request",
                                    "-j", "DROP"])],
                          [("ns1", ["iptables", "-D", "INPUT", "-p", "icmp", "--icmp-type", "echo-request",
                                    "-j", "DROP"])],
                          **six([("ns1", ["ip6tables", "-A", "INPUT", "-p", "ipv6-icmp", "--icmpv6-type",
                                          "echo-request", "-j", "DROP"])],
                                [("ns1", ["ip6tables", "-D", "INPUT", "-p", "ipv6-icmp", "--icmpv6-type",
                                          "echo-request", "-j", "DROP"])])),
                    Fault("local_source", "the namespace also has the host's address (a stray VIP): the "
                          "ping's source is martian there (IPv6: the reply stays there)",
                          [("ns1", ["ip", "addr", "add", "10.70.0.1/32", "dev", "lo"])],
                          [("ns1", ["ip", "addr", "del", "10.70.0.1/32", "dev", "lo"])],
                          **six([("ns1", ["ip", "-6", "addr", "add", "fd00:70::1/128", "dev", "lo"])],
                                [("ns1", ["ip", "-6", "addr", "del", "fd00:70::1/128", "dev", "lo"])])),
                    Fault("mtu", "the namespace's end has a 68-byte MTU (the host's end 1500)",
                          [("ns1", ["ip", "link", "set", "eth0", "mtu", "68"])],
                          [("ns1", ["ip", "link", "set", "eth0", "mtu", "1500"]),
                           ("ns1", _readd6("eth0", "fd00:70::2/64"))],
                          **six([("ns1", ["ip", "link", "set", "eth0", "mtu", "1280"])],
                                [("ns1", ["ip", "link", "set", "eth0", "mtu", "1500"])], size=1300)),
                    Fault("neighbor_unreachable", "a stale static ARP entry for the namespace's address",
                          [("host", ["ip", "neigh", "replace", "10.70.0.2", "lladdr", "02:00:00:00:00:99",
                                     "nud", "permanent", "dev", "veth0"])],
                          [("host", ["ip", "neigh", "del", "10.70.0.2", "dev", "veth0"])],
                          **six([("host", ["ip", "neigh", "replace", "fd00:70::2", "lladdr", "02:00:00:00:00:99",
                                           "nud", "permanent", "dev", "veth0"])],
                                [("host", ["ip", "neigh", "del", "fd00:70::2", "dev", "veth0"])])),
                    Fault("xdp_drop", "an XDP program on the namespace's end drops ICMP",
                          [], [("ns1", ["ip", "link", "set", "dev", "eth0", "xdp", "off"])],
                          program=("ns1", "eth0", "xdp"), **six()),
                    Fault("tc_drop", "a tc ingress program on the namespace's end drops ICMP",
                          [], [("ns1", ["tc", "qdisc", "del", "dev", "eth0", "clsact"])],
                          program=("ns1", "eth0", "tc"), **six()),
                    Fault("echo_ignored", "the namespace ignores every echo request (icmp_echo_ignore_all)",
                          [("ns1", _sysctl("net.ipv4.icmp_echo_ignore_all", 1))],
                          [("ns1", _sysctl("net.ipv4.icmp_echo_ignore_all", 0))],
                          **six([("ns1", _sysctl("net.ipv6.icmp.echo_ignore_all", 1))],
                                [("ns1", _sysctl("net.ipv6.icmp.echo_ignore_all", 0))])),
                    Fault("arp_ignore", "arp_ignore = 1 in the namespace: its service address on lo is not "
                          "answered on eth0",
                          [("ns1", _sysctl("net.ipv4.conf.all.arp_ignore", 1))],
                          [("ns1", _sysctl("net.ipv4.conf.all.arp_ignore", 0)),
                           ("ns1", _sysctl("net.ipv4.conf.eth0.arp_ignore", 0))], ping_to="10.70.0.3"),
                    Fault("no_route", "a policy rule sends the namespace's subnet to table 100, which "
                          "blackholes it",
                          [("host", ["ip", "route", "add", "blackhole", "10.70.0.0/24", "table", "100"]),
                           ("host", ["ip", "rule", "add", "to", "10.70.0.0/24", "lookup", "100", "priority",
                                     "1000"])],
                          [("host", ["ip", "rule", "del", "priority", "1000"]),
                           ("host", ["ip", "route", "del", "blackhole", "10.70.0.0/24", "table", "100"])],
                          **six([("host", ["ip", "-6", "route", "add", "blackhole", "fd00:70::/64", "table", "100"]),
                                 ("host", ["ip", "-6", "rule", "add", "to", "fd00:70::/64", "lookup", "100",
                                           "priority", "1000"])],
                                [("host", ["ip", "-6", "rule", "del", "priority", "1000"]),
                                 ("host", ["ip", "-6", "route", "del", "blackhole", "fd00:70::/64", "table",
                                           "100"])])),
                ]}),
    LabTopology("bridge", "two namespaces joined by br0 in a switch namespace (like Docker's default bridge)",
                _build_bridge, "a", "10.71.0.2", ping_to6="fd00:71::2", faults={f.name: f for f in [
                    Fault("bridge_netfilter", "br_netfilter sends bridged frames through iptables, and FORWARD "
                          "drops them (Docker's FORWARD DROP)",
                          [("sw", _sysctl("net.bridge.bridge-nf-call-iptables", 1)),
                           ("sw", ["iptables", "-P", "FORWARD", "DROP"])],
                          [("sw", ["iptables", "-P", "FORWARD", "ACCEPT"])],
                          **six([("sw", _sysctl("net.bridge.bridge-nf-call-ip6tables", 1)),
                                 ("sw", ["ip6tables", "-P", "FORWARD", "DROP"])],
                                [("sw", ["ip6tables", "-P", "FORWARD", "ACCEPT"])])),
                    Fault("bridge_port_address", "the switch's address is on the bridge port pa instead of br0",
                          [("sw", ["ip", "addr", "del", "10.71.0.254/24", "dev", "br0"]),
                           ("sw", ["ip", "addr", "add", "10.71.0.254/24", "dev", "pa"])],
                          [("sw", ["ip", "addr", "del", "10.71.0.254/24", "dev", "pa"]),
                           ("sw", ["ip", "addr", "add", "10.71.0.254/24", "dev", "br0"])],
                          ping_from="sw", ping_to="10.71.0.1",
                          **six([("sw", ["ip", "-6", "addr", "del", "fd00:71::fe/64", "dev", "br0"]),
                                 ("sw", ["ip", "-6", "addr", "add", "fd00:71::fe/64", "dev", "pa", "nodad"])],
                                [("sw", ["ip", "-6", "addr", "del", "fd00:71::fe/64", "dev", "pa"]),
                                 ("sw", _readd6("br0", "fd00:71::fe/64"))], ping_to="fd00:71::1")),
                    Fault("link_down", "the bridge port towards b is down",
                          [("sw", ["ip", "link", "set", "pb", "down"])],
                          [("sw", ["ip", "link", "set", "pb", "up"])], **six()),
                    Fault("mtu", "the bridge port towards b has a 68-byte MTU",
                          [("sw", ["ip", "link", "set", "pb", "mtu", "68"])],
                          [("sw", ["ip", "link", "set", "pb", "mtu", "1500"]),
                           ("sw", _readd6("br0", "fd00:71::fe/64"))],  # br0 follows its smallest port
                          **six([("sw", ["ip", "link", "set", "pb", "mtu", "1280"])],
                                [("sw", ["ip", "link", "set", "pb", "mtu", "1500"])], size=1300)),
                    Fault("no_return_route", "a prohibit rule in b refuses every route back to a",
                          [("b", ["ip", "rule", "add", "to", "10.71.0.1", "prohibit", "priority", "900"])],
                          [("b", ["ip", "rule", "del", "priority", "900"])],
                          **six([("b", ["ip", "-6", "rule", "add", "to", "fd00:71::1", "prohibit", "priority", "900"])],
                                [("b", ["ip", "-6", "rule", "del", "priority", "900"])])),
                ]}),
    LabTopology("routed", "two namespaces routed through a router namespace (with a second, backup link "
                "to the right)", _build_routed, "left", "10.72.2.2", ping_to6="fd00:72:2::2", faults={f.name: f for f in [
                    Fault("ip_forward_disabled", "the router does not forward",
                          [("router", _sysctl("net.ipv4.ip_forward", 0))],
                          [("router", _sysctl("net.ipv4.ip_forward", 1))],
                          **six([("router", _sysctl("net.ipv6.conf.all.forwarding", 0))],
                                [("router", _sysctl("net.ipv6.conf.all.forwarding", 1))])),
                    Fault("netfilter_drop", "the router's FORWARD policy is DROP",
                          [("router", ["iptables", "-P", "FORWARD", "DROP"])],
                          [("router", ["iptables", "-P", "FORWARD", "ACCEPT"])],
                          **six([("router", ["ip6tables", "-P", "FORWARD", "DROP"])],
                                [("router", ["ip6tables", "-P", "FORWARD", "ACCEPT"])])),
                    Fault("no_route", "left has no route to the right subnet (its default route is gone)",
                          [("left", ["ip", "route", "del", "default"])],
                          [("left", ["ip", "route", "replace", "default", "via", "10.72.1.1"])],
                          **six([("left", ["ip", "-6", "route", "del", "default"])],
                                [("left", ["ip", "-6", "route", "replace", "default", "via", "fd00:72:1::1"])])),
                    Fault("no_return_route", "right has no route back to left (its default route is gone)",
                          [("right", ["ip", "route", "del", "default"])],
                          [("right", ["ip", "route", "replace", "default", "via", "10.72.2.1"])],
                          **six([("right", ["ip", "-6", "route", "del", "default"])],
                                [("right", ["ip", "-6", "route", "replace", "default", "via", "fd00:72:2::1"])])),
                    Fault("rp_filter", "strict rp_filter on right, whose route back to left uses the backup "
                          "link (asymmetric routing)",
                          [("right", ["ip", "route", "add", "10.72.1.0/24", "via", "10.72.3.1", "dev", "eth1"]),
                           ("right", _sysctl("net.ipv4.conf.all.rp_filter", 1)),
                           ("right", _sysctl("net.ipv4.conf.eth0.rp_filter", 1))],
                          [("right", ["ip", "route", "del", "10.72.1.0/24", "via", "10.72.3.1", "dev", "eth1"]),
                           ("right", _sysctl("net.ipv4.conf.all.rp_filter", 0)),
                           ("right", _sysctl("net.ipv4.conf.eth0.rp_filter", 0))]),
                    Fault("mtu", "the router's interface towards right has a 68-byte MTU (IPv6: 1280, and left "
                          "drops ICMPv6 packet-too-big, so path MTU discovery cannot help: a black hole)",
                          [("router", ["ip", "link", "set", "r-right", "mtu", "68"])],
                          [("router", ["ip", "link", "set", "r-right", "mtu", "1500"]),
                           ("router", _readd6("r-right", "fd00:72:2::1/64"))],
                          **six([("router", ["ip", "link", "set", "r-right", "mtu", "1280"]),
                                 ("left", ["ip6tables", "-A", "INPUT", "-p", "ipv6-icmp", "--icmpv6-type",
                                           "packet-too-big", "-j", "DROP"])],
                                [("router", ["ip", "link", "set", "r-right", "mtu", "1500"]),
                                 ("left", ["ip6tables", "-D", "INPUT", "-p", "ipv6-icmp", "--icmpv6-type",
                                           "packet-too-big", "-j", "DROP"])], size=1300)),
                    Fault("link_down", "the router's interface towards right is down",
                          [("router", ["ip", "link", "set", "r-right", "down"])],
                          [("router", ["ip", "link", "set", "r-right", "up"])], **six()),
                    Fault("neighbor_unreachable", "left's default gateway is an address nobody has",
                          [("left", ["ip", "route", "replace", "default", "via", "10.72.1.254"])],
                          [("left", ["ip", "route", "replace", "default", "via", "10.72.1.1"])],
                          **six([("left", ["ip", "-6", "route", "replace", "default", "via", "fd00:72:1::fe"])],
                                [("left", ["ip", "-6", "route", "replace", "default", "via", "fd00:72:1::1"])])),
                ]}),
    LabTopology("veth-pair", "both ends of one veth pair in one namespace, veth0 192.168.4.3/24 and veth1 "
                "192.168.4.2/24, and `ping -I veth0 192.168.4.2` (a setup many veth guides start with)", _build_veth_pair,
                "host",
                "192.168.4.2", ping_device="veth0", starts_broken="local_source", faults={f.name: f for f in [
                    Fault("local_source", "accept_local = 0 (the default), so the request, which leaves by veth0 "
                          "and comes back in on veth1 with a source of this namespace, is dropped as a martian",
                          [("host", _sysctl("net.ipv4.conf.veth0.accept_local", 0)),
                           ("host", _sysctl("net.ipv4.conf.veth1.accept_local", 0))],
                          [("host", _sysctl("net.ipv4.conf.veth0.accept_local", 1)),
                           ("host", _sysctl("net.ipv4.conf.veth1.accept_local", 1))]),
                ]}),
    LabTopology("tun", "a persistent tun device tun0 (10.75.0.1/24) held by a small responder program that answers "
                "for 10.75.0.2 behind it (what a VPN client is)", _build_tun, "host", "10.75.0.2",
                faults={f.name: f for f in [
                    Fault("tun_no_program", "the program holding tun0 has ended: tun0 has no carrier and drops "
                          "what is routed to it", [("host", _responder("stop"))], [("host", _responder("start"))],
                          printed_fix=False),
                ]}),
    LabTopology("tap", "a bridge br0 (10.76.0.1/24) whose port tap0 is a VM's: the lab's responder holds it and "
                "answers ARP and ping for 10.76.0.2", _build_tap, "host", "10.76.0.2", faults={f.name: f for f in [
                    Fault("tun_no_program", "the VM is down: nothing holds its TAP port tap0",
                          [("host", _vm("stop"))], [("host", _vm("start"))], printed_fix=False),
                ]}),
    LabTopology("ipip", "an ipip tunnel between two namespaces across a forwarding hub (the classic netns + ipip setup)",
                _build_ipip, "ns1", "10.73.100.2", requires="ipip_module", faults={f.name: f for f in [
                    Fault("ip_forward_disabled", "the hub between the tunnel ends does not forward",
                          [("hub", _sysctl("net.ipv4.ip_forward", 0))],
                          [("hub", _sysctl("net.ipv4.ip_forward", 1))]),
                    Fault("no_route", "ns1 has no underlay route to the far tunnel end",
                          [("ns1", ["ip", "route", "del", "10.73.20.0/24"])],
                          [("ns1", ["ip", "route", "replace", "10.73.20.0/24", "via", "10.73.10.1"])]),
                    Fault("link_down", "the far tunnel device is down",
                          [("ns2", ["ip", "link", "set", "tun1", "down"])],
                          [("ns2", ["ip", "link", "set", "tun1", "up"])]),
                ]}),
    LabTopology("macvlan", "two containers with macvlan (bridge mode) children of the host's LAN interface lan0, "
                "another host on that LAN, and the host's shim that lets it reach the first container (as on a "
                "Docker macvlan network)", _build_macvlan, "ctr", "10.74.0.3", faults={f.name: f for f in [
                    Fault("macvlan_parent_isolation", "the host has no macvlan shim: it cannot reach its own "
                          "container, a child of its lan0",
                          [("host", ["ip", "link", "del", MACVLAN_SHIM])], _macvlan_shim(),
                          ping_from="host", ping_to="10.74.0.2"),
                    Fault("macvlan_mode", "the second container's macvlan child is in private mode: the first "
                          "container cannot reach it",
                          [("ctr2", ["ip", "link", "set", "dev", "eth0", "type", "macvlan", "mode", "private"])],
                          [("ctr2", ["ip", "link", "set", "dev", "eth0", "type", "macvlan", "mode", "bridge"])],
                          ping_to="10.74.0.4"),
                ]}),
]}

from .lab_overlays import TOPOLOGIES as _OVERLAYS  # noqa: E402  (built from the classes above)
from .lab_routers import TOPOLOGIES as _ROUTERS  # noqa: E402

TOPOLOGIES.update({t.name: t for t in _ROUTERS + _OVERLAYS})


# -- operations ---------------------------------------------------------------------------------

def topology(name: str) -> LabTopology:
    if name not in TOPOLOGIES:
        raise BpftoolsError(f"no lab topology {name!r} (choose from: {', '.join(TOPOLOGIES)})")
    return TOPOLOGIES[name]


def namespaces_of(name: Optional[str] = None) -> List[str]:
    """Existing lab namespaces (of one topology, or all)."""
    start = f"{prefix()}-{name}-" if name else f"{prefix()}-"
    # `veth` must not claim `veth-pair`'s namespaces
    longer = [f"{prefix()}-{t}-" for t in TOPOLOGIES if name and t != name and t.startswith(f"{name}-")]
    return sorted(n for n in named_netns().values() if n.startswith(start)
                  and not any(n.startswith(other) for other in longer))


def is_up(name: str) -> bool:
    return bool(namespaces_of(name))


def _state_path(name: str) -> str:
    return os.path.join(STATE_DIR, f"{prefix()}-{name}.json")


def _faults_applied(name: str) -> List[str]:
    try:
        with open(_state_path(name)) as f:
            return json.load(f).get("faults", [])
    except (OSError, ValueError):
        return []


def _record(name: str, faults: List[str]) -> None:
    os.makedirs(STATE_DIR, exist_ok=True)
    with open(_state_path(name), "w") as f:
        json.dump({"faults": faults}, f)


def healthy_ping(topo: LabTopology, attempts: int = 10, family: int = 4) -> bool:
    """Wait until the topology's ping works (ports and carriers take a moment)."""
    ns, dst = topo.ping(family=family)
    args = [] if topo.starts_broken else topo.ping_args()   # broken from the start: is the address up at all
    for _ in range(attempts):
        if run("ping", "-n", "-q", "-c", "1", "-W", "1", *args, dst, netns=ns, check=False).returncode == 0:
            return True
        time.sleep(0.2)
    return False


def up(name: str) -> LabTopology:
    topo = topology(name)
    down(name)
    builder = LabBuilder(topo)
    try:
        topo.build(builder)
    except BaseException:
        builder.close()
        with contextlib.suppress(OSError):
            os.unlink(_state_path(name))
        raise
    _record(name, [topo.starts_broken] if topo.starts_broken else [])
    for family in topo.families:
        if not healthy_ping(topo, family=family):
            raise BpftoolsError(f"lab {name} is up but `{topo.ping_command(family=family)}` does not work yet")
    return topo


def _apply(topo: LabTopology, steps: List[Step], check: bool = True) -> None:
    for role, cmd in steps:
        run(*cmd, netns=topo.ns(role), check=check)


def break_(name: str, fault: str, family: int = 4) -> Fault:
    topo = topology(name)
    injected = topo.fault(fault, family)
    if not is_up(name):
        raise BpftoolsError(f"lab {name} is not up (run `bpftools lab up {name}` first)")
    applied = _faults_applied(name)
    label = fault_label(fault, family)
    if label in applied:
        return injected
    _apply(topo, injected.steps)
    if injected.program and not any(parse_fault_label(a)[0] == fault for a in applied):
        role, ifname, hook = injected.program  # one program drops both families' echo
        attach_drop_program(topo.ns(role), ifname, hook)
    _record(name, applied + [label])
    return injected


def attach_drop_program(netns: str, ifname: str, hook: str) -> None:
    """Attach lab.bpf.c's ICMP dropper through netlink, so it stays after this process exits
    (until `lab fix` or `lab down`)."""
    from pyroute2.netlink.exceptions import NetlinkError

    from .netlink import ipr, resolve_interface
    from .program import BpfProgram

    iface = resolve_interface(ifname, netns)
    with BpfProgram("lab.bpf.c") as prog:
        from bcc import BPF

        try:
            if hook == "xdp":
                fd = prog.load("bpftools_labxdp", BPF.XDP)
                with ipr(netns) as sock:
                    sock.link("set", index=iface.ifindex, xdp_fd=fd)
            else:
                fd = prog.load("bpftools_labtc", BPF.SCHED_CLS)
                with ipr(netns) as sock:
                    sock.tc("add", "clsact", iface.ifindex)
                    sock.tc("add-filter", "bpf", iface.ifindex, ":1", fd=fd, name="bpftools_labtc",
                            parent="ffff:fff2", classid=1, direct_action=True)
        except NetlinkError as exc:
            raise BpftoolsError(f"cannot attach the lab's {hook} program to {iface.describe()}: {exc}") from None


def fix(name: str) -> List[str]:
    """Undo every fault `break` injected, newest first; returns their names."""
    topo = topology(name)
    if not is_up(name):
        raise BpftoolsError(f"lab {name} is not up (run `bpftools lab up {name}` first)")
    applied = _faults_applied(name)
    for label in reversed(applied):
        _apply(topo, topo.fault(*parse_fault_label(label)).undo, check=False)
    _record(name, [])
    return applied


def down(name: Optional[str] = None) -> List[str]:
    """Delete the namespaces of one topology, or with None everything the lab made (every
    namespace and state file under the prefix, whatever topology or run made it)."""
    if name is not None:
        topology(name)
    removed = []
    for ns in namespaces_of(name):
        with survive(log, "stopping the processes of %s", ns):
            kill_netns_processes(ns)
        if run("ip", "netns", "del", ns, check=False).returncode == 0:
            removed.append(ns)
    start = f"{prefix()}-{name}." if name else f"{prefix()}-"
    with contextlib.suppress(OSError):
        for entry in os.listdir(STATE_DIR):
            if entry.startswith(start):
                os.unlink(os.path.join(STATE_DIR, entry))
    with contextlib.suppress(OSError):
        os.rmdir(STATE_DIR)  # only when empty
    return removed


def status() -> List[dict]:
    return [{"topology": t.name, "summary": t.summary, "up": is_up(t.name),
             "faults": list(t.faults), "broken": _faults_applied(t.name) if is_up(t.name) else [],
             "ping": t.ping_command(), "requires": t.requires,
             "ping6": t.ping_command(family=6) if 6 in t.families else None,
             "faults6": [f.name for f in t.faults.values() if 6 in f.families and 6 in t.families]}
            for t in TOPOLOGIES.values()]
