"""`bpftools diagnose ping`: say why a ping fails, and how to fix it.

static walk (walk.py, checks.py on a Snapshot of namespace state) -> live pings with drop
tracing and per-hop counters (live.py) -> verdict (verdict.py)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..errors import BpftoolsError
from .capture import Known, LiveSource, current_label
from .live import default_tracer, relevant_drops, run_live, tunnel_ports_of
from .prove import Prover
from .state import Snapshot
from .verdict import EXIT_ERROR, claimable, exit_status, story, unexplained, verdict
from .walk import ECHO_TYPES, Walker

__all__ = ["diagnose_ping", "exit_status", "story", "UsageProblem"]

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
                  interface: Optional[str] = None, source: Optional[str] = None) -> dict:
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
                        tunnel_ports=tunnel_ports_of(before.ns(ns) for ns in namespaces if before.has(ns)))
    # Walk again: the pings leave evidence (ARP entries) in the namespaces' state.
    snapshot = Snapshot(source=LiveSource())
    walk = static_walk(src_ns, target, payload, home, snapshot, binding)
    drops = relevant_drops(live.drops, walk.src or first.src, address)
    prover = Prover(snapshot, src_ns, address, binding.source, binding.device, scope, payload, home)
    result = verdict(target, src_ns, walk, live.sent, live.received, drops, prover)
    if record:   # after proving: the namespaces the proofs walked into are recorded too
        import json

        with open(record, "w") as f:
            json.dump(recording(snapshot, src_ns, target, home, payload, binding), f, indent=1, sort_keys=True)
    result["device"] = binding.device
    result["family"] = walk.family
    annotate_counts(result["path"], live, snapshot, walk.family)
    if result["causes"]:
        result["causes"] = claimable(result["causes"], result["path"]) or [unexplained(result, src_ns)]
    annotate_inodes(result, snapshot)
    result["notes"] = live.notes
    return result


def annotate_inodes(result: dict, snapshot: Snapshot) -> None:
    """Beside every namespace label in the JSON, `netns_inode`: the namespace's nsfs inode."""
    inodes = {label: snapshot.ns(label).inode for label in snapshot.names()}
    for item in [result] + result["path"] + result["causes"] + result["drops"] + result["checks"]:
        if item.get("netns") in inodes and item.get("netns_inode") is None:
            item["netns_inode"] = inodes[item["netns"]]


def cannot_leave(walk, src_ns: str) -> Optional[str]:
    """Why no echo request can leave the source namespace (its own route lookup fails), or None."""
    hops = walk.hops
    if hops and hops[0].netns == src_ns and hops[0].action == "broken" and hops[0].oif is None \
            and hops[0].direction == "request":
        return f"no echo request can leave {src_ns} ({hops[0].note}): the pings ran without tracing or counting"
    return None


def annotate_counts(path, live, snapshot: Snapshot, family: int = 4) -> None:
    """Each hop gets `packets`: {"in", "out"}: the ping's echo packets seen entering and leaving
    (per-hop ICMP counting), else every frame the interfaces counted (interface statistics)."""
    for hop in path:
        if live.hop_counts is not None:
            icmp = ECHO_TYPES[family][hop["direction"]]
            links = {l.ifname: l.ifindex for l in snapshot.ns(hop["netns"]).links}

            def seen(ifname, way):
                if not ifname or ifname not in links:
                    return None
                return live.hop_counts.get((hop["netns"], links[ifname], way, icmp), 0)

            hop["packets"] = {"in": seen(hop["iif"], "rx"), "out": seen(hop["oif"], "tx"), "unit": "echo"}
        else:
            counters = live.counters.get(hop["netns"], {})
            hop["packets"] = {"in": counters.get(hop["iif"], {}).get("rx") if hop["iif"] else None,
                              "out": counters.get(hop["oif"], {}).get("tx") if hop["oif"] else None,
                              "unit": "frames"}
