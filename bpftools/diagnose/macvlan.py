"""macvlan, macvtap and ipvlan as layer 2 sees them: a child (upper) device sends out of its
parent (lower) device's wire, and receives what arrives there for its MAC; it never talks to
its parent's own addresses, nor the parent to it (the kernel hands a child's frames to the
wire or to a sibling, never up the parent's stack). Siblings reach each other only in bridge
mode (private: never; vepa: only through an external switch that hairpins; passthru: one child).

The usual cure for "the host cannot ping its own container" is a macvlan child of the same
parent on the host (a shim, bridge mode) with the host's address and a /32 route to the child
through it: `shim_fix`. Pure functions on a `Snapshot`; segment.py asks them who answers."""
from __future__ import annotations

import ipaddress
from typing import List, Optional, Tuple

from ..commands import Argv, argv_of
from .state import Link, NetnsState, Snapshot, family_of

UPPER_KINDS = ("macvlan", "macvtap", "ipvlan", "ipvtap")
SHIM_PREFIX = "shim-"


def is_upper(link: Link) -> bool:
    return link.kind in UPPER_KINDS


def lower_of(snap: Snapshot, state: NetnsState, link: Link) -> Optional[Tuple[NetnsState, Link]]:
    """The parent of a macvlan/macvtap/ipvlan child, when its namespace can be read."""
    if not is_upper(link) or not link.lower_netns or link.lower_netns.startswith("nsid:") \
            or link.lower_ifindex is None or not snap.has(link.lower_netns):
        return None
    pstate = snap.ns(link.lower_netns)
    parent = pstate.link(link.lower_ifindex)
    return (pstate, parent) if parent is not None else None


def uppers_of(snap: Snapshot, state: NetnsState, parent: Link) -> List[Tuple[NetnsState, Link]]:
    """The children of `parent` in every namespace (they are often moved into containers). Only a
    parent whose FDB lists unicast addresses of others (its children's MACs) is looked for in every
    namespace: the search reads them all."""
    if not parent.upper_macs and not any(is_upper(l) and l.lower_ifindex == parent.ifindex for l in state.links):
        return []
    return [(st, link) for st in snap.everywhere() for link in st.links
            if is_upper(link) and link.lower_netns == state.name and link.lower_ifindex == parent.ifindex]


def siblings_talk(a: Link, b: Link) -> bool:
    """Two children of one parent exchange frames inside the kernel only when both are in bridge
    mode (ipvlan: l2 and l3 children of one parent switch among themselves)."""
    if a.kind.startswith("ipv") or b.kind.startswith("ipv"):
        return True
    return a.mode == b.mode == "bridge"


def apart_why(a: Link, b: Link) -> str:
    modes = {a.mode, b.mode}
    if "private" in modes:
        return "a child in private mode never exchanges frames with its siblings"
    if "vepa" in modes:
        return ("in vepa mode frames between siblings go out to the external switch and come back only if it "
                "hairpins (reflective relay); nothing here shows one that does")
    return f"only two children in bridge mode talk to each other (here: {a.mode or '?'} and {b.mode or '?'})"


def mode_fix(link: Link) -> List[Argv]:
    """Put a macvlan/macvtap child into bridge mode (in its own namespace)."""
    if link.kind not in ("macvlan", "macvtap") or link.mode == "bridge":
        return []
    return [argv_of("ip link set dev {} type {} mode bridge", link.ifname, link.kind)]


def shim_name(parent: Link) -> str:
    """The host-side macvlan shim's name for `parent` (IFNAMSIZ: 15 characters)."""
    return (SHIM_PREFIX + parent.ifname)[:15]


def shim_fix(pstate: NetnsState, parent: Link, child: Link, child_address: Optional[str]) -> List[Argv]:
    """A bridge-mode macvlan child of `parent` in the parent's namespace, with the parent's own
    address as a /32 (/128) and a host route to the child through it: the parent's namespace then
    reaches its child as a sibling. Only the steps still missing; nothing for a child the shim
    cannot reach (not macvlan/macvtap in bridge mode) or without an address to give the shim."""
    if child.kind not in ("macvlan", "macvtap") or child.mode != "bridge" or not child_address:
        return []
    family = family_of(child_address)
    own = pstate.addrs_on(parent.ifindex, family)
    mine = next((a for a in own if ipaddress.ip_address(child_address) in a.network), own[0] if own else None)
    if mine is None:
        return []
    host_len = 32 if family == 4 else 128
    name = shim_name(parent)
    shim = pstate.link_by_name(name)
    fix = [] if shim is not None else [argv_of("ip link add {} link {} type macvlan mode bridge", name, parent.ifname)]
    if shim is None or not any(a.address == mine.address for a in pstate.addrs_on(shim.ifindex, family)):
        fix.append(argv_of("ip addr add {}/{} dev {}", mine.address, host_len, name))
    if shim is None or not shim.admin_up:
        fix.append(argv_of("ip link set {} up", name))
    if shim is None or not any(r.dst == child_address and r.dst_len == host_len and r.oif == shim.ifindex
                               for r in pstate.routes):
        fix.append(argv_of("ip route add {}/{} dev {}", child_address, host_len, name))
    return fix
