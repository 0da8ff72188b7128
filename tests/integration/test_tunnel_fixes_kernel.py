"""Tunnel fixes run on the kernel. A VXLAN device made again by `recreate()` in a test namespace is
the device it was (`ip -d link`, `bridge fdb`, addresses, routes, neighbours, its sysctls) but for
the changed VNI or port, and the FDB the kernel holds after `move_remote()` / `fdb_fix()` is the
one apply_fix predicts (Flannel's flannel.1: a /32 address, onlink routes, permanent neighbours,
static FDB entries; an L2 overlay's bridge port). And the fix firewall_verdict carries for a
VXLAN packet the receiving node's firewall drops lets a ping through the tunnel again."""
from __future__ import annotations

import json
from typing import List

import pytest

from bpftools.diagnose.apply_fix import apply_argv
from bpftools.diagnose.capture import capture
from bpftools.diagnose.firewall import Packet, firewall_verdict
from bpftools.diagnose.state import FdbEntry, Link, NetnsState
from bpftools.diagnose.tunnel_fixes import ZERO_MAC, fdb_fix, move_remote, recreate
from bpftools.topology import run
from waiting import wait_until

pytestmark = pytest.mark.feature("vxlan_module")

PEER1_MAC, PEER2_MAC = "1a:2b:3c:4d:5e:02", "1a:2b:3c:4d:5e:03"


def sh(ns: str, line: str) -> None:
    run(*line.split(), netns=ns)


def jq(ns: str, line: str) -> list:
    return json.loads(run(*line.split(), netns=ns).stdout or "[]")


def read_tunnel(ns: str, link: Link) -> None:
    """The tunnel fields `ip -d -j link` and `bridge -j fdb` show (whatever capture filled)."""
    data = jq(ns, f"ip -d -j link show dev {link.ifname}")[0]["linkinfo"]["info_data"]
    lower = data.get("link")
    link.vni, link.dstport, link.learning = data["id"], data["port"], data["learning"]
    link.tunnel_remote, link.tunnel_group, link.tunnel_local = data.get("remote"), data.get("group"), data.get("local")
    link.tunnel_dev = next(i["ifindex"] for i in jq(ns, f"ip -j link show dev {lower}")) if lower else None
    link.fdb = [FdbEntry(e["mac"], e["dst"], e.get("port"), e.get("vni"), e.get("state") in ("permanent", "static"))
                for e in jq(ns, f"bridge -j fdb show dev {link.ifname}") if "self" in e.get("flags", []) and "dst" in e]
    link.vxlan_fdb = list(dict.fromkeys(e.dst for e in link.fdb))


def state_of(ns: str, name: str) -> NetnsState:
    state = capture(ns)
    read_tunnel(ns, state.link_by_name(name))
    return state


def kernel_view(ns: str, name: str, changed: str) -> dict:
    """What the kernel shows of the device and what hangs on it, without what re-making changes
    by nature (ifindex, the bridge port's timers) and the attribute meant to change."""
    link = jq(ns, f"ip -d -j link show dev {name}")[0]
    data = {k: v for k, v in link["linkinfo"]["info_data"].items() if k != changed}
    routes = [r for r in jq(ns, "ip -j route show table all") + jq(ns, "ip -6 -j route show table all")
              if r.get("dev") == name]
    return {
        "link": (link["ifname"], sorted(link["flags"]), link["mtu"], link["address"], link.get("master"), data),
        "fdb": sorted(json.dumps(e, sort_keys=True) for e in jq(ns, f"bridge -j fdb show dev {name}")),
        "addrs": sorted((a["local"], a["prefixlen"], a["scope"]) for i in jq(ns, f"ip -j addr show dev {name}")
                        for a in i["addr_info"]),
        "routes": sorted(json.dumps(r, sort_keys=True) for r in routes),
        "neighbours": sorted((n["dst"], n.get("lladdr"), tuple(n["state"])) for n in jq(ns, f"ip -j neigh show dev {name}")),
        "rp_filter": run("sysctl", "-n", f"net.ipv4.conf.{name.replace('.', '/')}.rp_filter", netns=ns).stdout,
    }


def apply_both(ns: str, state: NetnsState, fix: List[tuple]) -> NetnsState:
    """Run the argv in the namespace and on the model."""
    for argv in fix:
        run(*argv, netns=ns)
        apply_argv(state, list(argv))
    return state


def fdb_set(link: Link) -> set:
    return {(e.mac, e.dst, e.port, e.vni) for e in link.fdb if e.permanent}


@pytest.fixture
def flannel_node(topo):
    """node: eth0 192.168.1.1/24 (its peer in node2), flannel.1 as Flannel's vxlan backend makes it."""
    node, node2 = topo.netns("node"), topo.netns("node2")
    topo.veth(node, "eth0", node2, "eth0", "192.168.1.1/24", "192.168.1.2/24")
    for line in ["ip link add flannel.1 address 1a:2b:3c:4d:5e:01 type vxlan id 1 dstport 8472 local 192.168.1.1 "
                 "dev eth0 nolearning",
                 "ip link set flannel.1 up", "sysctl -qw net.ipv4.conf.flannel/1.rp_filter=2",
                 "ip addr add 10.244.0.0/32 dev flannel.1",
                 f"bridge fdb append {PEER1_MAC} dev flannel.1 dst 192.168.1.2",
                 f"bridge fdb append {PEER2_MAC} dev flannel.1 dst 192.168.1.3",
                 f"ip neigh add 10.244.1.0 lladdr {PEER1_MAC} dev flannel.1 nud permanent",
                 f"ip neigh add 10.244.2.0 lladdr {PEER2_MAC} dev flannel.1 nud permanent",
                 "ip route add 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink",
                 "ip route add 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"]:
        sh(node, line)
    return node


def test_recreate_flannel_with_another_vni_on_the_kernel(flannel_node):
    before = kernel_view(flannel_node, "flannel.1", "id")
    state = state_of(flannel_node, "flannel.1")
    with pytest.raises(Exception):      # the kernel: "Cannot change VNI", as the model says
        sh(flannel_node, "ip link set flannel.1 type vxlan id 2")
    fix = recreate(state, state.link_by_name("flannel.1"), vni=2)
    model = apply_both(flannel_node, state, fix)
    assert kernel_view(flannel_node, "flannel.1", "id") == before
    assert jq(flannel_node, "ip -d -j link show dev flannel.1")[0]["linkinfo"]["info_data"]["id"] == 2
    read_tunnel(flannel_node, live := capture(flannel_node).link_by_name("flannel.1"))
    assert fdb_set(live) == fdb_set(model.link_by_name("flannel.1")) and live.vni == model.link_by_name("flannel.1").vni


def test_recreate_an_l2_bridge_port_with_another_port_on_the_kernel(topo):
    node, node2 = topo.netns("node"), topo.netns("node2")
    topo.veth(node, "eth0", node2, "eth0", "10.9.0.1/24", "10.9.0.2/24")
    for line in ["ip link add br0 type bridge", "ip link set br0 up",
                 "ip link add vx0 type vxlan id 42 dstport 4789 local 10.9.0.1 remote 10.9.0.2 dev eth0",
                 "ip link set vx0 mtu 1400", "ip link set vx0 master br0", "ip link set vx0 up",
                 "bridge fdb append 00:00:00:00:00:00 dev vx0 dst 10.9.0.3",
                 "bridge fdb add 02:00:00:00:00:bb dev vx0 dst 10.9.0.4 port 4791 vni 99"]:
        sh(node, line)
    before = kernel_view(node, "vx0", "port")
    state = state_of(node, "vx0")
    fix = recreate(state, state.link_by_name("vx0"), dstport=4790)
    model = apply_both(node, state, fix)
    assert kernel_view(node, "vx0", "port") == before
    live = capture(node).link_by_name("vx0")
    read_tunnel(node, live)
    assert live.dstport == 4790 == model.link_by_name("vx0").dstport
    assert fdb_set(live) == fdb_set(model.link_by_name("vx0"))


def test_move_remote_and_fdb_fix_leave_the_fdb_the_model_predicts(topo):
    node, node2 = topo.netns("node"), topo.netns("node2")
    topo.veth(node, "eth0", node2, "eth0", "10.9.0.1/24", "10.9.0.2/24")
    for line in ["ip link add vx0 type vxlan id 42 dstport 4789 remote 10.9.0.2 dev eth0",
                 "bridge fdb append 00:00:00:00:00:00 dev vx0 dst 10.9.0.3",
                 "bridge fdb add 02:00:00:00:00:ee dev vx0 dst 10.9.0.3"]:
        sh(node, line)
    state = state_of(node, "vx0")
    vx0 = state.link_by_name("vx0")
    for fix in (move_remote(state, vx0, "10.9.0.2", "10.9.0.20"), move_remote(state, vx0, "10.9.0.3", "10.9.0.30"),
                fdb_fix(vx0, "02:00:00:00:00:ff", "10.9.0.40"), fdb_fix(vx0, "02:00:00:00:00:ee", "10.9.0.41"),
                fdb_fix(vx0, ZERO_MAC, "10.9.0.42", port=4790)):
        assert fix
        apply_both(node, state, fix)
        live = capture(node).link_by_name("vx0")
        read_tunnel(node, live)
        assert fdb_set(live) == fdb_set(vx0) and live.tunnel_remote == vx0.tunnel_remote


UNDERLAY = {4: ("10.60.0.1", "10.60.0.2", 24), 6: ("fd00:60::1", "fd00:60::2", 64)}
RULESETS = {  # what the receiving node runs to drop the tunnel (its inner ICMP stays accepted)
    "iptables rule": (4, ["iptables -A INPUT -p udp -m udp --dport 4789 -j DROP"]),
    "iptables policy": (4, ["iptables -A INPUT -p icmp -j ACCEPT", "iptables -P INPUT DROP"]),
    "nft policy": (4, ["nft add table inet fw",
                       "nft add chain inet fw input { type filter hook input priority 0 ; policy drop ; }",
                       "nft add rule inet fw input meta l4proto icmp accept"]),
    "ip6tables policy": (6, ["ip6tables -P INPUT DROP"]),   # neighbour discovery dropped too
}


def pings(ns: str, address: str) -> bool:
    return run("ping", "-c", "1", "-W", "1", address, netns=ns, check=False).returncode == 0


@pytest.mark.parametrize("case", sorted(RULESETS))
def test_the_fix_for_a_dropped_vxlan_packet_lets_the_ping_through(topo, case):
    family, fault = RULESETS[case]
    a, b = topo.netns("a"), topo.netns("b")
    addr_a, addr_b, length = UNDERLAY[family]
    topo.veth(a, "ua", b, "ub")
    for ns, mine, peer, inner, dev in ((a, addr_a, addr_b, "10.61.0.1/24", "ua"), (b, addr_b, addr_a, "10.61.0.2/24",
                                                                                  "ub")):
        for line in [f"ip addr add {mine}/{length} dev {dev} nodad" if family == 6 else
                     f"ip addr add {mine}/{length} dev {dev}",
                     f"ip link add vx0 type vxlan id 42 dstport 4789 local {mine} remote {peer} dev {dev}",
                     f"ip addr add {inner} dev vx0", "ip link set vx0 up"]:
            sh(ns, line)
    wait_until(lambda: pings(a, "10.61.0.2"), "a ping through the healthy tunnel")
    for line in fault:
        run(*_words(line), netns=b)
    assert not pings(a, "10.61.0.2")
    save = run("ip6tables-save" if family == 6 else "iptables-save", netns=b).stdout
    ruleset = json.loads(run("nft", "-j", "list", "ruleset", netns=b).stdout or "{}")
    verdict = firewall_verdict(save, ruleset, Packet("input", addr_a, addr_b, 0, iif="ub", proto="udp", dport=4789))
    assert verdict.dropped and len(verdict.fix) == (2 if family == 6 else 1)   # IPv6: neighbour discovery too
    for argv in verdict.fix:
        run(*argv, netns=b)
    wait_until(lambda: pings(a, "10.61.0.2"), f"a ping through the tunnel after {verdict.fix}", timeout=10)


def _words(line: str) -> List[str]:
    """A command line as argv; an nft chain's `{ … }` stays one word."""
    head, brace, rest = line.partition("{")
    return head.split() + ([brace + rest] if brace else [])
