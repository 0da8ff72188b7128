"""Read a namespace's live state (links, addresses, routes, rules, neighbours, sysctls,
firewall) into a `NetnsState`. Read-only: nothing here changes the namespace."""
from __future__ import annotations

import contextlib
import glob
import os
import socket
from typing import Dict, Iterator, Optional

from ..errors import BpftoolsError
from ..facts.namespace import iptables_save, netns_output, nft_ruleset, read_int
from ..facts.netfilter import IPV4, IPV6
from ..facts.rtnl import IFF_LOWER_UP, IFF_NOARP, IFF_UP, neigh_state, route_type, rule_action
from ..netlink import NETNS_RUN_DIR, in_netns, named_netns, netns_inode
from .state import Addr, Link, NetnsState, Neighbour, Route, Rule

AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
AF_BRIDGE = socket.AF_BRIDGE
# IPv4 and IPv6 switches that make a namespace ignore echo requests (checks.check_echo)
ECHO_SYSCTLS = ("net.ipv4.icmp_echo_ignore_all", "net.ipv4.icmp_echo_ignore_broadcasts",
                "net.ipv6.icmp.echo_ignore_all", "net.ipv6.icmp.echo_ignore_multicast")
SYSCTL_CONF_KEYS = ("rp_filter", "accept_local", "forwarding", "arp_ignore", "arp_filter", "proxy_arp",
                    "route_localnet")
BRIDGE_NF_KEYS = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables")
SYSCTL_CONF6_KEYS = ("forwarding", "force_forwarding", "proxy_ndp", "accept_dad", "disable_ipv6", "mtu")


def current_label() -> str:
    """How our own namespace is called in paths: its `ip netns` name, else "host"."""
    return named_netns().get(netns_inode(None), "host")


@contextlib.contextmanager
def entered(label: str) -> Iterator[Optional[str]]:
    """Enter the namespace called `label`: an `ip netns` name, or our own namespace's label."""
    if label == current_label():
        yield None
        return
    if not os.path.exists(os.path.join(NETNS_RUN_DIR, label)):
        raise BpftoolsError(f"network namespace {label!r} not found (see `ip netns list`)")
    with in_netns(label):
        yield label


def capture(label: str) -> NetnsState:
    from pyroute2 import IPRoute

    home = current_label()
    global_bridge_nf = {key: read_int(f"/proc/sys/net/bridge/{key}") for key in BRIDGE_NF_KEYS}
    home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        with entered(label) as netns:
            sock = IPRoute()  # a netlink socket stays in the namespace it was created in
            sysctls = _read_sysctls()
            nsids = _nsid_labels(sock, home, home_fd)
    finally:
        os.close(home_fd)
    with sock:
        state = NetnsState(label)
        state.links = [_link(m, nsids) for m in sock.get_links()]
        for family in (AF_INET, AF_INET6):
            state.addrs += [_addr(m) for m in sock.get_addr(family=family)]
            state.routes += [r for r in (_route(m) for m in sock.get_routes(family=family)) if r]
            state.rules += [_rule(m) for m in sock.get_rules(family=family)]
            state.neighbours += [_neigh(m) for m in sock.get_neighbours(family=family)]
        try:
            qdiscs = {m["index"]: m.get_attr("TCA_KIND") for m in sock.get_qdiscs()
                      if m.get_attr("TCA_KIND") in ("clsact", "ingress")}
        except Exception:
            qdiscs = {}
        for link in state.links:
            link.tc_qdisc = qdiscs.get(link.ifindex, "")
        _vxlan_fdb(sock, state.links)
    for key, value in global_bridge_nf.items():
        if f"net.bridge.{key}" not in sysctls and value is not None:
            # kernels before 5.3 have one global br_netfilter setting, shown only in the initial namespace
            sysctls[f"net.bridge.{key}"] = value
    state.sysctls = sysctls
    state.iptables_save = iptables_save(netns, IPV4)
    state.ip6tables_save = iptables_save(netns, IPV6)
    state.ndp_proxies = _ndp_proxies(netns_output(netns, "ip", "-6", "neigh", "show", "proxy") or "", state)
    state.nft_ruleset = nft_ruleset(netns)
    return state


def _read_sysctls() -> Dict[str, int]:
    """Read from inside the namespace: /proc/sys/net resolves against the reader's namespace."""
    values: Dict[str, int] = {}

    def read(path: str, key: str) -> None:
        value = read_int(path)
        if value is not None:
            values[key] = value

    read("/proc/sys/net/ipv4/ip_forward", "net.ipv4.ip_forward")
    for key in ECHO_SYSCTLS:
        read("/proc/sys/" + key.replace(".", "/"), key)
    for key in BRIDGE_NF_KEYS:
        read(f"/proc/sys/net/bridge/{key}", f"net.bridge.{key}")
    for conf in glob.glob("/proc/sys/net/ipv4/conf/*"):
        name = os.path.basename(conf)
        for key in SYSCTL_CONF_KEYS:
            read(os.path.join(conf, key), f"net.ipv4.conf.{name}.{key}")
    for conf in glob.glob("/proc/sys/net/ipv6/conf/*"):  # absent when the kernel has no IPv6
        name = os.path.basename(conf)
        for key in SYSCTL_CONF6_KEYS:
            read(os.path.join(conf, key), f"net.ipv6.conf.{name}.{key}")
    return values


def _ndp_proxies(text: str, state: NetnsState) -> list:
    """`ip -6 neigh show proxy` lines (`ADDR dev IFNAME proxy`): rtnetlink dumps them only on request."""
    found = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] == "dev":
            link = state.link_by_name(words[2])
            if link is not None:
                found.append(Neighbour(link.ifindex, words[0], "proxy"))
    return found


def _nsid_labels(sock, home: str, home_fd: int) -> Dict[int, str]:
    """nsid (as this namespace numbers its peers) -> namespace label."""
    result: Dict[int, str] = {}
    candidates = {os.path.join(NETNS_RUN_DIR, name): name for name in named_netns().values()}
    candidates[None] = home
    for path, label in candidates.items():
        try:
            fd = home_fd if path is None else os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            reply = sock.get_netnsid(fd=fd)
        except Exception:
            reply = None
        finally:
            if path is not None:
                os.close(fd)
        nsid = reply.get("nsid") if reply else None
        if nsid is not None and 0 <= nsid < 2 ** 31 and nsid not in result:
            result[nsid] = label
    return result


def _link(msg, nsids: Dict[int, str]) -> Link:
    info = msg.get_attr("IFLA_LINKINFO")
    kind = (info.get_attr("IFLA_INFO_KIND") if info else "") or ""
    flags = msg["flags"]
    link = Link(
        ifindex=msg["index"], ifname=msg.get_attr("IFLA_IFNAME"), kind=kind,
        admin_up=bool(flags & IFF_UP), lower_up=bool(flags & IFF_LOWER_UP), mtu=msg.get_attr("IFLA_MTU") or 0,
        mac=msg.get_attr("IFLA_ADDRESS") or "", noarp=bool(flags & IFF_NOARP), master=msg.get_attr("IFLA_MASTER"),
    )
    if kind == "veth":
        link.peer_ifindex = msg.get_attr("IFLA_LINK")
        nsid = msg.get_attr("IFLA_LINK_NETNSID")
        link.peer_netns = None if nsid is None else nsids.get(nsid, f"nsid:{nsid}")
        if nsid is None:
            link.peer_netns = ""  # same namespace; filled in by the caller's label
    if kind in ("ipip", "gre", "sit") and info is not None:
        data = info.get_attr("IFLA_INFO_DATA")
        if data is not None:
            prefix = "IFLA_GRE_" if kind == "gre" else "IFLA_IPIP_"  # pyroute2's names for ipip/sit data
            link.tunnel_local = _unset_none(data.get_attr(prefix + "LOCAL"))
            link.tunnel_remote = _unset_none(data.get_attr(prefix + "REMOTE"))
    if kind == "vxlan" and info is not None:
        data = info.get_attr("IFLA_INFO_DATA")
        if data is not None:
            link.vni = data.get_attr("IFLA_VXLAN_ID")
            link.tunnel_local = _unset_none(data.get_attr("IFLA_VXLAN_LOCAL"))
            link.tunnel_remote = _unset_none(data.get_attr("IFLA_VXLAN_GROUP"))   # `remote` or `group`
    xdp = msg.get_attr("IFLA_XDP")
    if xdp:
        link.xdp_prog_id = xdp.get_attr("IFLA_XDP_PROG_ID") or 0
    return link


def _vxlan_fdb(sock, links) -> None:
    """The remote VTEPs in each VXLAN device's forwarding database (`bridge fdb ... dst IP`)."""
    vxlans = {l.ifindex: l for l in links if l.kind == "vxlan"}
    if not vxlans:
        return
    try:
        entries = list(sock.get_neighbours(family=AF_BRIDGE))
    except Exception:
        return
    for entry in entries:
        link, dst = vxlans.get(entry["ifindex"]), entry.get_attr("NDA_DST")
        if link is not None and dst and dst not in link.vxlan_fdb:
            link.vxlan_fdb.append(dst)


def _unset_none(address: Optional[str]) -> Optional[str]:
    return None if address in (None, "0.0.0.0") else address


def _addr(msg) -> Addr:
    from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_DADFAILED, IFA_F_TENTATIVE

    local = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    peer = msg.get_attr("IFA_ADDRESS")
    flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
    dadfailed = bool(flags & IFA_F_DADFAILED)
    return Addr(msg["index"], local, msg["prefixlen"], peer if peer and peer != local else None,
                tentative=bool(flags & IFA_F_TENTATIVE) and not dadfailed, dadfailed=dadfailed)


def _route(msg) -> Optional[Route]:
    table = msg.get_attr("RTA_TABLE") or msg["table"]
    oif = msg.get_attr("RTA_OIF")
    gateway = msg.get_attr("RTA_GATEWAY")
    multipath = msg.get_attr("RTA_MULTIPATH")
    if multipath and oif is None:
        first = multipath[0]
        oif = first["oif"]
        gateway = first.get_attr("RTA_GATEWAY")
    default = "::" if msg["family"] == AF_INET6 else "0.0.0.0"
    return Route(dst=msg.get_attr("RTA_DST") or default, dst_len=msg["dst_len"], table=table,
                 type=route_type(msg["type"]), oif=oif, gateway=gateway,
                 prefsrc=msg.get_attr("RTA_PREFSRC"), priority=msg.get_attr("RTA_PRIORITY") or 0,
                 scope=msg["scope"], tos=msg["tos"])


def _rule(msg) -> Rule:
    return Rule(priority=msg.get_attr("FRA_PRIORITY") or 0, table=msg.get_attr("FRA_TABLE") or msg["table"],
                action=rule_action(msg["action"]), src=msg.get_attr("FRA_SRC"),
                src_len=msg["src_len"], dst=msg.get_attr("FRA_DST"), dst_len=msg["dst_len"],
                iif=msg.get_attr("FRA_IIFNAME"), oif=msg.get_attr("FRA_OIFNAME"),
                fwmark=msg.get_attr("FRA_FWMARK") or 0, invert=bool(msg["flags"] & 0x2),
                family=6 if msg["family"] == AF_INET6 else 4)


def _neigh(msg) -> Neighbour:
    return Neighbour(msg["ifindex"], msg.get_attr("NDA_DST"), neigh_state(msg["state"]),
                     msg.get_attr("NDA_LLADDR"))


def capture_netns(label: str) -> NetnsState:
    """`capture` with same-namespace veth peers named."""
    state = capture(label)
    for link in state.links:
        if link.peer_netns == "":
            link.peer_netns = label
    return state
