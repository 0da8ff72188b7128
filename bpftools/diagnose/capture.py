"""Read a namespace's live state (links, addresses, routes, rules, neighbours, sysctls,
firewall) into a `NetnsState`. Read-only: nothing here changes the namespace."""
from __future__ import annotations

import contextlib
import glob
import ipaddress
import logging
import os
import socket
from typing import Dict, Iterator, List, Optional

from .. import docker_engine, namespaces
from ..errors import first_line
from ..facts.namespace import iptables_save, netns_output, nft_ruleset, read_int
from ..facts.netfilter import IPV4, IPV6
from ..facts.tun import holders_of, tun_holders
from ..facts.rtnl import IFF_LOWER_UP, IFF_NOARP, IFF_UP, neigh_state, route_type, rule_action
from . import docker
from .state import Addr, FdbEntry, Link, NetnsState, Neighbour, Route, Rule

log = logging.getLogger(__name__)

AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
AF_BRIDGE = socket.AF_BRIDGE
NTF_SELF = 0x02   # an FDB entry of the device itself (not learned by a bridge)
NTF_MASTER = 0x04   # an entry of the bridge the device is a port of
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80   # `bridge fdb add` (static) and `... permanent`
GRE_KEY, GRE_KEY_SWAPPED = 0x2000, 0x0020   # the GRE_KEY flag, as decoded big- or little-endian
# IPv4 and IPv6 switches that make a namespace ignore echo requests (checks.check_echo)
ECHO_SYSCTLS = ("net.ipv4.icmp_echo_ignore_all", "net.ipv4.icmp_echo_ignore_broadcasts",
                "net.ipv6.icmp.echo_ignore_all", "net.ipv6.icmp.echo_ignore_multicast")
SYSCTL_CONF_KEYS = ("rp_filter", "accept_local", "forwarding", "arp_ignore", "arp_filter", "proxy_arp",
                    "proxy_arp_pvlan", "medium_id", "route_localnet")
BRIDGE_NF_KEYS = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables")
LOWER_KINDS = ("macvlan", "macvtap", "ipvlan", "ipvtap")
MACVLAN_MODES = {1: "private", 2: "vepa", 4: "bridge", 8: "passthru", 16: "source"}   # if_link.h MACVLAN_MODE_*
IPVLAN_MODES = {0: "l2", 1: "l3", 2: "l3s"}
SYSCTL_CONF6_KEYS = ("forwarding", "force_forwarding", "proxy_ndp", "accept_dad", "disable_ipv6", "mtu")


def current_label() -> str:
    """How our own namespace is called in paths: its registry label ("host", an `ip netns` name,
    "docker:web" when bpftools runs inside a container's namespace)."""
    return namespaces.label_for_inode(namespaces.own_inode())


@contextlib.contextmanager
def entered(label: str, known: Optional["Known"] = None) -> Iterator["namespaces.Netns"]:
    """Run the block inside the namespace labelled `label` (any `--netns` selector), entered by a
    held file descriptor; commands started in the block run there too."""
    ns = (known or Known()).netns(label)
    with namespaces.entered(ns):
        yield ns


class Known:
    """The registry's namespaces, discovered once (a diagnosis looks up many labels and nsids)."""

    def __init__(self) -> None:
        self._all: Optional[List["namespaces.Netns"]] = None

    def all(self) -> List["namespaces.Netns"]:
        if self._all is None:
            self._all = namespaces.discover()
        return self._all

    def netns(self, label: str) -> "namespaces.Netns":
        found = next((ns for ns in self.all() if ns.label == label), None)
        return found or namespaces.resolve(label)

    def inode(self, label: str) -> int:
        return self.netns(label).inode


def capture(label: str, known: Optional[Known] = None) -> NetnsState:
    from pyroute2 import IPRoute

    known = known or Known()
    global_bridge_nf = {key: read_int(f"/proc/sys/net/bridge/{key}") for key in BRIDGE_NF_KEYS}
    with entered(label, known) as netns:
        sock = IPRoute()  # a netlink socket stays in the namespace it was created in
        sysctls = _read_sysctls()
        # commands started here run in the entered namespace (None: "where we are")
        rulesets = {family: iptables_save(None, family) for family in (IPV4, IPV6)}
        nft = nft_ruleset(None)
        proxies = "".join(netns_output(None, "ip", f"-{family}", "neigh", "show", "proxy") or "" for family in (4, 6))
    with sock:
        state = NetnsState(netns.label, inode=netns.inode)
        links = list(sock.get_links())  # dumping links assigns the nsids of veth peers' namespaces
        peered = any(m.get_attr("IFLA_LINK_NETNSID") is not None for m in links)
        nsids = {nsid: ns.label for nsid, ns in namespaces.nsid_map(netns, known.all()).items()} if peered else {}
        state.links = [_link(m, nsids, netns.label) for m in links]
        for family in (AF_INET, AF_INET6):
            state.addrs += [_addr(m) for m in sock.get_addr(family=family)]
            state.routes += [r for r in (_route(m) for m in sock.get_routes(family=family)) if r]
            state.rules += [_rule(m) for m in sock.get_rules(family=family)]
            state.neighbours += [_neigh(m) for m in sock.get_neighbours(family=family)]
        try:
            qdiscs = {m["index"]: m.get_attr("TCA_KIND") for m in sock.get_qdiscs()
                      if m.get_attr("TCA_KIND") in ("clsact", "ingress")}
        except Exception as exc:
            log.debug("qdiscs of %s: %s", netns.label, first_line(exc))
            qdiscs = {}
        for link in state.links:
            link.tc_qdisc = qdiscs.get(link.ifindex, "")
        _fdb(sock, state.links)
        _tun_holders(state.links, netns.inode)
    for key, value in global_bridge_nf.items():
        if f"net.bridge.{key}" not in sysctls and value is not None:
            # kernels before 5.3 have one global br_netfilter setting, shown only in the initial namespace
            sysctls[f"net.bridge.{key}"] = value
    state.sysctls = sysctls
    state.iptables_save = rulesets[IPV4]
    state.ip6tables_save = rulesets[IPV6]
    state.ndp_proxies = _ndp_proxies(proxies, state)
    state.nft_ruleset = nft
    if docker.manages(state):
        state.docker_networks = docker_engine.bridge_networks()
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
        read(f"/proc/sys/net/ipv4/neigh/{name}/proxy_delay", f"net.ipv4.neigh.{name}.proxy_delay")
    for conf in glob.glob("/proc/sys/net/ipv6/conf/*"):  # absent when the kernel has no IPv6
        name = os.path.basename(conf)
        for key in SYSCTL_CONF6_KEYS:
            read(os.path.join(conf, key), f"net.ipv6.conf.{name}.{key}")
    return values


def _ndp_proxies(text: str, state: NetnsState) -> list:
    """`ip -4|-6 neigh show proxy` lines (`ADDR dev IFNAME proxy`): rtnetlink dumps them only on request."""
    found = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] == "dev":
            link = state.link_by_name(words[2])
            if link is not None:
                found.append(Neighbour(link.ifindex, words[0], "proxy"))
    return found


def _link(msg, nsids: Dict[int, str], own_label: str) -> Link:
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
        link.peer_netns = own_label if nsid is None else nsids.get(nsid, f"nsid:{nsid}")
    if kind in TUNNEL_DATA and info is not None:
        data = info.get_attr("IFLA_INFO_DATA")
        if data is not None:
            TUNNEL_DATA[kind](link, data)
    if kind in LOWER_KINDS:
        _lower(link, msg, info, nsids, own_label)
    if kind == "tun":
        _tun(link, msg, info)
    xdp = msg.get_attr("IFLA_XDP")
    if xdp:
        link.xdp_prog_id = xdp.get_attr("IFLA_XDP_PROG_ID") or 0
    return link


def _lower(link: Link, msg, info, nsids: Dict[int, str], own_label: str) -> None:
    """macvlan/macvtap/ipvlan: the parent device (IFLA_LINK, in the namespace IFLA_LINK_NETNSID
    names once the child was moved) and the mode."""
    link.lower_ifindex = msg.get_attr("IFLA_LINK")
    nsid = msg.get_attr("IFLA_LINK_NETNSID")
    link.lower_netns = own_label if nsid is None else nsids.get(nsid, f"nsid:{nsid}")
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    if data is None:
        return
    ipvlan = link.kind.startswith("ipv")
    mode = data.get_attr("IFLA_IPVLAN_MODE" if ipvlan else "IFLA_MACVLAN_MODE")
    # pyroute2 names macvlan's modes itself; ipvlan's come as numbers
    link.mode = mode if isinstance(mode, str) else (IPVLAN_MODES if ipvlan else MACVLAN_MODES).get(mode, "")


def _tun(link: Link, msg, info) -> None:
    """A TUN/TAP device: mode, persist, owner uid, queue length and what its queue dropped."""
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    if data is not None:
        link.tun_type = {1: "tun", 2: "tap"}.get(data.get_attr("IFLA_TUN_TYPE"), "")
        link.tun_persist = bool(data.get_attr("IFLA_TUN_PERSIST"))
        link.tun_owner = data.get_attr("IFLA_TUN_OWNER")
    link.qlen = msg.get_attr("IFLA_TXQLEN") or 0
    stats = msg.get_attr("IFLA_STATS64")
    link.tx_dropped = stats["tx_dropped"] if stats else 0


def _tun_holders(links: List[Link], inode: int) -> None:
    """Who holds each tun/tap device: holders in the device's namespace; one elsewhere with the
    same device name only when the device has carrier (a device without carrier has none)."""
    tuns = [l for l in links if l.kind == "tun"]
    if not tuns:
        return
    table = tun_holders()
    for link in tuns:
        found = holders_of(link.ifname, inode, table)
        same = [h for h in found if h.netns_inode == inode]
        link.tun_holders = [h.describe() for h in (same or (found if link.lower_up else []))]


def _fdb(sock, links) -> None:
    """From the bridge FDB dump: each VXLAN device's own forwarding database (`bridge fdb show dev
    vx0`: MAC, dst, port, VNI, incl. the all-zeros default entries), and the unicast addresses a
    device that is no bridge port lists as its own (`self permanent`: the MACs of its
    macvlan/macvtap children, wherever they are)."""
    vxlans = {l.ifindex: l for l in links if l.kind == "vxlan"}
    parents = {l.ifindex: l for l in links if l.master is None and l.kind in ("veth", "")}
    if not vxlans and not parents:
        return
    try:
        entries = list(sock.get_neighbours(family=AF_BRIDGE))
    except Exception as exc:  # no bridge FDB (no bridge module): nothing to add
        log.debug("bridge FDB: %s", first_line(exc))
        return
    for entry in entries:
        link, mac = vxlans.get(entry["ifindex"]), entry.get_attr("NDA_LLADDR")
        if link is not None and mac and entry.get_attr("NDA_DST") and not entry["flags"] & NTF_MASTER:
            _vxlan_fdb_entry(link, entry, mac)
        parent = parents.get(entry["ifindex"])
        if parent is not None and mac and entry["flags"] & NTF_SELF and not int(mac[:2], 16) & 1 \
                and mac.lower() != parent.mac.lower() and mac not in parent.upper_macs:
            parent.upper_macs.append(mac)


def _vxlan_fdb_entry(link: Link, entry, mac: str) -> None:
    dst = entry.get_attr("NDA_DST")
    link.fdb.append(FdbEntry(mac.lower(), dst, entry.get_attr("NDA_PORT") or None, entry.get_attr("NDA_VNI"),
                             bool(entry["state"] & (NUD_PERMANENT | NUD_NOARP))))
    if dst and dst not in link.vxlan_fdb:
        link.vxlan_fdb.append(dst)


# -- tunnels: IFLA_INFO_DATA as the kernel reports it (ip -d link show) ---------------------------------

def _address(data, *names: str) -> Optional[str]:
    """The first of these attributes that holds a set address."""
    for name in names:
        value = _unset_none(data.get_attr(name))
        if value:
            return value
    return None


def _vxlan(link: Link, data) -> None:
    """IFLA_VXLAN_GROUP(6) holds `remote` (unicast) or `group` (multicast): the kernel keeps both in
    one field and tells them apart by the address."""
    link.vni = data.get_attr("IFLA_VXLAN_ID")
    link.tunnel_local = _address(data, "IFLA_VXLAN_LOCAL", "IFLA_VXLAN_LOCAL6")
    far = _address(data, "IFLA_VXLAN_GROUP", "IFLA_VXLAN_GROUP6")
    if far and ipaddress.ip_address(far).is_multicast:
        link.tunnel_group = far
    else:
        link.tunnel_remote = far
    link.dstport = data.get_attr("IFLA_VXLAN_PORT")
    link.tunnel_dev = data.get_attr("IFLA_VXLAN_LINK") or None
    learning = data.get_attr("IFLA_VXLAN_LEARNING")
    link.learning = True if learning is None else bool(learning)


def _geneve(link: Link, data) -> None:
    link.vni = data.get_attr("IFLA_GENEVE_ID")
    link.tunnel_remote = _address(data, "IFLA_GENEVE_REMOTE", "IFLA_GENEVE_REMOTE6")
    link.dstport = data.get_attr("IFLA_GENEVE_PORT")


def _iptun(prefix: str):
    """ipip (IFLA_IPTUN_*, pyroute2: IFLA_IPIP_*), sit (IFLA_SIT_*), ip6tnl (IFLA_IP6TNL_*)."""
    def read(link: Link, data) -> None:
        link.tunnel_local = _address(data, prefix + "LOCAL")
        link.tunnel_remote = _address(data, prefix + "REMOTE")
        link.tunnel_dev = data.get_attr(prefix + "LINK") or None
    return read


def _gre(prefix: str):
    """gre/gretap (IFLA_GRE_*), ip6gre/ip6gretap (pyroute2: IFLA_IP6GRE_*): a key only with the
    GRE_KEY flag (pyroute2 decodes the big-endian flags of gre, not those of ip6gre)."""
    def read(link: Link, data) -> None:
        link.tunnel_local = _address(data, prefix + "LOCAL")
        link.tunnel_remote = _address(data, prefix + "REMOTE")
        link.tunnel_dev = data.get_attr(prefix + "LINK") or None
        for side in ("I", "O"):
            flags = data.get_attr(f"{prefix}{side}FLAGS") or 0
            flags = flags.get("value", 0) if isinstance(flags, dict) else flags
            if flags & GRE_KEY or flags & GRE_KEY_SWAPPED:
                setattr(link, f"tunnel_{side.lower()}key", data.get_attr(f"{prefix}{side}KEY") or 0)
    return read


TUNNEL_DATA = {"vxlan": _vxlan, "geneve": _geneve, "ipip": _iptun("IFLA_IPIP_"), "sit": _iptun("IFLA_SIT_"),
               "ip6tnl": _iptun("IFLA_IP6TNL_"), "gre": _gre("IFLA_GRE_"), "gretap": _gre("IFLA_GRE_"),
               "ip6gre": _gre("IFLA_IP6GRE_"), "ip6gretap": _gre("IFLA_IP6GRE_")}


def _unset_none(address: Optional[str]) -> Optional[str]:
    return None if address in (None, "0.0.0.0", "::") else address


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


class LiveSource:
    """A `Snapshot` source: captures namespaces by label, asking the registry once."""

    def __init__(self) -> None:
        self.known = Known()

    def __call__(self, label: str) -> NetnsState:
        return capture(label, self.known)

    def labels(self) -> List[str]:
        return [ns.label for ns in self.known.all()]
