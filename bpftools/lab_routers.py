"""Lab topologies of routers: routed pods the way Calico wires them, and two routers in a row
(where a route pointing back makes a routing loop). Registered in `lab.TOPOLOGIES`."""
from __future__ import annotations

from typing import List

from .lab import Fault, LabBuilder, LabTopology, six


def _sysctl(key: str, value) -> List[str]:
    return ["sysctl", "-qw", f"{key}={value}"]


# -- routed pods --------------------------------------------------------------------------------------
# node (uplink 10.74.0.2 to `up`, 10.74.0.1, which routes the pod range back to the node), pods `a`
# 10.74.10.2/32 and `b` 10.74.10.3/32 on veths cali-a/cali-b whose node ends have no IPv4 address:
# each pod's default route goes via 169.254.1.1, which nobody owns, and the node's veth answers
# ARP for it by proxy_arp; the node routes each pod's /32 to its veth. IPv6: /128s; pod a's
# gateway is the node veth's link-local fe80::1, pod b's fd00:74:ff::1, answered by proxy NDP.
POD_A, POD_B, POD_A6, POD_B6 = "10.74.10.2", "10.74.10.3", "fd00:74:10::2", "fd00:74:10::3"
GATEWAY, GATEWAY6_B = "169.254.1.1", "fd00:74:ff::1"
# pod b's neighbour entry for its gateway, cached by `lab up`'s ping: gone, so the next ping asks again
FORGET_GATEWAY = ["ip", "neigh", "flush", "dev", "eth0"]
FORGET_GATEWAY6 = ["ip", "-6", "neigh", "flush", "dev", "eth0"]


def _build_routed_pods(b: LabBuilder) -> None:
    node, up = b.netns("node"), b.netns("up")
    b.veth(node, "uplink", up, "down0", "10.74.0.2/24", "10.74.0.1/24")
    b.addr6("node", "uplink", "fd00:74::2/64")
    b.addr6("up", "down0", "fd00:74::1/64")
    for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
        b.sysctl(node, key, 1)
        b.sysctl(up, key, 1)
    b.run("node", "ip", "route", "add", "default", "via", "10.74.0.1")
    b.run("node", "ip", "-6", "route", "add", "default", "via", "fd00:74::1")
    b.run("up", "ip", "route", "add", "10.74.10.0/24", "via", "10.74.0.2")
    b.run("up", "ip", "-6", "route", "add", "fd00:74:10::/64", "via", "fd00:74::2")
    for role, cali, address, address6 in (("a", "cali-a", POD_A, POD_A6), ("b", "cali-b", POD_B, POD_B6)):
        pod = b.netns(role)
        b.veth(node, cali, pod, "eth0")
        b.run(role, "ip", "addr", "add", f"{address}/32", "dev", "eth0")
        b.addr6(role, "eth0", f"{address6}/128")
        for key, value in ((f"net.ipv4.conf.{cali}.proxy_arp", 1), (f"net.ipv4.neigh.{cali}.proxy_delay", 0)):
            b.sysctl(node, key, value)
        b.run("node", "ip", "route", "add", address, "dev", cali, "scope", "link")
        b.run("node", "ip", "-6", "route", "add", address6, "dev", cali)
    # pod a: the default route alone, `onlink`; pod b: Calico's first-hop route, then the default
    b.run("a", "ip", "route", "add", "default", "via", GATEWAY, "dev", "eth0", "onlink")
    b.run("b", "ip", "route", "add", GATEWAY, "dev", "eth0", "scope", "link")
    b.run("b", "ip", "route", "add", "default", "via", GATEWAY, "dev", "eth0")
    b.addr6("node", "cali-a", "fe80::1/64")
    b.run("a", "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
    b.sysctl(node, "net.ipv6.conf.cali-b.proxy_ndp", 1)
    b.run("node", "ip", "-6", "neigh", "add", "proxy", GATEWAY6_B, "dev", "cali-b")
    b.run("b", "ip", "-6", "route", "add", "default", "via", GATEWAY6_B, "dev", "eth0", "onlink")


ROUTED_PODS = LabTopology(
    "routed-pods", "two pods on a node, routed the way Calico does it: /32 addresses, a default route via "
    "169.254.1.1 that nobody owns, answered by proxy ARP on the node's end of each veth (IPv6: a link-local "
    "gateway, and proxy NDP for pod b)", _build_routed_pods, "a", POD_B, ping_to6=POD_B6,
    faults={f.name: f for f in [
        Fault("neighbor_unreachable", "proxy_arp is off on the node's veth to pod b, so nobody answers pod b's "
              f"ARP for {GATEWAY} (IPv6: proxy_ndp off)",
              [("node", _sysctl("net.ipv4.conf.cali-b.proxy_arp", 0)), ("b", FORGET_GATEWAY)],
              [("node", _sysctl("net.ipv4.conf.cali-b.proxy_arp", 1))],
              **six([("node", _sysctl("net.ipv6.conf.cali-b.proxy_ndp", 0)), ("b", FORGET_GATEWAY6)],
                    [("node", _sysctl("net.ipv6.conf.cali-b.proxy_ndp", 1))])),
        Fault("routing_loop", "the node's route to pod b is gone: its default route sends pod b's packets up, "
              "and the uplink router sends them back (a routing loop)",
              [("node", ["ip", "route", "del", POD_B, "dev", "cali-b"])],
              [("node", ["ip", "route", "replace", POD_B, "dev", "cali-b", "scope", "link"])],
              **six([("node", ["ip", "-6", "route", "del", POD_B6, "dev", "cali-b"])],
                    [("node", ["ip", "-6", "route", "replace", POD_B6, "dev", "cali-b"])])),
        Fault("netfilter_drop", "the node's FORWARD drops traffic from pod a to pod b",
              [("node", ["iptables", "-A", "FORWARD", "-i", "cali-a", "-o", "cali-b", "-j", "DROP"])],
              [("node", ["iptables", "-D", "FORWARD", "-i", "cali-a", "-o", "cali-b", "-j", "DROP"])],
              **six([("node", ["ip6tables", "-A", "FORWARD", "-i", "cali-a", "-o", "cali-b", "-j", "DROP"])],
                    [("node", ["ip6tables", "-D", "FORWARD", "-i", "cali-a", "-o", "cali-b", "-j", "DROP"])])),
        Fault("no_route", "pod a has no default route (its gateway route is gone)",
              [("a", ["ip", "route", "del", "default"])],
              [("a", ["ip", "route", "replace", "default", "via", GATEWAY, "dev", "eth0", "onlink"])],
              **six([("a", ["ip", "-6", "route", "del", "default"])],
                    [("a", ["ip", "-6", "route", "replace", "default", "via", "fe80::1", "dev", "eth0"])])),
    ]})


# -- two routers ----------------------------------------------------------------------------------------

def _build_two_routers(b: LabBuilder) -> None:
    client, r1, r2, server = b.netns("client"), b.netns("r1"), b.netns("r2"), b.netns("server")
    b.veth(client, "eth0", r1, "r1-c", "10.75.1.2/24", "10.75.1.1/24")
    b.veth(r1, "r1-r2", r2, "r2-r1", "10.75.2.1/24", "10.75.2.2/24")
    b.veth(r2, "r2-s", server, "eth0", "10.75.3.1/24", "10.75.3.2/24")
    for role, ifname, cidr in (("client", "eth0", "fd00:75:1::2/64"), ("r1", "r1-c", "fd00:75:1::1/64"),
                               ("r1", "r1-r2", "fd00:75:2::1/64"), ("r2", "r2-r1", "fd00:75:2::2/64"),
                               ("r2", "r2-s", "fd00:75:3::1/64"), ("server", "eth0", "fd00:75:3::2/64")):
        b.addr6(role, ifname, cidr)
    for router in (r1, r2):
        b.sysctl(router, "net.ipv4.ip_forward", 1)
        b.sysctl(router, "net.ipv6.conf.all.forwarding", 1)
    for role, cmd in (("client", "default via 10.75.1.1"), ("server", "default via 10.75.3.1"),
                      ("r1", "10.75.3.0/24 via 10.75.2.2"), ("r2", "10.75.1.0/24 via 10.75.2.1"),
                      ("client", "-6 default via fd00:75:1::1"), ("server", "-6 default via fd00:75:3::1"),
                      ("r1", "-6 fd00:75:3::/64 via fd00:75:2::2"), ("r2", "-6 fd00:75:1::/64 via fd00:75:2::1")):
        words = cmd.split()
        family = [words.pop(0)] if words[0] == "-6" else []
        b.run(role, "ip", *family, "route", "add", *words)


TWO_ROUTERS = LabTopology(
    "two-routers", "a client and a server with two routers between them", _build_two_routers, "client",
    "10.75.3.2", ping_to6="fd00:75:3::2", faults={f.name: f for f in [
        Fault("routing_loop", "r2 routes half of the server's subnet back to r1, which routes it to r2 (a "
              "routing loop)",
              [("r2", ["ip", "route", "add", "10.75.3.0/25", "via", "10.75.2.1"])],
              [("r2", ["ip", "route", "del", "10.75.3.0/25", "via", "10.75.2.1"])],
              **six([("r2", ["ip", "-6", "route", "add", "fd00:75:3::/65", "via", "fd00:75:2::1"])],
                    [("r2", ["ip", "-6", "route", "del", "fd00:75:3::/65", "via", "fd00:75:2::1"])])),
    ]})

TOPOLOGIES = [ROUTED_PODS, TWO_ROUTERS]
