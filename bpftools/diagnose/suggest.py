"""Where a namespace could send a packet for dst instead: the neighbours on its veth and bridge
segments that own dst, or forward and route it (through an address of theirs in a subnet of
ours, a gateway outside every subnet of ours reached `onlink`, or on-link when they answer for
dst by proxy ARP). Every candidate, the likeliest first: the prover (prove.py) keeps the first
that repairs the path."""
from __future__ import annotations

import ipaddress
import logging
from typing import Callable, Iterable, List, Optional, Tuple

from ..errors import first_line
from .checks import RouteSuggestion
from .routing import fib_lookup
from .segment import proxy_arp_reason, segment
from .state import Link, NetnsState, Snapshot, family_of, is_link_local

log = logging.getLogger(__name__)


def suggest_routes(snap: Snapshot, ns: str, dst: str, prefer_ifindex: Optional[int] = None,
                   locate: Optional[Callable] = None) -> List[RouteSuggestion]:
    try:
        state = snap.ns(ns)
    except Exception as exc:  # a namespace we cannot read suggests nothing
        log.debug("route suggestion: reading %s failed: %s", ns, first_line(exc))
        return []
    found: List[RouteSuggestion] = []
    for link in sorted(state.links, key=lambda l: l.ifindex != prefer_ifindex):
        if link.kind not in ("veth", "bridge"):
            continue
        for pstate, plink in _neighbours(snap, state, link, locate):
            for suggestion in _through(state, link, pstate, plink, dst):
                if suggestion not in found:
                    found.append(suggestion)
    return sorted(found, key=lambda s: s.gateway is not None and s.onlink)   # stable: onlink gateways last


def _neighbours(snap: Snapshot, state: NetnsState, link: Link, locate) -> Iterable[Tuple[NetnsState, Link]]:
    return [(st.state, st.link) for st in segment(snap, state, link, locate).stations]


def _through(state: NetnsState, link: Link, pstate: NetnsState, plink: Link, dst: str) -> List[RouteSuggestion]:
    """How `state` could hand dst to the neighbour `pstate` (its interface `plink`) over `link`."""
    family = family_of(dst)
    mine = state.addrs_on(link.ifindex, family)
    if pstate.owns(dst) is not None:
        return [RouteSuggestion(link.ifname, None)]
    if not pstate.forwarding(plink.ifname, family) or not fib_lookup(pstate, dst).ok:
        return []
    theirs = sorted(pstate.addrs_on(plink.ifindex, family), key=lambda a: is_link_local(a.address))
    near = [a for a in theirs if any(ipaddress.ip_address(a.address) in m.network for m in mine)]
    found = [RouteSuggestion(link.ifname, near[0].address)] if near else []
    source = mine[0].address if mine else None
    if family == 4 and proxy_arp_reason(pstate, plink, dst, source):   # it answers ARP for dst itself
        found.append(RouteSuggestion(link.ifname, None))
    far = [a for a in theirs if a not in near and not is_link_local(a.address)]
    if far and mine:
        found.append(RouteSuggestion(link.ifname, far[0].address, onlink=True))
    return found
