"""What the path walker knows about a network namespace: a plain, JSON-friendly record.

`NetnsState` is filled either from the live kernel (`capture.py`) or from a recorded dict
(unit tests). `Snapshot` gives the walker the namespaces it asks for, by name.
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

RT_TABLE_LOCAL = 255
RT_TABLE_MAIN = 254
RT_TABLE_DEFAULT = 253


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
    tunnel_local: Optional[str] = None   # ipip/gre/sit endpoints
    tunnel_remote: Optional[str] = None
    xdp_prog_id: int = 0
    tc_qdisc: str = ""             # clsact/ingress when tc filters can be attached

    @property
    def up(self) -> bool:
        return self.admin_up and self.lower_up


@dataclass
class Addr:
    ifindex: int
    address: str
    prefixlen: int
    peer: Optional[str] = None     # point-to-point peer (`ip addr add A peer B`)

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(f"{self.peer or self.address}/{self.prefixlen}", strict=False)


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
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(f"{self.dst}/{self.dst_len}", strict=False)


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
    # "net.ipv4.ip_forward", "net.ipv4.conf.<all|default|ifname>.<key>", "net.bridge.bridge-nf-call-iptables"
    sysctls: Dict[str, int] = field(default_factory=dict)
    iptables_save: str = ""        # `iptables-save` output
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

    def addrs_on(self, ifindex: int) -> List[Addr]:
        return [a for a in self.addrs if a.ifindex == ifindex]

    def owns(self, address: str) -> Optional[Addr]:
        """The local address record for `address`, if this namespace has it."""
        return next((a for a in self.addrs if a.address == address), None)

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

    def forwarding(self, ifname: str) -> bool:
        return bool(self.conf(ifname, "forwarding", self.sysctl("net.ipv4.ip_forward")))

    def bridge_nf_call_iptables(self) -> Optional[int]:
        return self.sysctls.get("net.bridge.bridge-nf-call-iptables")

    # -- recording ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "NetnsState":
        return cls(
            name=data["name"],
            links=[Link(**l) for l in data.get("links", [])],
            addrs=[Addr(**a) for a in data.get("addrs", [])],
            routes=[Route(**r) for r in data.get("routes", [])],
            rules=[Rule(**r) for r in data.get("rules", [])] or default_rules(),
            neighbours=[Neighbour(**n) for n in data.get("neighbours", [])],
            sysctls=dict(data.get("sysctls", {})),
            iptables_save=data.get("iptables_save", ""),
            nft_ruleset=data.get("nft_ruleset", {}),
            docker_networks=dict(data.get("docker_networks", {})),
            inode=data.get("inode", 0),
        )


def default_rules() -> List[Rule]:
    return [Rule(0, RT_TABLE_LOCAL), Rule(32766, RT_TABLE_MAIN), Rule(32767, RT_TABLE_DEFAULT)]


def local_routes(addrs: List[Addr]) -> List[Route]:
    """The local-table routes the kernel derives from addresses (for hand-written recorded state)."""
    return [Route(dst=a.address, dst_len=32, table=RT_TABLE_LOCAL, type="local", oif=a.ifindex,
                  prefsrc=a.address, scope=254) for a in addrs]


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
        except Exception:
            return False

    def names(self) -> List[str]:
        return list(self._states)

    def to_dict(self) -> dict:
        return {name: state.to_dict() for name, state in self._states.items()}

    @classmethod
    def from_dict(cls, data: dict) -> "Snapshot":
        return cls({name: NetnsState.from_dict(s) for name, s in data.items()})
