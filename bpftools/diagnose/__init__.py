"""`bpftools diagnose ping`: say why a ping fails, and how to fix it.

static walk (walk.py, checks.py on a Snapshot of namespace state) -> live pings with drop
tracing and per-hop counters (live.py) -> verdict (verdict.py)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

from ..errors import BpftoolsError
from .capture import Known, LiveSource, current_label
from .live import LiveResult, default_tracer, has_tunnels, relevant_drops, run_live, tunnel_ports_of
from .prove import Prover
from .records import Cause, Drop, Hop, HopCounts, Result
from .state import Snapshot
from .verdict import EXIT_ERROR, Prove, claimable, exit_status, story, unexplained, verdict
from .walk import ECHO_TYPES, Walker, WalkResult

__all__ = ["diagnose_ping", "exit_status", "story", "Result", "Cause", "UsageProblem"]

_DEFAULT = object()


class UsageProblem(BpftoolsError):
    """Bad input or an environment we cannot diagnose in: exit status 3."""

    exit_code = EXIT_ERROR


def parse_target(target: str) -> Tuple[str, Optional[str]]:
    """(address, scope interface) of what `ping` takes: an IPv4 or IPv6 address, `fe80::1%eth0`."""
    text, _, scope = target.partition("%")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise UsageProblem(f"{target!r} is not an IPv4 or IPv6 address (diagnose ping takes an address)") from None
    if scope and address.version != 6:
        raise UsageProblem(f"{target!r}: only IPv6 addresses take a %interface scope")
    if address.version == 6 and address.is_link_local and not scope:
        raise UsageProblem(f"{target!r} is link-local: name the interface, as ping needs it ({text}%eth0)")
    return str(address), scope or None


def static_walk(src_ns: str, target: str, payload: int = 56, home: Optional[str] = None,
                snapshot: Optional[Snapshot] = None, binding: Optional["Binding"] = None):
    """Walk the path on a snapshot (default: the live namespaces, captured as the walk needs them)."""
    home = home or current_label()
    snapshot = snapshot if snapshot is not None else Snapshot(source=LiveSource())
    binding = binding or Binding()
    address, scope = parse_target(target)
    return Walker(snapshot, payload, home=home).walk(src_ns, address, binding.source, binding.device, scope)


@dataclass
class Binding:
    """ping's -I: a device (SO_BINDTODEVICE) and/or a source address."""
    device: Optional[str] = None
    source: Optional[str] = None

    def ping_args(self) -> List[str]:
        return [arg for value in (self.device, self.source) if value for arg in ("-I", value)]


def binding_for(snapshot: Snapshot, src_ns: str, interface: Optional[str], source: Optional[str],
                family: int = 4) -> Binding:
    """`-I IFACE|ADDR` and `--source ADDR`, checked against the source namespace as ping checks them
    (a source address of the target's family)."""
    state = snapshot.ns(src_ns)
    device = None
    if interface:
        if _family(interface):
            source = source or interface
            if source != interface:
                raise UsageProblem(f"-I {interface} and --source {source} name two different source addresses")
        elif state.link_by_name(interface) is None:
            raise UsageProblem(f"-I {interface}: no such interface in {src_ns} (ping: SO_BINDTODEVICE: No such "
                               "device)")
        else:
            device = interface
    if source:
        if _family(source) != family:
            raise UsageProblem(f"--source {source!r} is not an IPv{family} address (the target's family)")
        owner = state.owns(source)
        if owner is None:
            raise UsageProblem(f"--source {source} is not an address of {src_ns} (ping: bind: Cannot assign "
                               "requested address)")
        if not owner.usable:   # IPv6 duplicate address detection: running, or it found the address in use
            why = "failed duplicate address detection (another host has it)" if owner.dadfailed else \
                "still tentative (duplicate address detection has not finished)"
            raise UsageProblem(f"--source {source} {why}: ping cannot bind it (bind: Cannot assign requested "
                               "address)")
    return Binding(device, source)


def _family(text: str) -> Optional[int]:
    """4 or 6 for an address, None for anything else (an interface name)."""
    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return None


def recording(snapshot: Snapshot, src_ns: str, target: str, home: str, payload: int = 56,
              binding: Optional[Binding] = None) -> dict:
    """What the walk saw, replayable with `replay()` (unit tests, bug reports)."""
    binding = binding or Binding()
    return {"home": home, "netns": src_ns, "target": target, "payload": payload, "device": binding.device,
            "source": binding.source, "namespaces": snapshot.to_dict()}


def replay(data: dict):
    """The static walk over a recording."""
    return static_walk(data["netns"], data["target"], data.get("payload", 56), data.get("home", "host"),
                       Snapshot.from_dict(data["namespaces"]), Binding(data.get("device"), data.get("source")))


def prover_for(data: dict) -> Prover:
    """The prover of a recording (`recording()`): fixes proven on the namespaces it holds."""
    address, scope = parse_target(data["target"])
    return Prover(Snapshot.from_dict(data["namespaces"]), data["netns"], address, data.get("source"),
                  data.get("device"), scope, data.get("payload", 56), data.get("home", "host"))


def diagnose_ping(target: str, netns: Optional[str] = None, count: int = 3, timeout: float = 2.0,
                  payload: int = 56, tracer=_DEFAULT, record: Optional[str] = None,
                  interface: Optional[str] = None, source: Optional[str] = None) -> Result:
    """Why a ping from `netns` to `target` fails (or that it works): story(result) tells it,
    result.to_json() is `diagnose ping --json`."""
    address, scope = parse_target(target)
    family = ipaddress.ip_address(address).version
    if count < 1 or count > 100:
        raise UsageProblem("--count must be between 1 and 100")
    if timeout <= 0 or timeout > 60:
        raise UsageProblem("--timeout must be between 0 and 60 seconds")
    try:
        home = current_label()
        src_ns = Known().netns(netns).label if netns else home  # any selector; paths show its label
        before = Snapshot(source=LiveSource())
        binding = binding_for(before, src_ns, interface, source, family)
        if scope and before.ns(src_ns).link_by_name(scope) is None:
            raise UsageProblem(f"{target}: no interface {scope} in {src_ns} (ping: unknown scope)")
        first = static_walk(src_ns, target, payload, home, before, binding)
    except BpftoolsError as exc:
        raise UsageProblem(str(exc)) from None
    namespaces = first.namespaces or [src_ns]
    on_path = [before.ns(ns) for ns in namespaces if before.has(ns)]
    stuck = cannot_leave(first, src_ns)
    if stuck:   # no echo request can leave: nothing to trace or count, the ping alone confirms it
        live = run_live(src_ns, target, count, timeout, payload, namespaces, None, src=None,
                        ping_args=binding.ping_args(), dst=address)
        live.notes = [stuck]
    else:
        live = run_live(src_ns, target, count, timeout, payload, namespaces,
                        default_tracer() if tracer is _DEFAULT else tracer, src=first.src,
                        ping_args=binding.ping_args() + (["-b"] if first.broadcast else []),
                        local=first.left_machine is None, dst=address,
                        tunnel_ports=tunnel_ports_of(on_path), open_tunnels=has_tunnels(on_path))
    # Walk again: the pings leave evidence (ARP entries) in the namespaces' state.
    snapshot = Snapshot(source=LiveSource())
    walk = static_walk(src_ns, target, payload, home, snapshot, binding)
    drops = relevant_drops(live.drops, walk.src or first.src, address)
    prover = Prover(snapshot, src_ns, address, binding.source, binding.device, scope, payload, home)
    result = conclude(target, src_ns, walk, live, drops, snapshot, prover, binding.device)
    if record:   # after proving: the namespaces the proofs walked into are recorded too
        import json

        with open(record, "w") as f:
            json.dump(recording(snapshot, src_ns, target, home, payload, binding), f, indent=1, sort_keys=True)
    return result


def conclude(target: str, src_ns: str, walk: WalkResult, live: LiveResult, drops: List[Drop], snapshot: Snapshot,
             prove: Optional[Prove] = None, device: Optional[str] = None) -> Result:
    """The Result of the live pings over the walked path: the verdict, each hop with its counts,
    the causes at hops the counted packets never reached set aside, the namespaces' inodes."""
    result = verdict(target, src_ns, walk, live.sent, live.received, drops, prove)
    path = [replace(hop, packets=hop_counts(hop, live, snapshot, walk.family)) for hop in result.path]
    causes = result.causes and (claimable(result.causes, path) or [unexplained(path, src_ns)])
    return replace(result, path=path, causes=causes, device=device, notes=list(live.notes),
                   inodes=inodes_of(snapshot))


def inodes_of(snapshot: Snapshot) -> Dict[str, int]:
    """Every captured namespace's nsfs inode: the JSON's `netns_inode` beside its label."""
    return {label: snapshot.ns(label).inode for label in snapshot.names()}


def cannot_leave(walk, src_ns: str) -> Optional[str]:
    """Why no echo request can leave the source namespace (its own route lookup fails), or None."""
    hops = walk.hops
    if hops and hops[0].netns == src_ns and hops[0].action == "broken" and hops[0].oif is None \
            and hops[0].direction == "request":
        return f"no echo request can leave {src_ns} ({hops[0].note}): the pings ran without tracing or counting"
    return None


def hop_counts(hop: Hop, live: LiveResult, snapshot: Snapshot, family: int = 4) -> HopCounts:
    """The ping's echo packets seen entering and leaving the hop (per-hop ICMP counting), else
    every frame its interfaces counted (interface statistics)."""
    if live.hop_counts is None:
        counters = live.counters.get(hop.netns, {})
        return HopCounts(counters.get(hop.iif, {}).get("rx") if hop.iif else None,
                         counters.get(hop.oif, {}).get("tx") if hop.oif else None, "frames")
    icmp = ECHO_TYPES[family][hop.direction]
    state = snapshot.ns(hop.netns)
    links = {link.ifname: link.ifindex for link in state.links}

    def seen(ifname: Optional[str], way: str) -> Optional[int]:
        if not ifname or ifname not in links:
            return None
        return live.hop_counts.get((hop.netns, links[ifname], way, icmp), 0)

    # a bridge hop that ends in the bridge device itself hands the frame up its stack: nothing
    # is transmitted there to count (the next hop counts it received on the bridge device)
    up_the_stack = hop.action == "bridge" and getattr(state.link_by_name(hop.oif or ""), "kind", "") == "bridge"
    return HopCounts(seen(hop.iif, "rx"), None if up_the_stack else seen(hop.oif, "tx"), "echo")
