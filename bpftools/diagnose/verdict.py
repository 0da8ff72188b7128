"""From checks and drop events to the verdict: causes ranked by confidence, each with its
evidence and fix commands (records.Cause), the Result of `diagnose ping`, and its short story."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

from ..drop_causes import DROP_CAUSES, DropCause, drop_cause, reason_name
from ..commands import HOST_LABEL, Command, in_ns, rendered
from .checks import CERTAIN, LIKELY, Finding
from .tunnel import leaving_lines
from .records import Cause, Drop, Hop, Ranking, Result
from .walk import WalkResult

# What a drop reason means (cause, what it confirms, fix) is drop_causes.DROP_CAUSES, shared with
# trace-drops' hints. Drop locations without a telling reason support these causes found by the checks:
SUPPORTS_AT = {"__dev_forward_skb": ("mtu", "link_down"), "br_dev_queue_push_xmit": ("mtu",),
               # IP_INHDR where a router forwards: the TTL (hop limit) ran out, as round a routing loop
               "ip_forward": ("routing_loop",), "ip6_forward": ("routing_loop",)}
EXIT_REACHABLE, EXIT_CAUSE, EXIT_UNKNOWN, EXIT_ERROR = 0, 1, 2, 3
Prove = Callable[[List[Cause]], None]


def drop_reason(drop: Drop) -> str:
    return reason_name(drop.reason)


def _check_text(f: Finding) -> str:
    return f"check {f.check} ({f.direction}): {f.detail}"


def _cause(name, netns, ifname, detail, evidence, fix: List[Command], confidence, order, direction=None,
           symptom=False, alternatives: Sequence[List[Command]] = (), missing: str = "") -> Cause:
    """A cause whose fix is, until prove.Prover proves one, the first of its candidates."""
    return Cause(name, netns, ifname, detail, list(evidence), list(fix), confidence=confidence, direction=direction,
                 missing=missing,
                 ranking=Ranking(order, confidence >= CERTAIN, symptom, [list(fix), *map(list, alternatives)]))


def build_causes(findings: List[Finding], drops: List[Drop], prove: Optional[Prove] = None) -> List[Cause]:
    """Failed checks become causes (one per cause, namespace and interface); drop events add
    evidence to the cause they confirm, or become causes of their own (XDP/TC drops, unexplained
    drops). The first is the most likely; the others ("also") only when independently confirmed:
    the configuration alone breaks the ping there, or a traced drop says so."""
    causes: List[Cause] = []
    index: Dict[tuple, Cause] = {}
    for order, f in enumerate(x for x in findings if not x.ok and x.cause):
        key = (f.cause, f.netns, f.ifname or f.detail)
        same = next((c for c in causes if (c.cause, c.netns) == (f.cause, f.netns)
                     and (f.fix and rendered(c.fix) == rendered(f.fix) or f.ifname and c.ifname == f.ifname)), None)
        if same is not None:
            same.add_evidence(_check_text(f))
            continue
        index[key] = _cause(f.cause, f.netns, f.ifname, f.detail, [_check_text(f)], f.fix, f.confidence, order,
                            f.direction, f.symptom, f.alternatives, f.missing)
        causes.append(index[key])
    programs = {(f.netns, f.ifname): f for f in findings if f.ok and f.cause in ("xdp_drop", "tc_drop")}
    for drop in drops:
        _add_drop(drop, causes, index, programs)
    if not causes:  # nothing else explains it: the programs on the path are the suspects
        for order, f in enumerate(programs.values()):
            causes.append(_cause(f.cause, f.netns, f.ifname, f"{f.detail}; nothing else on the path explains the "
                                 "failure", [_check_text(f)], f.fix, f.confidence, order))
    causes.sort(key=lambda c: (-c.confidence, c.ranking.order))
    # A failed ARP/NDP entry (and NEIGH_FAILED drops) is what the first cause looks like from the
    # sender when that cause stops address resolution: not a second fault.
    causes = causes[:1] + [c for c in causes[1:] if c.ranking.confirmed and not c.ranking.symptom]
    if prove is not None:   # before printing, every fix is applied to the model (prove.py)
        prove(causes)
    for c in causes:
        c.confidence = round(c.confidence, 2)
    return causes


def _add_drop(drop: Drop, causes: List[Cause], index: Dict[tuple, Cause], programs: Dict[tuple, Finding]) -> None:
    entry = drop_entry(drop, programs)
    name = entry.cause if entry else None
    location = str(drop.location or "")
    kin = entry.confirms if entry else ()
    kin = kin or next((v for k, v in SUPPORTS_AT.items() if location.startswith(k)), ())
    matched = [c for c in causes if c.cause in kin and c.netns == drop.netns] or [c for c in causes if c.cause in kin]
    text = _drop_text(drop)
    if matched:
        matched[0].add_evidence(text)
        matched[0].ranking.confirmed = True
        matched[0].confidence = min(0.99, matched[0].confidence + 0.05)
        return
    if name is None:
        return
    key = (name, drop.netns, drop.ifname)
    if key in index:
        index[key].add_evidence(text)
        return
    detail = f"the kernel dropped the ping with reason {drop_reason(drop)} in {drop.netns}" \
        + (f" on {drop.ifname}" if drop.ifname else "") + (f" at {location}" if location else "") \
        + f": {entry.summary}"
    program = programs.get((drop.netns, drop.ifname))
    if program is not None:
        detail += f" ({program.detail})"
    index[key] = _cause(name, drop.netns, drop.ifname, detail, [text], drop_fix(entry, drop), LIKELY + 0.1,
                        10_000 + len(causes), symptom=name == "neighbor_unreachable")
    index[key].ranking.confirmed = True   # the kernel said so
    causes.append(index[key])


def drop_entry(drop: Drop, programs: Dict[tuple, Finding]) -> Optional[DropCause]:
    """The drop reason's entry; XDP drops on veth/generic XDP carry no specific reason, so a drop
    at an XDP location, or on an interface with an XDP program, counts as the XDP entry."""
    entry = drop_cause(drop_reason(drop))
    if entry is None or entry.cause is None:
        program = programs.get((drop.netns, drop.ifname))
        if "xdp" in str(drop.location or "") or (program is not None and program.cause == "xdp_drop"):
            return DROP_CAUSES["XDP"]
    return entry


def cause_for_drop(drop: Drop) -> Optional[str]:
    entry = drop_cause(drop_reason(drop))
    return entry.cause if entry else None


def drop_fix(entry: DropCause, drop: Drop) -> List[Command]:
    """The entry's fix commands, run in the drop's namespace."""
    return [in_ns(drop.netns or HOST_LABEL, cmd) for cmd in entry.fix(drop.event(), {})]


def _drop_text(drop: Drop) -> str:
    where = (drop.netns or "?") + (f" {drop.ifname}" if drop.ifname else "")
    count = f" x{drop.count}" if drop.count != 1 else ""
    loc = f" at {drop.location}" if drop.location else ""
    tunnel = f": {drop.tunnel_flow()}" if drop.encap else ""   # outer and inner flow
    return f"drop {drop_reason(drop)} in {where}{loc}{count}{tunnel}"


def verdict(target: str, netns: str, walk: WalkResult, sent: int, received: int, drops: List[Drop],
            prove: Optional[Prove] = None) -> Result:
    """`prove`: checks every fix on the model before it is printed (prove.Prover)."""
    reachable = received > 0
    causes: List[Cause] = []
    if not reachable:
        causes = build_causes(walk.findings, drops, prove)
        if not causes:
            evidence = [_drop_text(d) for d in drops] or ["every check on the path passed and no drop was traced"]
            if walk.handed_to:
                evidence.append(f"the requests went to {walk.handed_to}; nothing came back from it")
            elif walk.left_machine:
                evidence.append(f"the path leaves the machine through {walk.left_machine}: the problem may be "
                                "beyond it")
            causes = [_unknown(netns, "the ping fails but no check on the path explains it", evidence)]
    return Result(target, netns, reachable, sent, received, walk.src, list(walk.hops), causes, list(drops),
                  list(walk.findings), family=walk.family)


def _unknown(netns: str, detail: str, evidence: List[str]) -> Cause:
    return Cause("unknown", netns, None, detail, evidence, confidence=0.0)


def unexplained(path: List[Hop], netns: str) -> Cause:
    """When every cause the checks found sits where the ping's packets were counted never to arrive."""
    stops = where_it_stops(path)
    return _unknown(netns, "the ping fails, and the failed checks are all at hops its packets never reached",
                    [f"counted: {stops}"] if stops else [])


def exit_status(result: Result) -> int:
    if result.reachable:
        return EXIT_REACHABLE
    return EXIT_UNKNOWN if not result.causes or result.causes[0].cause == "unknown" else EXIT_CAUSE


def _count(hop: Hop, side: str) -> str:
    n = getattr(hop.packets, side) if hop.packets is not None else None
    return f" [{side} {n}]" if n is not None else ""


def _hop_text(hop: Hop) -> str:
    iif = f"{hop.iif}{_count(hop, 'rx')}" if hop.iif else None
    oif = f"{hop.oif}{_count(hop, 'tx')}" if hop.oif else None
    inner = " -> ".join(x for x in (iif, oif) if x)
    if hop.action == "deliver":
        return f"{hop.netns} ({iif or 'local'}: {hop.dst} is local)"
    if hop.action == "decap":
        what = f"{hop.outer.describe()} decapsulated" if hop.outer is not None else "decapsulated"
        return f"{hop.netns} ({iif}: {what})"
    if hop.action == "tunnel":   # the outer packet is what the underlay carries: show it
        what = f"encapsulated as {hop.outer.describe()}" if hop.outer is not None else hop.note
        return f"{hop.netns} ({inner}: {what})"
    if hop.action == "bridge":
        return f"{hop.netns} ({iif} -> bridge -> {oif})"
    text = f"{hop.netns} ({inner})" if inner else hop.netns
    if hop.action in ("broken", "leave") and hop.note:
        text += f" [{hop.note}]"
    return text


def _echo_counted(hop: Hop) -> bool:
    return hop.packets is not None and hop.packets.unit == "echo"


def where_it_stops(path: List[Hop]) -> Optional[str]:
    """From the per-hop counts: where the ping's packets stop (None when they do not, or unknown).
    A tunnel's underlay hops count the ping's echoes inside the outer packets: the tunnel hop's
    count goes on as the underlay's, and the decap hop's as what its device should let out."""
    for direction, what in (("request", "echo requests"), ("reply", "echo replies")):
        previous = None
        for hop in (h for h in path if h.direction == direction):
            if not _echo_counted(hop):
                if _outer(hop):
                    continue   # an underlay hop not counted: the tunnel's ends still tell
                return None
            inn, out = hop.packets.rx, hop.packets.tx
            if previous is not None and inn is not None and inn < previous[1]:
                return f"{what}: {_counted_past(*previous)}, {inn} arrived in {hop.netns} ({hop.iif})"
            if previous is not None and inn is None and out is not None and out < previous[1] and _outer(hop) \
                    and previous[0].action == "tunnel":
                return (f"{what}: {previous[1]} went into {previous[0].oif} in {previous[0].netns}, {out} left "
                        f"{hop.netns} ({hop.oif}) encapsulated")
            if inn is not None and out is not None and out < inn:
                return f"{what}: {inn} entered {hop.netns} on {hop.iif}, {out} left on {hop.oif}"
            if out is not None:
                previous = (hop, out)
            elif hop.action == "decap" and inn is not None:
                previous = (hop, inn)
            elif hop.action == "deliver":
                previous = None
    return None


def _counted_past(hop: Hop, count: int) -> str:
    if hop.action == "decap":
        return f"{count} arrived in {hop.netns} ({hop.iif}) encapsulated"
    return f"{count} left {hop.netns} ({hop.oif})"


def _evidence_line(evidence: str) -> str:
    return evidence.split(":", 1)[0] + " agrees" if evidence.startswith("check ") else evidence


def counted_cutoff(path: List[Hop]) -> Dict[str, int]:
    """Per direction, the last hop (index among that direction's hops) the echo packets were counted
    to reach or to stop at: the first hop they never arrived in is where they stop, and still a
    suspect (an XDP program or a veth MTU drops before the count); beyond it nothing is. Replies
    are never generated when no request arrived. Directions without per-hop echo counts: absent."""
    cutoff: Dict[str, int] = {}
    for direction in ("request", "reply"):
        hops = [h for h in path if h.direction == direction]
        if not hops or not all(_echo_counted(h) for h in hops):
            continue
        if direction == "reply" and cutoff.get("request") is not None and not _request_arrived(path):
            cutoff[direction] = -1
            continue
        for i, hop in enumerate(hops):
            if _outer(hop):
                continue
            if i > 0 and hop.packets.rx == 0:
                cutoff[direction] = i
                break
            if hop.packets.tx == 0:
                cutoff[direction] = i + 1
                break
    return cutoff


def _outer(hop: Hop) -> bool:
    """An underlay hop of a tunnel (the tunnel hop itself carries the ping as it was)."""
    return hop.outer is not None and hop.action != "tunnel"


def _request_arrived(path: List[Hop]) -> bool:
    delivered = [h for h in path if h.direction == "request" and h.action == "deliver"]
    return bool(delivered) and (delivered[-1].packets is None or delivered[-1].packets.rx != 0)


def claimable(causes: List[Cause], path: List[Hop]) -> List[Cause]:
    """The causes at hops the ping's packets were counted to reach (see counted_cutoff)."""
    cutoff = counted_cutoff(path)

    def reached(cause: Cause) -> bool:
        if cause.direction not in cutoff:
            return True
        hops = [h for h in path if h.direction == cause.direction]
        at = [i for i, h in enumerate(hops) if h.netns == cause.netns]
        # a tunnel's far node: the ARP/NDP that crosses the tunnel first reaches it, counted or not
        return not at or at[0] <= cutoff[cause.direction] or _outer(hops[at[0]])

    return [c for c in causes if reached(c)]


def _advice_lines(cause: Cause) -> List[str]:
    """Commands the model cannot apply: shown as advice, never as a proven fix."""
    if not cause.advice:
        return []
    return ["  advice (not proven: the model cannot apply it; check before running):"] + \
        [f"    {cmd}" for cmd in rendered(cause.advice)]


def _no_fix(cause: Cause) -> str:
    """Why no fix is printed: every candidate failed on the model, or there was none to try (and
    then, where the check knows, what a command would need)."""
    if any(e.startswith("not proven: ") for e in cause.evidence):
        return "no candidate repairs the path on the model (the evidence says where each leaves it broken)"
    return cause.missing or "bpftools knows no command that repairs it"


def story(result: Result) -> str:
    """The human output: the path, where it breaks, why, the fix."""
    lines = []
    for direction in ("request", "reply"):
        hops = [h for h in result.path if h.direction == direction]
        if hops:
            label = "echo request" if direction == "request" else "echo reply  "
            lines.append(f"{label}: " + " => ".join(_hop_text(h) for h in hops))
    for hop in result.path:
        if hop.action in ("send", "deliver", "program") and hop.note and not hop.note.endswith(" is local"):
            lines.append(f"  {hop.direction} in {hop.netns}: {hop.note}")
    lines.append(f"ping {result.target}" + (f" -I {result.device}" if result.device else "")
                 + f" from {result.netns}" + (f" ({result.source})" if result.source else "")
                 + f": {result.sent} sent, {result.received} received")
    if result.reachable:
        lines.append(f"{result.target} is reachable.")
        lines += [f"  note: {c.netns}: {c.detail}" for c in result.checks if not c.ok]
        return "\n".join(lines)
    stops = where_it_stops(result.path)
    if stops:
        lines.append(f"  counted: {stops}")
    lines += [f"  traced: {_drop_text(drop)}" for drop in result.drops]
    lines += leaving_lines(result.path)
    first = result.causes[0]
    if first.cause == "unknown":
        lines.append("the ping fails, and no check on the path explains why:")
        lines += [f"  {e}" for e in first.evidence]
        return "\n".join(lines)
    where = first.netns + (f", {first.ifname}" if first.ifname else "")
    lines.append(f"it breaks in {where}: {first.cause}")
    lines.append(f"  why: {first.detail}")
    shown = {_evidence_line(first.evidence[0])}
    for e in first.evidence[1:]:
        line = _evidence_line(e)
        if line not in shown:
            shown.add(line)
            lines.append(f"  evidence: {line}")
    if first.fix:
        lines.append("  fix:")
        lines += [f"    {cmd}" for cmd in rendered(first.fix)]
    elif not first.advice:
        lines.append(f"  no fix: {_no_fix(first)}")
    lines += _advice_lines(first)
    for other in result.causes[1:]:
        lines.append(f"also ({other.cause}, {other.netns}): {other.detail}")
        lines += [f"    {cmd}" for cmd in rendered(other.fix)] + _advice_lines(other)
    return "\n".join(lines)
