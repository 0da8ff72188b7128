"""From checks and drop events to the verdict: causes ranked by confidence, each with its
evidence and fix commands, the JSON object of `diagnose ping --json`, and the short story."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

from ..drop_causes import DROP_CAUSES, DropCause, drop_cause, event_from_json, reason_name
from ..commands import HOST_LABEL, Command, in_ns, rendered
from .checks import CERTAIN, LIKELY, Finding
from .tunnel import leaving_lines
from .walk import WalkResult

# What a drop reason means (cause, what it confirms, fix) is drop_causes.DROP_CAUSES, shared with
# trace-drops' hints. Drop locations without a telling reason support these causes found by the checks:
SUPPORTS_AT = {"__dev_forward_skb": ("mtu", "link_down"), "br_dev_queue_push_xmit": ("mtu",),
               # IP_INHDR where a router forwards: the TTL (hop limit) ran out, as round a routing loop
               "ip_forward": ("routing_loop",), "ip6_forward": ("routing_loop",)}
EXIT_REACHABLE, EXIT_CAUSE, EXIT_UNKNOWN, EXIT_ERROR = 0, 1, 2, 3


def drop_reason(event: dict) -> str:
    return reason_name(event.get("reason", ""))


def _check_text(f: Finding) -> str:
    return f"check {f.check} ({f.direction}): {f.detail}"


def _cause(name, netns, ifname, detail, evidence, fix: List[Command], confidence, order, direction=None,
           symptom=False, alternatives: Sequence[List[Command]] = ()) -> dict:
    """A cause as the JSON has it: `fix`, each command as a shell line (commands.render), and
    `fix_argv`, the same commands as data ({"netns": label or null, "argv": [...]}); `proven`
    once prove.Prover applied it to the model. `_candidates`: the fixes to try, the likeliest first."""
    return {"cause": name, "netns": netns, "ifname": ifname, "detail": detail, "evidence": list(evidence),
            "fix": rendered(fix), "fix_argv": [c.to_json() for c in fix], "proven": False, "advice": [],
            "advice_argv": [], "confidence": confidence, "direction": direction, "_order": order,
            "_confirmed": confidence >= CERTAIN, "_symptom": symptom, "_candidates": [fix, *alternatives]}


def build_causes(findings: List[Finding], drops: List[dict], prove: Optional[Callable[[List[dict]], None]] = None
                 ) -> List[dict]:
    """Failed checks become causes (one per cause, namespace and interface); drop events add
    evidence to the cause they confirm, or become causes of their own (XDP/TC drops, unexplained
    drops). The first is the most likely; the others ("also") only when independently confirmed:
    the configuration alone breaks the ping there, or a traced drop says so."""
    causes: List[dict] = []
    index: Dict[tuple, dict] = {}
    for order, f in enumerate(x for x in findings if not x.ok and x.cause):
        key = (f.cause, f.netns, f.ifname or f.detail)
        same = next((c for c in causes if (c["cause"], c["netns"]) == (f.cause, f.netns)
                     and (f.fix and c["fix"] == rendered(f.fix) or f.ifname and c["ifname"] == f.ifname)), None)
        if same is not None:
            _add_evidence(same, _check_text(f))
            continue
        index[key] = _cause(f.cause, f.netns, f.ifname, f.detail, [_check_text(f)], f.fix, f.confidence, order,
                            f.direction, f.symptom, f.alternatives)
        causes.append(index[key])
    programs = {(f.netns, f.ifname): f for f in findings if f.ok and f.cause in ("xdp_drop", "tc_drop")}
    for event in drops:
        _add_drop(event, causes, index, programs)
    if not causes:  # nothing else explains it: the programs on the path are the suspects
        for order, f in enumerate(programs.values()):
            causes.append(_cause(f.cause, f.netns, f.ifname, f"{f.detail}; nothing else on the path explains the "
                                 "failure", [_check_text(f)], f.fix, f.confidence, order))
    causes.sort(key=lambda c: (-c["confidence"], c["_order"]))
    # A failed ARP/NDP entry (and NEIGH_FAILED drops) is what the first cause looks like from the
    # sender when that cause stops address resolution: not a second fault.
    causes = causes[:1] + [c for c in causes[1:] if c["_confirmed"] and not c["_symptom"]]
    if prove is not None:   # before printing, every fix is applied to the model (prove.py)
        prove(causes)
    for c in causes:
        del c["_order"], c["_confirmed"], c["_symptom"]
        c.pop("_candidates", None)
        c["confidence"] = round(c["confidence"], 2)
    return causes


def _add_drop(event: dict, causes: List[dict], index: Dict[tuple, dict], programs: Dict[tuple, Finding]) -> None:
    entry = drop_entry(event, programs)
    name = entry.cause if entry else None
    location = str(event.get("location") or "")
    kin = entry.confirms if entry else ()
    kin = kin or next((v for k, v in SUPPORTS_AT.items() if location.startswith(k)), ())
    matched = [c for c in causes if c["cause"] in kin and c["netns"] == event.get("netns")] or \
              [c for c in causes if c["cause"] in kin]
    text = _event_text(event)
    if matched:
        _add_evidence(matched[0], text)
        matched[0]["_confirmed"] = True
        matched[0]["confidence"] = min(0.99, matched[0]["confidence"] + 0.05)
        return
    if name is None:
        return
    key = (name, event.get("netns"), event.get("ifname"))
    if key in index:
        _add_evidence(index[key], text)
        return
    detail = f"the kernel dropped the ping with reason {drop_reason(event)} in {event.get('netns')}" \
        + (f" on {event['ifname']}" if event.get("ifname") else "") + (f" at {location}" if location else "") \
        + f": {entry.summary}"
    program = programs.get((event.get("netns"), event.get("ifname")))
    if program is not None:
        detail += f" ({program.detail})"
    index[key] = _cause(name, event.get("netns"), event.get("ifname"), detail, [text], drop_fix(entry, event),
                        LIKELY + 0.1, 10_000 + len(causes), symptom=name == "neighbor_unreachable")
    index[key]["_confirmed"] = True   # the kernel said so
    causes.append(index[key])


def drop_entry(event: dict, programs: Dict[tuple, Finding]) -> Optional[DropCause]:
    """The drop reason's entry; XDP drops on veth/generic XDP carry no specific reason, so a drop
    at an XDP location, or on an interface with an XDP program, counts as the XDP entry."""
    entry = drop_cause(drop_reason(event))
    if entry is None or entry.cause is None:
        program = programs.get((event.get("netns"), event.get("ifname")))
        if "xdp" in str(event.get("location") or "") or (program is not None and program.cause == "xdp_drop"):
            return DROP_CAUSES["XDP"]
    return entry


def _add_evidence(cause: dict, text: str) -> None:
    if text not in cause["evidence"]:
        cause["evidence"].append(text)


def cause_for_drop(event: dict) -> Optional[str]:
    entry = drop_cause(drop_reason(event))
    return entry.cause if entry else None


def drop_fix(entry: DropCause, event: dict) -> List[Command]:
    """The entry's fix commands, run in the drop's namespace."""
    return [in_ns(event.get("netns") or HOST_LABEL, cmd) for cmd in entry.fix(event_from_json(event), {})]


def _event_text(event: dict) -> str:
    where = event.get("netns", "?") + (f" {event['ifname']}" if event.get("ifname") else "")
    count = f" x{event['count']}" if event.get("count", 1) != 1 else ""
    loc = f" at {event['location']}" if event.get("location") else ""
    return f"drop {drop_reason(event)} in {where}{loc}{count}"


def verdict(target: str, netns: str, walk: WalkResult, sent: int, received: int, drops: List[dict],
            prove: Optional[Callable[[List[dict]], None]] = None) -> dict:
    """`prove`: checks every fix on the model before it is printed (prove.Prover)."""
    reachable = received > 0
    causes: List[dict] = []
    if not reachable:
        causes = build_causes(walk.findings, drops, prove)
        if not causes:
            evidence = [_event_text(e) for e in drops] or ["every check on the path passed and no drop was traced"]
            if walk.handed_to:
                evidence.append(f"the requests went to {walk.handed_to}; nothing came back from it")
            elif walk.left_machine:
                evidence.append(f"the path leaves the machine through {walk.left_machine}: the problem may be "
                                "beyond it")
            causes = [_unknown(netns, "the ping fails but no check on the path explains it", evidence)]
    return {
        "target": target, "netns": netns, "reachable": reachable, "sent": sent, "received": received,
        "source": walk.src, "path": [h.to_dict() for h in walk.hops], "causes": causes, "drops": drops,
        "checks": [f.to_dict() for f in walk.findings],
    }


def _unknown(netns: str, detail: str, evidence: List[str]) -> dict:
    return {"cause": "unknown", "netns": netns, "ifname": None, "detail": detail, "evidence": evidence, "fix": [],
            "fix_argv": [], "proven": False, "advice": [], "advice_argv": [], "confidence": 0.0, "direction": None}


def unexplained(result: dict, netns: str) -> dict:
    """When every cause the checks found sits where the ping's packets were counted never to arrive."""
    stops = where_it_stops(result["path"])
    return _unknown(netns, "the ping fails, and the failed checks are all at hops its packets never reached",
                    [f"counted: {stops}"] if stops else [])


def exit_status(result: dict) -> int:
    if result["reachable"]:
        return EXIT_REACHABLE
    return EXIT_UNKNOWN if not result["causes"] or result["causes"][0]["cause"] == "unknown" else EXIT_CAUSE


def _count(hop: dict, side: str) -> str:
    n = (hop.get("packets") or {}).get(side)
    return f" [{'rx' if side == 'in' else 'tx'} {n}]" if n is not None else ""


def _hop_text(hop: dict) -> str:
    iif = f"{hop['iif']}{_count(hop, 'in')}" if hop["iif"] else None
    oif = f"{hop['oif']}{_count(hop, 'out')}" if hop["oif"] else None
    if hop["action"] == "deliver":
        return f"{hop['netns']} ({iif or 'local'}: {hop['dst']} is local)"
    if hop["action"] == "decap":
        return f"{hop['netns']} ({iif}: decapsulated)"
    if hop["action"] == "tunnel":
        return f"{hop['netns']} ({hop['oif']}: {hop['note']})"
    if hop["action"] == "bridge":
        return f"{hop['netns']} ({iif} -> bridge -> {oif})"
    inner = " -> ".join(x for x in (iif, oif) if x)
    text = f"{hop['netns']} ({inner})" if inner else hop["netns"]
    if hop["action"] in ("broken", "leave") and hop.get("note"):
        text += f" [{hop['note']}]"
    return text


def where_it_stops(path: List[dict]) -> Optional[str]:
    """From the per-hop counts: where the ping's packets stop (None when they do not, or unknown)."""
    for direction, what in (("request", "echo requests"), ("reply", "echo replies")):
        previous = None
        # the underlay hops of a tunnel carry the ping inside outer packets, which echo counts do not see
        for hop in (h for h in path if h["direction"] == direction and not _outer(h)):
            counts = hop.get("packets") or {}
            if counts.get("unit") != "echo":
                return None
            inn, out = counts.get("in"), counts.get("out")
            if previous is not None and inn is not None and inn < previous[1]:
                return (f"{what}: {previous[1]} left {previous[0]['netns']} ({previous[0]['oif']}), "
                        f"{inn} arrived in {hop['netns']} ({hop['iif']})")
            if inn is not None and out is not None and out < inn:
                return f"{what}: {inn} entered {hop['netns']} on {hop['iif']}, {out} left on {hop['oif']}"
            if out is not None:
                previous = (hop, out)
            elif hop["action"] == "deliver":
                previous = None
    return None


def _evidence_line(evidence: str) -> str:
    return evidence.split(":", 1)[0] + " agrees" if evidence.startswith("check ") else evidence


def counted_cutoff(path: List[dict]) -> Dict[str, int]:
    """Per direction, the last hop (index among that direction's hops) the echo packets were counted
    to reach or to stop at: the first hop they never arrived in is where they stop, and still a
    suspect (an XDP program or a veth MTU drops before the count); beyond it nothing is. Replies
    are never generated when no request arrived. Directions without per-hop echo counts: absent."""
    cutoff: Dict[str, int] = {}
    for direction in ("request", "reply"):
        hops = [h for h in path if h["direction"] == direction]
        if not hops or any((h.get("packets") or {}).get("unit") != "echo" for h in hops):
            continue
        if direction == "reply" and cutoff.get("request") is not None and not _request_arrived(path):
            cutoff[direction] = -1
            continue
        for i, hop in enumerate(hops):
            if _outer(hop):
                continue
            inn, out = hop["packets"].get("in"), hop["packets"].get("out")
            if i > 0 and inn == 0:
                cutoff[direction] = i
                break
            if out == 0:
                cutoff[direction] = i + 1
                break
    return cutoff


def _outer(hop: dict) -> bool:
    """An underlay hop of a tunnel (the tunnel hop itself carries the ping as it was)."""
    return bool(hop.get("outer")) and hop["action"] != "tunnel"


def _request_arrived(path: List[dict]) -> bool:
    delivered = [h for h in path if h["direction"] == "request" and h["action"] == "deliver"]
    return bool(delivered) and (delivered[-1].get("packets") or {}).get("in") != 0


def claimable(causes: List[dict], path: List[dict]) -> List[dict]:
    """The causes at hops the ping's packets were counted to reach (see counted_cutoff)."""
    cutoff = counted_cutoff(path)

    def reached(cause: dict) -> bool:
        direction = cause.get("direction")
        if direction not in cutoff:
            return True
        hops = [h for h in path if h["direction"] == direction]
        at = [i for i, h in enumerate(hops) if h["netns"] == cause["netns"]]
        # a tunnel's far node: the ARP/NDP that crosses the tunnel first reaches it, counted or not
        return not at or at[0] <= cutoff[direction] or _outer(hops[at[0]])

    return [c for c in causes if reached(c)]


def _advice_lines(cause: dict) -> List[str]:
    """Commands the model cannot apply: shown as advice, never as a proven fix."""
    if not cause.get("advice"):
        return []
    return ["  advice (not proven: the model cannot apply it; check before running):"] + \
        [f"    {cmd}" for cmd in cause["advice"]]


def story(result: dict) -> str:
    """The human output: the path, where it breaks, why, the fix."""
    lines = []
    for direction in ("request", "reply"):
        hops = [h for h in result["path"] if h["direction"] == direction]
        if hops:
            label = "echo request" if direction == "request" else "echo reply  "
            lines.append(f"{label}: " + " => ".join(_hop_text(h) for h in hops))
    for hop in result["path"]:
        if hop["action"] in ("send", "deliver", "program") and hop.get("note") and not hop["note"].endswith(" is local"):
            lines.append(f"  {hop['direction']} in {hop['netns']}: {hop['note']}")
    lines.append(f"ping {result['target']}" + (f" -I {result['device']}" if result.get("device") else "")
                 + f" from {result['netns']}"
                 + (f" ({result['source']})" if result.get("source") else "")
                 + f": {result['sent']} sent, {result['received']} received")
    if result["reachable"]:
        lines.append(f"{result['target']} is reachable.")
        warnings = [c for c in result["checks"] if not c["ok"]]
        for c in warnings:
            lines.append(f"  note: {c['netns']}: {c['detail']}")
        return "\n".join(lines)
    stops = where_it_stops(result["path"])
    if stops:
        lines.append(f"  counted: {stops}")
    for drop in result.get("drops", []):
        lines.append(f"  traced: {_event_text(drop)}")
    lines += leaving_lines(result["path"])
    causes = result["causes"]
    first = causes[0]
    if first["cause"] == "unknown":
        lines.append("the ping fails, and no check on the path explains why:")
        lines += [f"  {e}" for e in first["evidence"]]
        return "\n".join(lines)
    where = first["netns"] + (f", {first['ifname']}" if first.get("ifname") else "")
    lines.append(f"it breaks in {where}: {first['cause']}")
    lines.append(f"  why: {first['detail']}")
    shown = {_evidence_line(first["evidence"][0])}
    for e in first["evidence"][1:]:
        line = _evidence_line(e)
        if line not in shown:
            shown.add(line)
            lines.append(f"  evidence: {line}")
    if first["fix"]:
        lines.append("  fix:")
        lines += [f"    {cmd}" for cmd in first["fix"]]
    elif not first["advice"]:
        tried = any(e.startswith("not proven: ") for e in first["evidence"])
        lines.append("  no fix: " + ("no candidate repairs the path on the model (the evidence says where each "
                                     "leaves it broken)" if tried else "bpftools knows no command that repairs it"))
    lines += _advice_lines(first)
    for other in causes[1:]:
        lines.append(f"also ({other['cause']}, {other['netns']}): {other['detail']}")
        lines += [f"    {cmd}" for cmd in other["fix"]] + _advice_lines(other)
    return "\n".join(lines)
