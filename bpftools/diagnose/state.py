"""What the path walker knows about a network namespace: a plain, JSON-friendly record.

`NetnsState` is filled either from the live kernel (`capture.py`) or from a recorded dict
(unit tests). `Snapshot` gives the walker the namespaces it asks for, by name. Addresses,
routes, rules and neighbours of both families live side by side; a record's family is
that of its address (`family_of`), rules carry theirs.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from ..errors import first_line
from ..names import conf_sysctl  # noqa: F401  (the fixes' sysctl names, beside the model's `conf()`)

log = logging.getLogger(__name__)

RT_TABLE_LOCAL = 255
RT_TABLE_MAIN = 254
RT_TABLE_DEFAULT = 253


def family_of(address: str) -> int:
    """4 or 6 (a `%scope` suffix is allowed)."""
    return 6 if ":" in address else 4


def is_link_local(address: str) -> bool:
    return family_of(address) == 6 and ipaddress.ip_address(address.split("%")[0]).is_link_local


@dataclass
class Link:
    ifindex: int
    ifname: str
    kind: str = ""                 # veth, bridge, ipip, dummy, '' (physical/loopback)
    admin_up: bool = True
    lower_up: bool = True          # carrier
    mtu: int = 1500
    mac: str = ""
    noarp: bool = False
    master: Optional[int] = None   # ifindex of the bridge this is a port of
    peer_netns: Optional[str] = None   # veth: namespace of the other end (None: unknown)
    peer_ifindex: Optional[int] = None
    tunnel_local: Optional[str] = None   # tunnels: the local endpoint (vxlan/geneve `local`, ipip/gre/sit `local`)
    tunnel_remote: Optional[str] = None  # the fixed remote endpoint (vxlan `remote`, geneve `remote`, ip tunnel `remote`)
    vni: Optional[int] = None      # vxlan/geneve: its VNI
    vxlan_fdb: List[str] = field(default_factory=list)   # vxlan: remote VTEPs of its FDB entries (the dsts of `fdb`)
    # tunnels, as the kernel holds them (IFLA_INFO_DATA) and as `ip -d link` shows them
    tunnel_group: Optional[str] = None   # vxlan: multicast `group`
    dstport: Optional[int] = None        # vxlan/geneve: UDP destination port (vxlan default 8472 in the kernel, iproute2 asks 4789)
    tunnel_ikey: Optional[int] = None    # gre/gretap/ip6gre: input key (None: no key)
    tunnel_okey: Optional[int] = None    # gre/gretap/ip6gre: output key
    tunnel_dev: Optional[int] = None     # the underlay device the tunnel is bound to (vxlan `dev`, ip tunnel `dev`)
    learning: bool = True                # vxlan: learns remote MACs from received packets (`nolearning`: False)
    fdb: List["FdbEntry"] = field(default_factory=list)   # vxlan: its forwarding database (`bridge fdb show dev X`)
    xdp_prog_id: int = 0
    tc_qdisc: str = ""             # clsact/ingress when tc filters can be attached
    # macvlan/macvtap/ipvlan: the parent (lower) device, in its namespace (None: unknown), and the mode
    lower_netns: Optional[str] = None
    lower_ifindex: Optional[int] = None
    mode: str = ""                 # macvlan/macvtap: bridge, private, vepa, passthru, source; ipvlan: l2, l3, l3s
    upper_macs: List[str] = field(default_factory=list)   # a parent: its children's MACs (its own unicast FDB)
    # kind "tun": its mode (tun, tap), persist, the programs holding it ("PID N (comm)"), its queue
    tun_type: str = ""
    tun_persist: bool = False
    tun_holders: List[str] = field(default_factory=list)
    tun_owner: Optional[int] = None    # the uid allowed to attach (None: anyone with CAP_NET_ADMIN)
    qlen: int = 0
    tx_dropped: int = 0

    @property
    def up(self) -> bool:
        return self.admin_up and self.lower_up


@dataclass
class FdbEntry:
    """One entry of a VXLAN device's forwarding database: frames for `mac` (00:00:00:00:00:00: the
    default entry, every unknown or broadcast MAC) go to VTEP `dst`, on `port`/`vni` when set
    (else the device's dstport/VNI). `bridge fdb append 00:00:00:00:00:00 dev vx0 dst 10.0.0.2`."""
    mac: str
    dst: Optional[str] = None
    port: Optional[int] = None
    vni: Optional[int] = None
    permanent: bool = True         # static (Flannel's, `bridge fdb add`), else learned


@dataclass
class Addr:
    ifindex: int
    address: str
    prefixlen: int
    peer: Optional[str] = None     # point-to-point peer (`ip addr add A peer B`)
    tentative: bool = False        # IPv6: duplicate address detection has not finished (unusable yet)
    dadfailed: bool = False        # IPv6: DAD found the address in use elsewhere (never usable)

    @property
    def network(self):
        return ipaddress.ip_network(f"{self.peer or self.address}/{self.prefixlen}", strict=False)

    @property
    def family(self) -> int:
        return family_of(self.address)

    @property
    def usable(self) -> bool:
        return not (self.tentative or self.dadfailed)


@dataclass
class Route:
    dst: str = "0.0.0.0"
    dst_len: int = 0
    table: int = RT_TABLE_MAIN
    type: str = "unicast"          # unicast, local, broadcast, blackhole, unreachable, prohibit, throw
    oif: Optional[int] = None
    gateway: Optional[str] = None
    prefsrc: Optional[str] = None
    priority: int = 0              # metric
    scope: int = 0
    tos: int = 0

    @property
    def network(self):
        return ipaddress.ip_network(f"{self.dst}/{self.dst_len}", strict=False)

    @property
    def family(self) -> int:
        return family_of(self.dst)


@dataclass
class Rule:
    priority: int
    table: int
    action: str = "to_tbl"         # to_tbl, blackhole, unreachable, prohibit, goto, nop
    src: Optional[str] = None
    src_len: int = 0
    dst: Optional[str] = None
    dst_len: int = 0
    iif: Optional[str] = None
    oif: Optional[str] = None
    fwmark: int = 0
    invert: bool = False
    family: int = 4


@dataclass
class Neighbour:
    ifindex: int
    dst: str
    state: str                     # reachable, stale, failed, incomplete, permanent, noarp, …
    lladdr: Optional[str] = None


@dataclass
class NetnsState:
    name: str                      # the registry's label: "host", an `ip netns` name, "docker:web", …
    links: List[Link] = field(default_factory=list)
    addrs: List[Addr] = field(default_factory=list)
    routes: List[Route] = field(default_factory=list)
    rules: List[Rule] = field(default_factory=list)
    neighbours: List[Neighbour] = field(default_factory=list)
    # "net.ipv4.ip_forward", "net.ipv4.conf.<all|default|ifname>.<key>", "net.ipv6.conf.<…>.<key>",
    # "net.bridge.bridge-nf-call-iptables"
    sysctls: Dict[str, int] = field(default_factory=dict)
    iptables_save: str = ""        # `iptables-save` output
    ip6tables_save: str = ""       # `ip6tables-save` output
    # `ip -4|-6 neigh show proxy` (state "proxy"): IPv6 NDP proxy entries and IPv4 `ip neigh add proxy`
    ndp_proxies: List[Neighbour] = field(default_factory=list)
    nft_ruleset: dict = field(default_factory=dict)   # `nft -j list ruleset`
    docker_networks: Dict[str, dict] = field(default_factory=dict)   # bridge ifname -> {"name", "id", "icc"}
    inode: int = 0                 # nsfs inode (0: unknown, e.g. hand-written state)

    # -- lookups --------------------------------------------------------------------------
    def link(self, ifindex: Optional[int]) -> Optional[Link]:
        return next((l for l in self.links if l.ifindex == ifindex), None)

    def link_by_name(self, ifname: str) -> Optional[Link]:
        return next((l for l in self.links if l.ifname == ifname), None)

    def ifname(self, ifindex: Optional[int]) -> Optional[str]:
        link = self.link(ifindex)
        return link.ifname if link else None

    def addrs_on(self, ifindex: int, family: Optional[int] = None) -> List[Addr]:
        return [a for a in self.addrs if a.ifindex == ifindex and family in (None, a.family)]

    def owns(self, address: str) -> Optional[Addr]:
        """The local address record for `address`, if this namespace has it."""
        return next((a for a in self.addrs if a.address == address), None)

    def addrs_of(self, family: int) -> List[Addr]:
        return [a for a in self.addrs if a.family == family]

    def rules_of(self, family: int) -> List[Rule]:
        return [r for r in self.rules if r.family == family]

    def ports(self, bridge_ifindex: int) -> List[Link]:
        return [l for l in self.links if l.master == bridge_ifindex]

    def neighbour(self, ifindex: int, address: str) -> Optional[Neighbour]:
        return next((n for n in self.neighbours if n.ifindex == ifindex and n.dst == address), None)

    def sysctl(self, key: str, default: int = 0) -> int:
        return self.sysctls.get(key, default)

    def conf(self, ifname: str, key: str, default: int = 0) -> int:
        return self.sysctls.get(f"net.ipv4.conf.{ifname}.{key}", default)

    def rp_filter(self, ifname: str) -> int:
        """The kernel uses the larger of conf/all and conf/<iface> (IN_DEV_RPFILTER)."""
        return max(self.conf("all", "rp_filter"), self.conf(ifname, "rp_filter"))

    def accept_local(self, ifname: str) -> bool:
        return bool(self.conf("all", "accept_local") or self.conf(ifname, "accept_local"))

    def arp_ignore(self, ifname: str) -> int:
        return max(self.conf("all", "arp_ignore"), self.conf(ifname, "arp_ignore"))

    def proxy_arp(self, ifname: str) -> bool:
        return bool(self.conf("all", "proxy_arp") or self.conf(ifname, "proxy_arp"))

    def proxy_arp_pvlan(self, ifname: str) -> bool:
        return bool(self.conf("all", "proxy_arp_pvlan") or self.conf(ifname, "proxy_arp_pvlan"))

    def medium_id(self, ifname: str) -> int:
        """IN_DEV_MEDIUM_ID reads the interface's own value: 0 none, -1 never proxy, N a medium."""
        return self.conf(ifname, "medium_id")

    def proxy_entry(self, ifindex: int, address: str) -> bool:
        """`ip neigh add proxy ADDR dev IFACE` (either family)."""
        return any(n.dst == address and n.ifindex == ifindex for n in self.ndp_proxies)

    def forwarding(self, ifname: str, family: int = 4) -> bool:
        """IPv4: conf/<iif>/forwarding. IPv6: conf/all/forwarding (per-interface forwarding only
        changes host/router behaviour) or, on kernels that have it, conf/<iif>/force_forwarding."""
        if family == 6:
            return bool(self.conf6("all", "forwarding") or self.conf6(ifname, "force_forwarding"))
        return bool(self.conf(ifname, "forwarding", self.sysctl("net.ipv4.ip_forward")))

    def conf6(self, ifname: str, key: str, default: int = 0) -> int:
        return self.sysctls.get(f"net.ipv6.conf.{ifname}.{key}", default)

    def proxy_ndp(self, ifname: str, address: str) -> bool:
        """The kernel answers NDP for another host's address on a forwarding interface with
        proxy_ndp on and a proxy entry (`ip -6 neigh add proxy ADDR dev IFACE`)."""
        link = self.link_by_name(ifname)
        entry = link is not None and any(n.dst == address and n.ifindex == link.ifindex for n in self.ndp_proxies)
        return entry and bool(self.conf6(ifname, "forwarding")) and \
            bool(self.conf6("all", "proxy_ndp") or self.conf6(ifname, "proxy_ndp"))

    def bridge_nf_call_iptables(self, family: int = 4) -> Optional[int]:
        """Whether br_netfilter sends bridged IPv4 (IPv6: bridge-nf-call-ip6tables) through the firewall."""
        return self.sysctls.get("net.bridge.bridge-nf-call-ip6tables" if family == 6 else
                                "net.bridge.bridge-nf-call-iptables")

    # -- recording ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "NetnsState":
        return cls(
            name=data["name"],
            links=[_link_from_dict(l) for l in data.get("links", [])],
            addrs=[Addr(**a) for a in data.get("addrs", [])],
            routes=[Route(**r) for r in data.get("routes", [])],
            rules=_with_default_rules([Rule(**r) for r in data.get("rules", [])]),
            neighbours=[Neighbour(**n) for n in data.get("neighbours", [])],
            sysctls=dict(data.get("sysctls", {})),
            iptables_save=data.get("iptables_save", ""),
            ip6tables_save=data.get("ip6tables_save", ""),
            ndp_proxies=[Neighbour(**n) for n in data.get("ndp_proxies", [])],
            nft_ruleset=data.get("nft_ruleset", {}),
            docker_networks=dict(data.get("docker_networks", {})),
            inode=data.get("inode", 0),
        )


def _link_from_dict(data: dict) -> Link:
    link = Link(**data)
    link.fdb = [FdbEntry(**e) if isinstance(e, dict) else e for e in link.fdb]
    return link


def default_rules(family: int = 4) -> List[Rule]:
    """A fresh namespace's policy rules (IPv6 has no rule for the default table)."""
    if family == 6:
        return [Rule(0, RT_TABLE_LOCAL, family=6), Rule(32766, RT_TABLE_MAIN, family=6)]
    return [Rule(0, RT_TABLE_LOCAL), Rule(32766, RT_TABLE_MAIN), Rule(32767, RT_TABLE_DEFAULT)]


def _with_default_rules(rules: List[Rule]) -> List[Rule]:
    """Recordings made before a family was captured get that family's default rules."""
    for family in (4, 6):
        if not any(r.family == family for r in rules):
            rules = rules + default_rules(family)
    return rules


def local_routes(addrs: List[Addr]) -> List[Route]:
    """The local-table routes the kernel derives from addresses (for hand-written recorded state)."""
    return [Route(dst=a.address, dst_len=32 if a.family == 4 else 128, table=RT_TABLE_LOCAL, type="local",
                  oif=a.ifindex, prefsrc=a.address if a.family == 4 else None, scope=254)
            for a in addrs if a.usable]


class Snapshot:
    """Namespaces by name; `source` fetches the ones not seen yet (live capture or a recording)."""

    def __init__(self, states: Optional[Dict[str, NetnsState]] = None, source=None):
        self._states: Dict[str, NetnsState] = dict(states or {})
        self._source = source

    def ns(self, name: str) -> NetnsState:
        if name not in self._states:
            if self._source is None:
                raise KeyError(f"namespace {name!r} not in the snapshot")
            self._states[name] = self._source(name)
        return self._states[name]

    def has(self, name: str) -> bool:
        if name in self._states:
            return True
        try:
            self.ns(name)
            return True
        except Exception as exc:
            log.debug("namespace %s cannot be read: %s", name, first_line(exc))
            return False

    def names(self) -> List[str]:
        return list(self._states)

    def labels(self) -> List[str]:
        """Every namespace there is: those held, and those the source can list (`labels()`)."""
        listing = getattr(self._source, "labels", None)
        return list(self._states) + [n for n in (listing() if listing else []) if n not in self._states]

    def everywhere(self) -> List[NetnsState]:
        """Every namespace there is, read: what a macvlan parent needs to find its children in
        other namespaces."""
        return [self.ns(n) for n in self.labels() if self.has(n)]

    def ns_source(self) -> "Snapshot":
        """This snapshot as the source of another (a changed copy of some namespaces): it hands out
        the namespaces the copy does not hold, and lists all of them."""
        return _SnapshotSource(self)

    def to_dict(self) -> dict:
        return {name: state.to_dict() for name, state in self._states.items()}

    @classmethod
    def from_dict(cls, data: dict) -> "Snapshot":
        return cls({name: NetnsState.from_dict(s) for name, s in data.items()})


class _SnapshotSource:
    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    def __call__(self, name: str) -> NetnsState:
        return self.snapshot.ns(name)

    def labels(self) -> List[str]:
        return self.snapshot.labels()
