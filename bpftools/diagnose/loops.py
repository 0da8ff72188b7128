"""Routing loops: the walk comes back to a namespace it already passed for the same destination.
The cause names the namespaces of the loop and the route in each that sends the packet on; its
candidate fixes are, for each namespace of the loop, a route to the destination through a
neighbour that owns it or routes it elsewhere than round the loop (suggest.py); the prover keeps
the first that repairs the path. The live evidence is the packet's TTL (hop limit) running out:
the kernel drops it in ip_forward and sends ICMP time exceeded to the source."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List

from ..commands import Argv, Command, argv_of, in_ns
from .checks import CERTAIN, Finding, route_fix
from .state import Link, NetnsState, Route


@dataclass
class Pass:
    """One namespace the packet went through: the route it took there and the interface it left by."""
    netns: str
    route: Route
    oif: Link


def route_text(state: NetnsState, route: Route) -> str:
    via = f" via {route.gateway}" if route.gateway else ""
    return f"{route.dst}/{route.dst_len}{via} dev {state.ifname(route.oif)}"


def loop_finding(passes: List[Pass], back_in: str, dst: str, snap, suggest: Callable, direction: str,
                 home: str) -> Finding:
    """The walk arrived in `back_in` again: the passes since its first visit are the loop."""
    start = next(i for i, p in enumerate(passes) if p.netns == back_in)
    loop = passes[start:]
    routes = "; ".join(f"{p.netns}: {route_text(snap.ns(p.netns), p.route)}" for p in loop)
    names = " -> ".join([p.netns for p in loop] + [back_in])
    candidates = _candidates(loop, dst, suggest, home)
    where = candidates[0][0].netns or home if candidates else loop[-1].netns
    fix_dev = next((c[0].argv[c[0].argv.index("dev") + 1] for c in candidates[:1] if "dev" in c[0].argv), None)
    detail = (f"routing loop for {dst}: {names} (the routes: {routes}); the packet goes round until its TTL "
              "(IPv6: hop limit) runs out, and a router drops it with ICMP time exceeded to the source")
    return Finding(where, "route", False, detail, "routing_loop", fix_dev or loop[-1].oif.ifname,
                   candidates[0] if candidates else [], CERTAIN, direction, alternatives=candidates[1:])


def _candidates(loop: List[Pass], dst: str, suggest: Callable, home: str) -> List[List[Command]]:
    """Per namespace of the loop, routes to dst that leave the loop, direct ones (to the owner)
    first: the looping route itself corrected (unless it is a default route, which carries more
    than this destination), else a host route beside it."""
    found = []
    for p in loop:
        for suggestion in suggest(p.netns, dst):
            if suggestion.dev == p.oif.ifname and suggestion.gateway == p.route.gateway:
                continue   # the route that loops
            fixes = [route_fix(suggestion, dst, replace=p.route)]
            if 0 < p.route.dst_len < (32 if p.route.family == 4 else 128):
                fixes.insert(0, corrected(p.route, suggestion))
            found += [(suggestion.gateway is not None, [in_ns(p.netns, argv, home) for argv in fix]) for fix in fixes]
    return [fix for _, fix in sorted(found, key=lambda f: f[0]) if fix]


def corrected(route: Route, suggestion) -> List[Argv]:
    """`ip route replace` of the looping route's own prefix, towards the suggested neighbour."""
    target = argv_of("via {} dev {}", suggestion.gateway, suggestion.dev) if suggestion.gateway else \
        argv_of("dev {}", suggestion.dev)
    table = argv_of("table {}", route.table) if route.table != 254 else ()
    return [argv_of("ip route replace {}/{}", route.dst, route.dst_len) + target
            + (("onlink",) if suggestion.onlink else ()) + table]
