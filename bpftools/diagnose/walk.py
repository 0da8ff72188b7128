"""The static path walk: from the source namespace, follow routing decisions, veth peers
(across namespaces), bridges and forwarding namespaces to the destination, then walk the
reply back; run the checks of `checks.py` at every hop. Works on a `Snapshot`, so unit
tests feed it recorded namespace state. IPv4 and IPv6 alike: the family is the destination's
(IPv6: NDP for ARP, no reverse-path filter, routers never fragment, link-local destinations
leave by their %scope interface)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from . import checks as C
from .firewall import Packet
from .routing import fib_lookup, route_get, select_source
from .state import Link, NetnsState, Snapshot, family_of, is_link_local

ICMP_HEADER = 8
IP_HEADER = {4: 20, 6: 40}
ECHO_TYPES = {4: {"request": 8, "reply": 0}, 6: {"request": 128, "reply": 129}}
TUNNEL_KINDS = ("ipip", "gre", "sit")


@dataclass
class Hop:
    direction: str
    netns: str
    iif: Optional[str]
    oif: Optional[str]
    action: str            # send, forward, bridge, deliver, leave, broken, tunnel
    src: str
    dst: str
    nexthop: Optional[str] = None
    note: str = ""

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class WalkResult:
    hops: List[Hop] = field(default_factory=list)
    findings: List[C.Finding] = field(default_factory=list)
    src: Optional[str] = None
    dst_netns: Optional[str] = None
    request_delivered: bool = False
    reply_delivered: bool = False
    left_machine: Optional[str] = None
    arrival_ifindex: Optional[int] = None   # where the echo request entered DST's namespace
    family: int = 4

    @property
    def namespaces(self) -> List[str]:
        seen: List[str] = []
        for hop in self.hops:
            if hop.netns not in seen:
                seen.append(hop.netns)
        return seen


class Walker:
    def __init__(self, snapshot: Snapshot, payload: int = 56, max_hops: int = 16, home: str = C.HOST_LABEL):
        self.snap = snapshot
        self.payload = payload
        self.size = payload + ICMP_HEADER + IP_HEADER[4]
        self.max_hops = max_hops
        self.home = home
        self.result = WalkResult()

    # -- entry point -------------------------------------------------------------------------
    def walk(self, src_ns: str, dst: str, src: Optional[str] = None, dev: Optional[str] = None) -> WalkResult:
        """`dev`: the interface the ping leaves by whatever the routes say (a link-local
        destination's %scope)."""
        res = self.result
        res.family = family_of(dst)
        self.size = self.payload + ICMP_HEADER + IP_HEADER[res.family]
        state = self.snap.ns(src_ns)
        bound = state.link_by_name(dev) if dev else None
        if dev and bound is None:
            self._hop("request", src_ns, None, dev, "broken", src or "", dst, note=f"no interface {dev} here")
            return res
        oif = bound.ifindex if bound else None
        first = route_get(state, dst, src, oif)
        if src is None and first.route is not None and first.route.type == "unicast":
            src = select_source(state, first.route, dst)
        res.src = src or dst
        end = self._direction("request", src_ns, res.src, dst, None, oif)
        if end is None:
            return res
        res.request_delivered = True
        res.dst_netns = end
        # a link-local source is answered on the link the request came from
        reply_oif = res.arrival_ifindex if is_link_local(res.src) else None
        back = self._direction("reply", end, dst, res.src, None, reply_oif)
        res.reply_delivered = back == src_ns
        if back is not None and back != src_ns:
            self._add(C.check_stray_source(self.snap.ns(back), src_ns, res.src, home=self.home))
        return res

    # -- helpers -------------------------------------------------------------------------------
    def _add(self, finding: Optional[C.Finding]) -> Optional[C.Finding]:
        if finding is not None:
            self.result.findings.append(finding)
        return finding

    def _bad(self, *args, **kw) -> C.Finding:
        return C.bad(*args, home=self.home, **kw)

    def _hop(self, *args, **kw) -> Hop:
        hop = Hop(*args, **kw)
        self.result.hops.append(hop)
        return hop

    # -- one direction ---------------------------------------------------------------------------
    def _direction(self, direction: str, ns: str, src: str, dst: str, iif: Optional[Link],
                   bound_oif: Optional[int] = None) -> Optional[str]:
        """Walk until dst is local (returns that namespace) or the walk cannot go on (None)."""
        kw = {"direction": direction, "home": self.home}
        family = family_of(dst)
        icmp = ECHO_TYPES[family][direction]
        ctstate = "NEW" if direction == "request" else "ESTABLISHED"
        for _ in range(self.max_hops):
            state = self.snap.ns(ns)
            if iif is None:
                lookup = route_get(state, dst, src, bound_oif)
                if lookup.route is not None and lookup.route.type == "local":
                    self._hop(direction, ns, None, "lo", "deliver", src, dst, note=f"{dst} is local")
                    return ns
                prefer = self.result.arrival_ifindex if direction == "reply" else None
                self._add(C.check_route(state, lookup, dst, "no_route" if direction == "request" else
                                        "no_return_route", self._suggest_route(ns, dst, prefer), **kw))
                if not lookup.ok:
                    self._hop(direction, ns, None, None, "broken", src, dst, note=f"no route to {dst}")
                    return None
                oif = state.link(lookup.route.oif)
                self._add(C.check_firewall(state, Packet("output", src, dst, icmp, "", oif.ifname if oif else "",
                                                         ctstate), **kw))
                action = "send"
            else:
                lookup = fib_lookup(state, dst, src, iif.ifname)
                if lookup.route is not None and lookup.route.type == "local":
                    self._add(C.check_source(state, src, dst, iif, "packet",
                                             self._suggest_route(ns, src, iif.ifindex), **kw))
                    self._add(C.check_firewall(state, Packet("input", src, dst, icmp, iif.ifname, "", ctstate),
                                               **kw))
                    self._hop(direction, ns, iif.ifname, None, "deliver", src, dst, note=f"{dst} is local")
                    if direction == "request":
                        self.result.arrival_ifindex = iif.ifindex
                    return ns
                self._add(C.check_forwarding(state, iif, family, **kw))
                self._add(C.check_source(state, src, dst, iif, "packet",
                                         self._suggest_route(ns, src, iif.ifindex), **kw))
                self._add(C.check_route(state, lookup, dst, "no_route" if direction == "request" else
                                        "no_return_route", self._suggest_route(ns, dst, iif.ifindex), **kw))
                if not lookup.ok:
                    self._hop(direction, ns, iif.ifname, None, "broken", src, dst, note=f"no route to {dst}")
                    return None
                oif = state.link(lookup.route.oif)
                self._add(C.check_firewall(state, Packet("forward", src, dst, icmp, iif.ifname,
                                                         oif.ifname if oif else "", ctstate), **kw))
                if oif is not None and oif.kind not in TUNNEL_KINDS and family == 6:
                    self._add(C.check_mtu(state, oif, self.size, "IPv6 routers never fragment: the router drops "
                                          "it and sends ICMPv6 packet-too-big to the source, which must fragment "
                                          "(if that message is filtered on the way, the path is a black hole)",
                                          max(self.size, 1500), **kw))
                elif oif is not None and oif.kind not in TUNNEL_KINDS and direction == "request":
                    # ping sets DF on IPv4; echo replies do not
                    self._add(C.check_mtu(state, oif, self.size, "the echo request is forwarded with DF set",
                                          max(self.size, 1500), **kw))
                action = "forward"
            nexthop = lookup.route.gateway or dst
            if oif is None:  # e.g. a nexthop object (`ip nexthop`), which we do not resolve
                self._hop(direction, ns, iif.ifname if iif else None, None, "leave", src, dst, nexthop,
                          note="the route's output device is not known here; not followed further")
                return None
            self._hop(direction, ns, iif.ifname if iif else None, oif.ifname, action, src, dst, nexthop)
            nxt = self._egress(state, oif, lookup.route, nexthop, src, dst, iif is None, **kw)
            if nxt is None:
                return None
            ns, iif = nxt
        self._hop(direction, ns, None, None, "broken", src, dst, note="too many hops (routing loop?)")
        return None

    # -- leaving a namespace ------------------------------------------------------------------------
    def _egress(self, state: NetnsState, oif: Link, route, nexthop: str, src: str, dst: str,
                originated: bool, **kw) -> Optional[Tuple[str, Link]]:
        direction = kw["direction"]
        self._add(C.check_link(state, oif, "outgoing interface", **kw))
        for finding in C.check_programs(state, oif, **kw):
            self._add(finding)
        if oif.master is not None:
            self._add(C.check_bridge_port_address(state, oif, **kw))
        arp_src = src if state.owns(src) else self._arp_source(state, oif, nexthop)
        if family_of(nexthop) == 6:
            arp_src = None  # NDP has no source validation (no rp_filter in IPv6)
        if oif.kind == "bridge":
            got = self._through_bridge(state, oif, None, nexthop, src, dst, route=route, **kw)
        elif oif.kind == "veth":
            got = self._through_veth(state, oif, route, nexthop, src, dst, **kw)
        elif oif.kind in TUNNEL_KINDS:
            return self._through_tunnel(state, oif, src, dst, **kw)
        else:
            why = "loopback" if oif.ifname == "lo" else (oif.kind or "a physical interface")
            self._hop(direction, state.name, None, oif.ifname, "leave", src, dst, nexthop,
                      note=f"the path leaves through {oif.ifname} ({why}); not followed further")
            self.result.left_machine = f"{oif.ifname} in {state.name}"
            return None
        if got is None:
            return None
        rstate, receiver = got
        self._add(C.check_neighbour(state, oif, nexthop, receiver, rstate, **kw))
        if receiver is not None and arp_src and not oif.noarp:
            finding = C.check_source(rstate, arp_src, nexthop, receiver, "ARP request",
                                     self._suggest_route(rstate.name, arp_src, receiver.ifindex), **kw)
            self._add(finding)
        return rstate.name, receiver

    @staticmethod
    def _arp_source(state: NetnsState, oif: Link, nexthop: str) -> Optional[str]:
        addrs = state.addrs_on(oif.ifindex, family_of(nexthop))
        for addr in addrs:
            if ipaddress.ip_address(nexthop) in addr.network:
                return addr.address
        return addrs[0].address if addrs else None

    def _peer(self, state: NetnsState, link: Link) -> Optional[Tuple[NetnsState, Link]]:
        if not link.peer_netns or link.peer_netns.startswith("nsid:") or link.peer_ifindex is None:
            return None
        try:
            pstate = self.snap.ns(link.peer_netns)
        except Exception:
            return None
        plink = pstate.link(link.peer_ifindex)
        return (pstate, plink) if plink else None

    def _through_veth(self, state, oif: Link, route, nexthop, src, dst, **kw):
        direction = kw["direction"]
        peer = self._peer(state, oif)
        if peer is None:
            self._hop(direction, state.name, None, oif.ifname, "leave", src, dst, nexthop,
                      note=f"the other end of {oif.ifname} is in a namespace we cannot enter")
            return None
        pstate, plink = peer
        self._add(C.check_link(pstate, plink, f"veth peer of {oif.ifname}", **kw))
        for finding in C.check_programs(pstate, plink, **kw):
            self._add(finding)
        self._add(C.check_mtu(pstate, plink, min(self.size, oif.mtu), f"the veth peer of {oif.ifname}, whose MTU is "
                              f"{oif.mtu}: veth drops what does not fit the receiving end", max(oif.mtu, self.size),
                              **kw))
        if plink.master is not None:
            bridge = pstate.link(plink.master)
            return self._through_bridge(pstate, bridge, plink, nexthop, src, dst, route=route, **kw)
        self._add(C.check_nexthop_owner(state, oif, route, nexthop, pstate, plink,
                                        f"{plink.ifname} in {pstate.name}", **kw))
        return pstate, plink

    def _through_bridge(self, bstate: NetnsState, bridge: Link, port_in: Optional[Link], nexthop,
                        src, dst, route=None, **kw):
        direction = kw["direction"]
        icmp = ECHO_TYPES[family_of(dst)][direction]
        self._add(C.check_link(bstate, bridge, "bridge", **kw))
        if port_in is not None:
            self._hop(direction, bstate.name, port_in.ifname, None, "bridge", src, dst, nexthop,
                      note=f"{port_in.ifname} is a port of {bridge.ifname}")
        # The bridge itself (or one of its ports, see bridge_port_address) may own the next hop.
        own = bstate.owns(nexthop)
        if own is not None and port_in is not None:
            self.result.hops[-1].oif = bridge.ifname
            return bstate, bridge
        for port in bstate.ports(bridge.ifindex):
            if port_in is not None and port.ifindex == port_in.ifindex:
                continue
            peer = self._peer(bstate, port)
            if peer is None:
                continue
            qstate, qlink = peer
            if qstate.owns(nexthop) is None:
                continue
            if port_in is not None:
                self.result.hops[-1].oif = port.ifname
            self._add(C.check_link(bstate, port, "bridge port", **kw))
            if port_in is not None:
                pkt = Packet("forward", src, dst, icmp, bridge.ifname, bridge.ifname,
                             "NEW" if direction == "request" else "ESTABLISHED", port_in.ifname, port.ifname)
                self._add(C.check_bridge_netfilter(bstate, bridge, pkt, **kw))
            frame = min(self.size, (port_in or bridge).mtu)
            self._add(C.check_mtu(bstate, port, frame, f"bridge port of {bridge.ifname}", max(qlink.mtu, frame),
                                  **kw))
            self._add(C.check_link(qstate, qlink, f"veth peer of bridge port {port.ifname}", **kw))
            for finding in C.check_programs(qstate, qlink, **kw):
                self._add(finding)
            self._add(C.check_mtu(qstate, qlink, min(frame, port.mtu), f"the veth peer of {port.ifname}",
                                  max(port.mtu, frame), **kw))
            return qstate, qlink
        where = f"the ports of {bridge.ifname} in {bstate.name}"
        self._add(C.check_nexthop_owner(bstate, bridge, route, nexthop, None, None, where, **kw))
        self._hop(direction, bstate.name, port_in.ifname if port_in else None, bridge.ifname, "broken", src, dst,
                  nexthop, note=f"no host behind {bridge.ifname} has {nexthop}")
        return None

    def _through_tunnel(self, state: NetnsState, tun: Link, src, dst, **kw):
        direction = kw["direction"]
        """ipip/gre/sit: walk the outer packet to the remote endpoint, continue on its tunnel device."""
        if not tun.tunnel_remote:
            self._hop(direction, state.name, None, tun.ifname, "leave", src, dst,
                      note=f"{tun.ifname} has no fixed remote endpoint; not followed")
            return None
        self._hop(direction, state.name, None, tun.ifname, "tunnel", tun.tunnel_local or "", tun.tunnel_remote,
                  note=f"encapsulated in {tun.kind} {tun.tunnel_local} -> {tun.tunnel_remote}")
        outer_src = tun.tunnel_local or None
        end = self._direction(direction, state.name, outer_src or src, tun.tunnel_remote, None)
        if end is None:
            return None
        outer_end = self.result.hops[-1]
        outer_end.action, outer_end.note = "decap", f"{tun.tunnel_remote} is local: {tun.kind} decapsulation"
        rstate = self.snap.ns(end)
        for link in rstate.links:
            if link.kind == tun.kind and link.tunnel_local == tun.tunnel_remote and \
                    link.tunnel_remote in (tun.tunnel_local, None):
                self._add(C.check_link(rstate, link, f"{tun.kind} tunnel end", **kw))
                return end, link
        self._add(self._bad(rstate, "tunnel", "unknown", f"no {tun.kind} device in {end} decapsulates packets "
                            f"from {tun.tunnel_local} to {tun.tunnel_remote}", [], tun.ifname, **kw))
        return None

    # -- fixes for missing routes -----------------------------------------------------------------------
    def _suggest_route(self, ns: str, dst: str, prefer_ifindex: Optional[int]) -> Optional[C.RouteSuggestion]:
        """A neighbour namespace that owns dst or forwards and has a route to it."""
        try:
            state = self.snap.ns(ns)
        except Exception:
            return None
        links = sorted(state.links, key=lambda l: l.ifindex != prefer_ifindex)
        family = family_of(dst)
        for link in links:
            if link.kind not in ("veth", "bridge") or not state.addrs_on(link.ifindex, family):
                continue
            for pstate, plink in self._neighbours_of(state, link):
                if pstate.owns(dst) is not None:
                    return C.RouteSuggestion(link.ifname, None)
                gateways = [a for a in pstate.addrs_on(plink.ifindex, family)
                            if any(ipaddress.ip_address(a.address) in mine.network
                                   for mine in state.addrs_on(link.ifindex, family))]
                gateways.sort(key=lambda a: is_link_local(a.address))  # a global gateway reads better
                if gateways and pstate.forwarding(plink.ifname, family) and fib_lookup(pstate, dst).ok:
                    return C.RouteSuggestion(link.ifname, gateways[0].address)
        return None

    def _neighbours_of(self, state: NetnsState, link: Link):
        if link.kind == "veth":
            peer = self._peer(state, link)
            if peer is None:
                return []
            pstate, plink = peer
            if plink.master is None:
                return [peer]
            bridge = pstate.link(plink.master)
            found = [(pstate, bridge)] if bridge else []
            for port in pstate.ports(plink.master):
                if port.ifindex != plink.ifindex:
                    q = self._peer(pstate, port)
                    if q:
                        found.append(q)
            return found
        if link.kind == "bridge":
            return [q for q in (self._peer(state, p) for p in state.ports(link.ifindex)) if q]
        return []
