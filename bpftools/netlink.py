"""Network namespaces and interfaces: all pyroute2 use lives here.

An interface is identified by (namespace inode, ifindex): `v1` in one namespace is not
`v1` in another.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set, Union

from . import namespaces
from .errors import BpftoolsError
from .namespaces import NETNS_RUN_DIR, OWN_PATH, Netns, entered, entered_fd, netns_path  # noqa: F401 (re-exported)

# A namespace handle: None (the one we run in), an `ip netns` name, or a Netns from the
# registry (bpftools.namespaces, which knows every namespace and how to name and enter it).
NetnsHandle = Union[None, str, Netns]


@contextlib.contextmanager
def in_netns(netns: NetnsHandle) -> Iterator[None]:
    """Run the block with this thread inside `netns` (None: stay where we are)."""
    if netns is None:
        yield
    elif isinstance(netns, Netns):
        with entered(netns):
            yield
    else:
        fd = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            with entered_fd(fd):
                yield
        finally:
            os.close(fd)


def netns_inode(netns: NetnsHandle) -> int:
    """Inode of a namespace handle (None: our own)."""
    if isinstance(netns, Netns):
        return netns.inode
    return os.stat(netns_path(netns) if netns else OWN_PATH).st_ino


def as_netns(netns: NetnsHandle) -> Netns:
    """The registry's record for a handle."""
    if isinstance(netns, Netns):
        return netns
    inode = netns_inode(netns)
    return namespaces.find_inode(inode) or Netns(inode, netns or f"inode:{inode}", "netns" if netns else "inode",
                                                 netns_path(netns) if netns else None)


def select_netns(selector: Optional[str], hold: bool = True) -> NetnsHandle:
    """--netns SELECTOR -> a handle, held open for the rest of the command (None: ours)."""
    return None if selector is None else namespaces.resolve(selector, hold=hold)


def named_netns() -> Dict[int, str]:
    """inode -> `ip netns` name, for every named namespace."""
    return namespaces.named()


def live_netns_inodes() -> Set[int]:
    """Inodes of every namespace that still exists as far as we can see."""
    return set(namespaces.by_inode(max_age=0))


def host_netns_inode() -> Optional[int]:
    """Inode of the initial network namespace ("host"); None where it cannot be seen."""
    return namespaces.host_inode()


def netns_label(inode: int, names: Optional[Dict[int, str]] = None) -> str:
    """How we show a namespace (bpftools.namespaces.label_for_inode); `names` is ignored."""
    return namespaces.label_for_inode(inode)


def ipr(netns: NetnsHandle = None):
    """An IPRoute socket bound to namespace `netns` (a socket stays in the namespace it was
    opened in). Opened from this thread after setns(): pyroute2's own netns= forks a helper
    process, which is slow and unsafe in a threaded program such as the exporter."""
    from pyroute2 import IPRoute

    with in_netns(netns):
        return IPRoute()


@dataclass(frozen=True)
class Interface:
    netns: NetnsHandle  # None for the namespace we run in, an `ip netns` name, or a Netns
    netns_inode: int
    ifname: str
    ifindex: int
    kind: str  # veth, bridge, vxlan, ipip… ('' for physical)
    link_type: int  # ARPHRD_*: 1 ethernet, 768 ipip, 776 sit, 778 gre, 65534 none (L3 tun)

    @property
    def has_ethernet_header(self) -> bool:
        return self.link_type == 1

    @property
    def netns_label(self) -> str:
        return self.netns.label if isinstance(self.netns, Netns) else self.netns or netns_label(self.netns_inode)

    def describe(self) -> str:
        return f"{self.ifname} (netns {self.netns_label})" if self.netns else self.ifname


def _interface_from_msg(msg, netns: NetnsHandle, inode: int) -> Interface:
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo else ""
    return Interface(netns, inode, msg.get_attr("IFLA_IFNAME"), msg["index"], kind or "", msg["ifi_type"])


def list_interfaces(netns: NetnsHandle = None) -> List[Interface]:
    inode = netns_inode(netns)
    with ipr(netns) as sock:
        return [_interface_from_msg(m, netns, inode) for m in sock.get_links()]


def resolve_interface(ifname: str, netns: NetnsHandle = None) -> Interface:
    """The interface named `ifname` in `netns`, or a one-line error naming where we looked."""
    for iface in list_interfaces(netns):
        if iface.ifname == ifname:
            return iface
    where = f"network namespace {str(netns)!r}" if netns else "this network namespace"
    raise BpftoolsError(f"interface {ifname!r} not found in {where}")


def xdp_prog_id(iface: Interface) -> int:
    """Id of the XDP program attached to `iface` (0 if none), whatever attached it."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with ipr(iface.netns) as sock:
            msg = sock.get_links(iface.ifindex)[0]
    except NetlinkError as exc:
        raise BpftoolsError(f"interface {iface.describe()} is gone ({exc.args[-1] if exc.args else exc})") from None
    xdp = msg.get_attr("IFLA_XDP")
    if not xdp:
        return 0
    return xdp.get_attr("IFLA_XDP_PROG_ID") or 0


def all_netns() -> List[NetnsHandle]:
    """None (our namespace) followed by every other namespace the registry knows."""
    own = namespaces.own_inode()
    return [None] + [ns for ns in namespaces.discover() if ns.inode != own and ns.path]


def interface_addresses(iface: Interface) -> List[str]:
    """IPv4 and IPv6 addresses configured on `iface` (IFA_LOCAL for IPv4 point-to-point peers)."""
    with ipr(iface.netns) as sock:
        msgs = sock.get_addr(index=iface.ifindex)
    return [m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS") for m in msgs]


def interface_mac(iface: Interface) -> Optional[str]:
    with ipr(iface.netns) as sock:
        return sock.get_links(iface.ifindex)[0].get_attr("IFLA_ADDRESS")


NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80  # REACHABLE, STALE, DELAY, PROBE, PERMANENT


def neighbours(iface: Interface) -> Dict[str, str]:
    """IP address -> MAC of the usable neighbour entries on `iface`."""
    with ipr(iface.netns) as sock:
        msgs = sock.get_neighbours(ifindex=iface.ifindex)
    return {m.get_attr("NDA_DST"): m.get_attr("NDA_LLADDR") for m in msgs
            if m["state"] & NUD_USABLE and m.get_attr("NDA_DST") and m.get_attr("NDA_LLADDR")}


def veth_peer(iface: Interface) -> Optional[Interface]:
    """The other end of veth `iface`, found through IFLA_LINK and the peer's namespace id
    (any namespace the registry knows: named, a container's, a process's)."""
    with ipr(iface.netns) as sock:
        msg = sock.get_links(iface.ifindex)[0]
    peer_index, nsid = msg.get_attr("IFLA_LINK"), msg.get_attr("IFLA_LINK_NETNSID")
    if not peer_index:
        return None
    candidates: List[NetnsHandle] = [iface.netns]
    if nsid is not None:
        peer = namespaces.peer_netns(as_netns(iface.netns), nsid)
        if peer is None:
            return None
        candidates = [None if peer.inode == namespaces.own_inode() else peer]
    for ns in candidates:
        for peer_iface in list_interfaces(ns):
            if peer_iface.ifindex == peer_index:
                return peer_iface
    return None
