"""Layer 2 as ARP sees it: the stations on the segment behind an interface (the veth peer, every
port of a bridge and what is behind each port, through nested bridges), and which of them
answers ARP for an address (ownership, arp_ignore, arp_filter, NOARP, link state, proxy_arp).

The walker hands a packet only to the station that would answer; when none would, the walk
stops there (`neighbor_unreachable`). Works on a `Snapshot`, like the walker."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import List, Optional, Set, Tuple

from .routing import fib_lookup
from .state import Addr, Link, NetnsState, Snapshot

ARP_IGNORE_NEVER = 8


@dataclass
class Crossing:
    """A bridge the frame crosses: in on `port_in` (None: sent by the bridge device itself), out
    on `port_out` (None: the bridge device itself receives it)."""
    state: NetnsState
    bridge: Link
    port_in: Optional[Link]
    port_out: Optional[Link]


@dataclass
class Station:
    """An interface on the segment that receives the frames: a veth end or a bridge device."""
    state: NetnsState
    link: Link
    crossings: List[Crossing] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.link.ifname} in {self.state.name}"


@dataclass
class Segment:
    stations: List[Station] = field(default_factory=list)
    unseen: List[str] = field(default_factory=list)   # parts of the segment we cannot look into

    def describe(self, oif: Link) -> str:
        if not self.stations:
            return f"nothing is connected to {oif.ifname}"
        names = ", ".join(s.where for s in self.stations[:4]) + (", …" if len(self.stations) > 4 else "")
        return f"the segment of {oif.ifname}: {names}"


def peer_of(snap: Snapshot, state: NetnsState, link: Link) -> Optional[Tuple[NetnsState, Link]]:
    """The other end of a veth, when its namespace is one we can read."""
    if not link.peer_netns or link.peer_netns.startswith("nsid:") or link.peer_ifindex is None:
        return None
    try:
        pstate = snap.ns(link.peer_netns)
    except Exception:
        return None
    plink = pstate.link(link.peer_ifindex)
    return (pstate, plink) if plink else None


def segment(snap: Snapshot, state: NetnsState, oif: Link) -> Segment:
    """Every station a broadcast from `oif` reaches (ARP asks all of them), in breadth-first order."""
    seg = Segment()
    seen: Set[Tuple[str, int]] = set()
    if oif.kind == "bridge":
        _bridge(snap, state, oif, None, [], seg, seen)
    elif oif.kind == "veth":
        _wire(snap, state, oif, [], seg, seen)
    return seg


def _wire(snap: Snapshot, state: NetnsState, link: Link, crossings: List[Crossing], seg: Segment, seen) -> None:
    """Frames leaving `link` (a veth end): where they come out."""
    peer = peer_of(snap, state, link)
    if peer is None:
        seg.unseen.append(f"the other end of {link.ifname} in {state.name} (a namespace we cannot enter)")
        return
    pstate, plink = peer
    if plink.master is None:
        seg.stations.append(Station(pstate, plink, crossings))
        return
    bridge = pstate.link(plink.master)
    if bridge is None or bridge.kind != "bridge":
        seg.unseen.append(f"{plink.ifname} in {pstate.name}, enslaved to a {bridge.kind if bridge else '?'} device")
        return
    _bridge(snap, pstate, bridge, plink, crossings, seg, seen)


def _bridge(snap: Snapshot, bstate: NetnsState, bridge: Link, port_in: Optional[Link], crossings: List[Crossing],
            seg: Segment, seen) -> None:
    if (bstate.name, bridge.ifindex) in seen:
        return
    seen.add((bstate.name, bridge.ifindex))
    if port_in is not None:
        seg.stations.append(Station(bstate, bridge, crossings + [Crossing(bstate, bridge, port_in, None)]))
    for port in bstate.ports(bridge.ifindex):
        if port_in is not None and port.ifindex == port_in.ifindex:
            continue
        through = crossings + [Crossing(bstate, bridge, port_in, port)]
        if port.kind == "veth":
            _wire(snap, bstate, port, through, seg, seen)
        else:
            seg.unseen.append(f"{port.ifname} in {bstate.name} (a {port.kind or 'physical'} port of {bridge.ifname})")


# -- who answers ---------------------------------------------------------------------------------------

@dataclass
class Answer:
    """Why a station does (ok) or does not answer ARP for an address."""
    station: Station
    ok: bool
    detail: str
    cause: str = "neighbor_unreachable"
    fix: List[str] = field(default_factory=list)   # in the station's namespace
    proxy: bool = False


@dataclass
class Resolution:
    answer: Optional[Answer]        # the station that answers, or the owner that refuses
    segment: Segment

    @property
    def station(self) -> Optional[Station]:
        return self.answer.station if self.answer and self.answer.ok else None


def _in_subnet(address: str, addr: Addr) -> bool:
    return ipaddress.ip_address(address) in addr.network


def answer(station: Station, target: str, sender: Optional[str]) -> Optional[Answer]:
    """ARP (arp_process) at one station: None when the station has nothing to do with `target`."""
    st, link = station.state, station.link
    owner = st.owns(target)
    proxy = owner is None and st.proxy_arp(link.ifname) and st.forwarding(link.ifname) and \
        _routes_elsewhere(st, target, link)
    if owner is None and not proxy:
        return None
    blocked = _blocked_on_the_way(station)
    if blocked is not None:
        return blocked
    if link.noarp:
        return Answer(station, False, f"{link.ifname} in {st.name} has ARP turned off (NOARP), so nobody answers "
                      f"who-has {target}", fix=[f"ip link set dev {link.ifname} arp on"])
    if proxy:
        return Answer(station, True, f"{station.where} answers ARP for {target} (proxy_arp)", proxy=True)
    ignore = st.arp_ignore(link.ifname)
    reset = [f"sysctl -w net.ipv4.conf.all.arp_ignore=0", f"sysctl -w net.ipv4.conf.{link.ifname}.arp_ignore=0"]
    if ignore >= ARP_IGNORE_NEVER:
        return Answer(station, False, f"arp_ignore = {ignore} on {link.ifname} in {st.name}: it answers no ARP "
                      "request", fix=reset)
    if ignore in (1, 2) and owner.ifindex != link.ifindex:
        return Answer(station, False, f"{target} is on {st.ifname(owner.ifindex)}, not on {link.ifname} where the "
                      f"ARP request arrives, and arp_ignore = {ignore} answers only for addresses of the receiving "
                      "interface", fix=reset)
    if ignore == 2 and sender and not _in_subnet(sender, owner):
        return Answer(station, False, f"arp_ignore = 2 on {link.ifname} in {st.name}: the asker {sender} is not in "
                      f"{target}'s subnet {owner.network}", fix=reset)
    if sender and (st.conf("all", "arp_filter") or st.conf(link.ifname, "arp_filter")):
        back = fib_lookup(st, sender, target)
        if back.route is not None and back.route.type == "unicast" and back.route.oif != link.ifindex:
            return Answer(station, False, f"arp_filter = 1 in {st.name}: the route back to {sender} leaves by "
                          f"{st.ifname(back.route.oif)}, not {link.ifname} where the ARP request arrives",
                          fix=[f"sysctl -w net.ipv4.conf.all.arp_filter=0",
                               f"sysctl -w net.ipv4.conf.{link.ifname}.arp_filter=0"])
    return Answer(station, True, f"{target} answers ARP on {station.where}")


def _blocked_on_the_way(station: Station) -> Optional[Answer]:
    """A link that is down between the sender and the station: the ARP request never arrives."""
    for c in station.crossings:
        for link, role in ((c.bridge, "bridge"), (c.port_out, f"port of {c.bridge.ifname}")):
            if link is not None and not link.admin_up:
                return Answer(_at(station, c.state, link), False, f"{link.ifname} ({role}) in {c.state.name} is "
                              "administratively down", "link_down", [f"ip link set dev {link.ifname} up"])
    if not station.link.admin_up:
        return Answer(station, False, f"{station.link.ifname} in {station.state.name} is administratively down",
                      "link_down", [f"ip link set dev {station.link.ifname} up"])
    return None


def _at(station: Station, state: NetnsState, link: Link) -> Station:
    return Station(state, link, station.crossings)


def _routes_elsewhere(state: NetnsState, target: str, link: Link) -> bool:
    route = fib_lookup(state, target).route
    return route is not None and route.type == "unicast" and route.oif != link.ifindex


def resolve(snap: Snapshot, state: NetnsState, oif: Link, target: str, sender: Optional[str]) -> Resolution:
    """The station that answers ARP for `target` asked through `oif`; else the owner that would
    not answer (and why); else nobody (answer None)."""
    seg = segment(snap, state, oif)
    refused = None
    for station in seg.stations:
        if station.state.name == state.name and station.link.ifindex == oif.ifindex:
            continue
        found = answer(station, target, sender)
        if found is None:
            continue
        if found.ok:
            return Resolution(found, seg)
        refused = refused or found
    return Resolution(refused, seg)
