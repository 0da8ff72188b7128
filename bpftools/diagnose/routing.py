"""`ip route get` semantics on a recorded namespace: policy rules, longest-prefix match,
source address selection, and the reverse-path check the kernel does on input
(`fib_validate_source`: rp_filter, accept_local, martian local sources). Both families:
the rules and routes of the destination's family; IPv6 has no reverse-path check."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Optional, Tuple

from ..facts.rtnl import FAILURE_ROUTE_TYPES as FAILURE_TYPES
from .state import RT_TABLE_DEFAULT, RT_TABLE_LOCAL, RT_TABLE_MAIN, Link, NetnsState, Route, Rule, family_of


def _in(address: str, prefix: Optional[str], length: int) -> bool:
    if not length:
        return True
    if prefix is None:
        return False
    return ipaddress.ip_address(address) in ipaddress.ip_network(f"{prefix}/{length}", strict=False)


def _rule_matches(rule, dst: str, src: Optional[str], iif: str, oif: Optional[str]) -> bool:
    match = True
    if rule.src_len and (src is None or not _in(src, rule.src, rule.src_len)):
        match = False
    if rule.dst_len and not _in(dst, rule.dst, rule.dst_len):
        match = False
    if rule.iif and rule.iif != iif:
        match = False
    if rule.oif and rule.oif != oif:
        match = False
    if rule.fwmark:  # pings carry no mark
        match = False
    return match != rule.invert


def table_lookup(state: NetnsState, table: int, dst: str, oif: Optional[int] = None) -> Optional[Route]:
    addr = ipaddress.ip_address(dst)
    best = None
    for route in state.routes:
        if route.table != table or addr not in route.network:
            continue
        if oif is not None and route.oif not in (None, oif) and route.type not in FAILURE_TYPES:
            continue
        key = (route.dst_len, -route.priority)
        if best is None or key > best[0]:
            best = (key, route)
    return best[1] if best else None


@dataclass
class Lookup:
    route: Optional[Route]
    rule_priority: Optional[int] = None
    rule: Optional[Rule] = None          # the policy rule that chose the route (or refused itself)
    query: Tuple[str, Optional[str], str] = ("", None, "lo")   # (dst, src, iif) asked

    @property
    def ok(self) -> bool:
        return self.route is not None and self.route.type not in FAILURE_TYPES + ("throw",)

    @property
    def type(self) -> str:
        return self.route.type if self.route else "none"

    @property
    def refused_by_rule(self) -> bool:
        """The policy rule's own action (blackhole/unreachable/prohibit) refused, not a route."""
        return self.rule is not None and self.rule.action in FAILURE_TYPES


def fib_lookup(state: NetnsState, dst: str, src: Optional[str] = None, iif: str = "lo",
               oif: Optional[int] = None) -> Lookup:
    """The route the kernel picks for dst (policy rules in priority order, then each table)."""
    oif_name = state.ifname(oif) if oif is not None else None
    query = (dst, src, iif)
    family = family_of(dst)
    for rule in sorted(state.rules_of(family), key=lambda r: r.priority):
        if not _rule_matches(rule, dst, src, iif, oif_name):
            continue
        if rule.action in FAILURE_TYPES:
            return Lookup(Route(dst=dst, dst_len=32 if family == 4 else 128, table=0, type=rule.action),
                          rule.priority, rule, query)
        if rule.action != "to_tbl":
            continue
        route = table_lookup(state, rule.table, dst, oif)
        if route is None or route.type == "throw":
            continue
        return Lookup(route, rule.priority, rule, query)
    return Lookup(None, query=query)


TABLE_NAMES = {RT_TABLE_LOCAL: "local", RT_TABLE_MAIN: "main", RT_TABLE_DEFAULT: "default"}
DEFAULT_RULES = {(0, RT_TABLE_LOCAL), (32766, RT_TABLE_MAIN), (32767, RT_TABLE_DEFAULT)}


def table_name(table: int) -> str:
    return TABLE_NAMES.get(table, str(table))


def rule_text(rule: Rule) -> str:
    """A policy rule as `ip rule` prints it: `1000: from 10.0.0.0/8 lookup 100`."""
    words = [f"{rule.priority}:"] + (["not"] if rule.invert else [])
    words += ["from", f"{rule.src}/{rule.src_len}" if rule.src_len else "all"]
    if rule.dst_len:
        words += ["to", f"{rule.dst}/{rule.dst_len}"]
    if rule.fwmark:
        words += ["fwmark", hex(rule.fwmark)]
    words += (["iif", rule.iif] if rule.iif else []) + (["oif", rule.oif] if rule.oif else [])
    words += ["lookup", table_name(rule.table)] if rule.action == "to_tbl" else [rule.action]
    return " ".join(words)


def describe_refusal(lookup: Lookup) -> str:
    """What refused the packet, as what it is: `route type blackhole 10.0.0.0/8 in table 100
    chosen by rule 1000: from 10.0.0.0/8 lookup 100`, or `rule 900: from all to 10.1.0.1 prohibit`."""
    route, rule = lookup.route, lookup.rule
    if route is None:
        return "no route"
    if lookup.refused_by_rule:
        return f"rule {rule_text(rule)} (a {rule.action} rule: no table is consulted)"
    text = f"route type {route.type} {route.dst}/{route.dst_len} in table {table_name(route.table)}"
    if rule is not None and (rule.priority, rule.table) not in DEFAULT_RULES:
        text += f" chosen by rule {rule_text(rule)}"
    return text


def without_refusal(state: NetnsState, lookup: Lookup) -> Lookup:
    """The same lookup once the refusing route or rule is removed (is deleting it enough?)."""
    if lookup.refused_by_rule:
        changed = replace(state, rules=[r for r in state.rules if r is not lookup.rule])
    else:
        changed = replace(state, routes=[r for r in state.routes if r is not lookup.route])
    dst, src, iif = lookup.query
    return fib_lookup(changed, dst, src, iif)


def select_source(state: NetnsState, route: Route, dst: str) -> Optional[str]:
    """The source address an unbound socket gets for this route (prefsrc, else the oif's)."""
    if route.prefsrc:
        return route.prefsrc
    if family_of(dst) == 6:
        return _select_source6(state, route, dst)
    target = ipaddress.ip_address(route.gateway or dst)
    on_dev = [a for a in state.addrs_on(route.oif or -1, 4) if not a.address.startswith("127.")]
    for addr in on_dev:
        if target in addr.network:
            return addr.address
    if on_dev:
        return on_dev[0].address
    others = [a for a in state.addrs_of(4) if not a.address.startswith("127.")]
    return others[0].address if others else None


def _select_source6(state: NetnsState, route: Route, dst: str) -> Optional[str]:
    """RFC 6724, the rules that matter here: same scope as dst (link-local for a link-local
    destination), usable (DAD finished), on the outgoing interface first, longest common prefix."""
    target = ipaddress.ip_address(dst)
    want_link_local = target.is_link_local
    usable = [a for a in state.addrs_of(6) if a.usable and a.address != "::1"
              and ipaddress.ip_address(a.address).is_link_local == want_link_local]

    def rank(a):
        common = int(target) ^ int(ipaddress.ip_address(a.address))
        return (a.ifindex != route.oif, common.bit_length())

    on_dev = [a for a in usable if a.ifindex == route.oif]
    if want_link_local:
        usable = on_dev
    best = sorted(usable, key=rank)
    return best[0].address if best else None


def route_get(state: NetnsState, dst: str, src: Optional[str] = None, oif: Optional[int] = None) -> Lookup:
    """Output route for a locally generated packet (two passes, as a socket does). `oif`: a socket
    bound to that device (SO_BINDTODEVICE) or a link-local destination's %scope: only routes
    through it; with none, the kernel assumes the destination is on-link there (table 0 marks
    that assumption)."""
    first = fib_lookup(state, dst, src, oif=oif)
    if not first.ok and oif is not None:
        return Lookup(Route(dst=dst, dst_len=32 if family_of(dst) == 4 else 128, table=0, oif=oif, scope=253))
    if not first.ok or src is not None:
        return first
    chosen = select_source(state, first.route, dst) if first.route.type == "unicast" else dst
    again = fib_lookup(state, dst, chosen, oif=oif)
    return again if again.ok else first


@dataclass
class SourceCheck:
    ok: bool
    problem: str = ""              # "", "local_source", "rp_filter", "no_return_route"
    detail: str = ""
    rp_filter: int = 0
    reverse: Optional[Route] = None


def validate_source(state: NetnsState, src: str, dst: str, iif: Link) -> SourceCheck:
    """What `fib_validate_source` says about a packet from src to dst arriving on iif."""
    if family_of(src) == 6:  # ip6_rcv_core checks no reverse path and accepts local sources
        return SourceCheck(True, detail="IPv6 has no rp_filter")
    rpf = state.rp_filter(iif.ifname)
    accept_local = state.accept_local(iif.ifname)
    is_local = state.owns(src) is not None
    if rpf == 0:
        if is_local and not accept_local:
            return SourceCheck(False, "local_source", f"source {src} is an address of this namespace "
                               "(martian source; accept_local = 0)", rpf)
        return SourceCheck(True, detail="rp_filter = 0", rp_filter=rpf)
    back = fib_lookup(state, src, dst, "lo")
    if back.route is None or back.route.type in FAILURE_TYPES:
        return SourceCheck(False, "no_return_route", f"rp_filter = {rpf} and there is no route back to {src}",
                           rpf, back.route)
    if back.route.type == "local" and not accept_local:
        return SourceCheck(False, "local_source", f"source {src} is an address of this namespace "
                           "(martian source; accept_local = 0)", rpf, back.route)
    if back.route.type not in ("unicast", "local"):
        return SourceCheck(False, "rp_filter", f"the route back to {src} is {back.route.type}", rpf, back.route)
    if back.route.oif == iif.ifindex:
        return SourceCheck(True, detail=f"rp_filter = {rpf}: the route back to {src} leaves by {iif.ifname}",
                           rp_filter=rpf, reverse=back.route)
    back_dev = state.ifname(back.route.oif) or "?"
    if rpf == 1:
        return SourceCheck(False, "rp_filter", f"rp_filter = 1 (strict): packets from {src} arrive on "
                           f"{iif.ifname} but the route back to {src} leaves by {back_dev}", rpf, back.route)
    return SourceCheck(True, detail=f"rp_filter = {rpf} (loose): a route back to {src} exists (via {back_dev})",
                       rp_filter=rpf, reverse=back.route)
