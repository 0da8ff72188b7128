"""Network namespaces and interfaces: all pyroute2 use lives here.

An interface is identified by (namespace inode, ifindex): `v1` in one namespace is not
`v1` in another.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set

from .errors import BpftoolsError

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise BpftoolsError(f"cannot enter network namespace: {os.strerror(err)}")


def netns_path(name: str) -> str:
    """/run/netns/NAME, checked to really be a namespace (not ".", not a stale file)."""
    path = os.path.join(NETNS_RUN_DIR, name)
    try:
        valid = "/" not in name and name not in (".", "..") and \
            os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev  # a bind mount of nsfs
    except OSError:
        valid = False
    if not valid:
        raise BpftoolsError(f"network namespace {name!r} not found (see `ip netns list`)")
    return path


@contextlib.contextmanager
def in_netns(name: Optional[str]) -> Iterator[None]:
    """Run the block with this thread inside namespace `name` (None: stay where we are)."""
    if name is None:
        yield
        return
    target = os.open(netns_path(name), os.O_RDONLY)
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(saved)
    finally:
        os.close(target)
        os.close(saved)


def netns_inode(name: Optional[str]) -> int:
    """Inode of a named namespace, or of our own with None."""
    return os.stat(netns_path(name) if name else "/proc/thread-self/ns/net").st_ino


def named_netns() -> Dict[int, str]:
    """inode -> `ip netns` name, for every named namespace."""
    result = {}
    try:
        names = sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return result
    for name in names:
        try:
            result[os.stat(os.path.join(NETNS_RUN_DIR, name)).st_ino] = name
        except OSError:
            continue
    return result


def live_netns_inodes() -> Set[int]:
    """Inodes of the namespaces that still exist as far as we can see: named ones, ours,
    and those of running processes."""
    inodes = set(named_netns()) | {netns_inode(None)}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                inodes.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
    return inodes


def host_netns_inode() -> Optional[int]:
    """Inode of init's network namespace ("host"); None where it cannot be read (some
    sandboxes deny it even to root): then no namespace is called "host"."""
    try:
        return os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return None


def netns_label(inode: int, names: Optional[Dict[int, str]] = None) -> str:
    """How we show a namespace: its `ip netns` name, "host" for init's, else the inode."""
    names = named_netns() if names is None else names
    if inode in names:
        return names[inode]
    if inode == host_netns_inode():
        return "host"
    return str(inode)


def ipr(netns: Optional[str] = None):
    """An IPRoute socket bound to namespace `netns` (a socket stays in the namespace it was
    opened in). Opened from this thread after setns(): pyroute2's own netns= forks a helper
    process, which is slow and unsafe in a threaded program such as the exporter."""
    from pyroute2 import IPRoute

    with in_netns(netns):
        return IPRoute()


@dataclass(frozen=True)
class Interface:
    netns: Optional[str]  # `ip netns` name, None for the namespace we run in
    netns_inode: int
    ifname: str
    ifindex: int
    kind: str  # veth, bridge, vxlan, ipip… ('' for physical)
    link_type: int  # ARPHRD_*: 1 ethernet, 768 ipip, 776 sit, 778 gre, 65534 none (L3 tun)

    @property
    def has_ethernet_header(self) -> bool:
        return self.link_type == 1

    def describe(self) -> str:
        return f"{self.ifname} (netns {self.netns})" if self.netns else self.ifname


def _interface_from_msg(msg, netns: Optional[str], inode: int) -> Interface:
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo else ""
    return Interface(netns, inode, msg.get_attr("IFLA_IFNAME"), msg["index"], kind or "", msg["ifi_type"])


def list_interfaces(netns: Optional[str] = None) -> List[Interface]:
    inode = netns_inode(netns)
    with ipr(netns) as sock:
        return [_interface_from_msg(m, netns, inode) for m in sock.get_links()]


def resolve_interface(ifname: str, netns: Optional[str] = None) -> Interface:
    """The interface named `ifname` in `netns`, or a one-line error naming where we looked."""
    for iface in list_interfaces(netns):
        if iface.ifname == ifname:
            return iface
    where = f"network namespace {netns!r}" if netns else "this network namespace"
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


def all_netns() -> List[Optional[str]]:
    """None (our namespace) followed by every named namespace."""
    return [None] + sorted(named_netns().values())


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
    """The other end of veth `iface`, found through IFLA_LINK and the peer's namespace id;
    None when the peer's namespace has no `ip netns` name we can enter."""
    with ipr(iface.netns) as sock:
        msg = sock.get_links(iface.ifindex)[0]
        peer_index, nsid = msg.get_attr("IFLA_LINK"), msg.get_attr("IFLA_LINK_NETNSID")
        if not peer_index:
            return None
        candidates: List[Optional[str]] = [iface.netns] if nsid is None else []
        if nsid is not None:
            for name in all_netns():
                try:
                    fd = os.open(netns_path(name) if name else "/proc/thread-self/ns/net", os.O_RDONLY)
                except (OSError, BpftoolsError):
                    continue  # removed meanwhile
                try:
                    found = sock.get_netnsid(fd=fd)
                finally:
                    os.close(fd)
                if found and found.get("nsid") == nsid:
                    candidates.append(name)
    for name in candidates:
        for peer in list_interfaces(name):
            if peer.ifindex == peer_index:
                return peer
    return None
