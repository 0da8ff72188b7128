"""The typed records of a diagnosis: the hops of the path (and the outer packet of a tunnel hop),
the per-hop packet counts, the drops traced, the causes and the whole result. The JSON of
`diagnose ping --json` is made from them here, in one place (`to_json`), and nowhere else."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Dict, List, Optional

from ..commands import Command, rendered
from ..drop_causes import reason_name
from ..drop_events import DropEvent, Encap, Flow, flow_text, tunnel_text

Inodes = Dict[str, int]   # namespace label -> nsfs inode: `netns_inode` beside every `netns` in the JSON


def _with_inode(data: dict, inodes: Optional[Inodes]) -> dict:
    if inodes and data.get("netns") in inodes and data.get("netns_inode") is None:
        data["netns_inode"] = inodes[data["netns"]]
    return data


@dataclass
class Outer:
    """The packet a tunnel device makes of the ping: what the underlay carries."""
    kind: str                      # vxlan, geneve, ipip, sit, gre, gretap, ip6gre, ip6tnl, ...
    src: Optional[str]             # outer source address (the local endpoint; None: chosen by routing)
    dst: str                       # outer destination (the remote endpoint)
    proto: str                     # udp, ipip (IPPROTO_IPIP), ipv6 (sit), gre
    dport: Optional[int] = None    # UDP destination port (vxlan/geneve)
    vni: Optional[int] = None      # vxlan/geneve VNI
    key: Optional[int] = None      # GRE key

    def describe(self) -> str:
        what = self.kind + (f" VNI {self.vni}" if self.vni is not None else "") + \
            (f" key {self.key}" if self.key is not None else "")
        port = f" UDP port {self.dport}" if self.dport is not None else ""
        return f"{what}{port} {self.src or '?'} -> {self.dst}"


@dataclass
class HopCounts:
    """The ping's packets counted entering (`rx`, the JSON's `in`) and leaving (`tx`, `out`) a hop,
    in `unit`: `echo`, its own echo packets (per-hop BPF counting), or `frames`, every frame the
    interfaces counted. None: the hop has no such interface (the path's ends)."""
    rx: Optional[int]
    tx: Optional[int]
    unit: str

    def to_json(self) -> dict:
        return {"in": self.rx, "out": self.tx, "unit": self.unit}


@dataclass
class Hop:
    direction: str
    netns: str
    iif: Optional[str]
    oif: Optional[str]
    # send, forward, bridge, deliver, leave, broken, program (a tun/tap's holder),
    # tunnel (encapsulated: `outer` says how), decap (the outer packet ends: decapsulated here)
    action: str
    src: str
    dst: str
    nexthop: Optional[str] = None
    note: str = ""
    outer: Optional[Outer] = None
    packets: Optional[HopCounts] = None   # set once the live pings were counted (diagnose_ping)

    def to_json(self, inodes: Optional[Inodes] = None) -> dict:
        data = {"direction": self.direction, "netns": self.netns, "iif": self.iif, "oif": self.oif,
                "action": self.action, "src": self.src, "dst": self.dst, "nexthop": self.nexthop, "note": self.note,
                "outer": asdict(self.outer) if self.outer is not None else None}
        if self.packets is not None:
            data["packets"] = self.packets.to_json()
        return _with_inode(data, inodes)

    to_dict = to_json


@dataclass
class Drop:
    """A drop of the ping's packets traced during the live pings, merged per place and reason
    (live.relevant_drops). A tunnel packet carrying the ping (the underlay dropped it) adds its
    UDP ports (`sport`, `dport`), how it carries the ping (`encap`) and the ping's flow (`inner`);
    those four are in the JSON only for such a drop."""
    netns: Optional[str]
    ifname: Optional[str]
    reason: str
    location: Optional[str] = None
    family: Optional[str] = None
    proto: Optional[str] = None
    src: Optional[str] = None
    dst: Optional[str] = None
    icmp_type: Optional[int] = None
    netns_inode: Optional[int] = None
    count: int = 1
    sport: Optional[int] = None
    dport: Optional[int] = None
    encap: Optional[Encap] = None
    inner: Optional[Flow] = None

    FIELDS = ("netns", "ifname", "reason", "location", "family", "proto", "src", "dst", "icmp_type", "netns_inode",
              "count")

    @classmethod
    def from_json(cls, data: dict) -> "Drop":
        """A drop of the `drops` of the JSON, or a tracer event (its other fields left out)."""
        known = {k: data[k] for k in cls.FIELDS if k in data}
        known = dict({"netns": None, "ifname": None, "reason": ""}, **known)
        encap, inner = data.get("encap"), data.get("inner")
        if encap:
            known.update(sport=data.get("sport"), dport=data.get("dport"), encap=Encap(**encap),
                         inner=_flow(inner) if inner else None)
        return cls(**known)

    def event(self) -> DropEvent:
        """The drop as drop_causes' table functions take it (drop_events.DropEvent)."""
        netns = self.netns or "host"
        return DropEvent(ts=0.0, netns=netns, netns_inode=self.netns_inode or 0,
                         netns_name=None if netns == "host" else netns, ifname=self.ifname, ifindex=0,
                         reason=reason_name(self.reason), reason_code=0, location=self.location, family=self.family,
                         proto=self.proto, src=self.src, dst=self.dst, sport=self.sport, dport=self.dport,
                         icmp_type=self.icmp_type, icmp_code=None, len=0, encap=self.encap, inner=self.inner)

    def tunnel_flow(self) -> Optional[str]:
        """Both flows of a tunnel packet's drop (drop_events.tunnel_text); None for a plain drop."""
        if self.encap is None:
            return None
        outer = flow_text(self.family, self.proto, self.src, self.dst, self.sport, self.dport, self.icmp_type, None)
        return tunnel_text(outer, self.encap, self.inner)

    def to_json(self, inodes: Optional[Inodes] = None) -> dict:
        data = {k: getattr(self, k) for k in self.FIELDS}
        if self.encap is not None:
            data.update(sport=self.sport, dport=self.dport, encap=self.encap.as_json(),
                        inner=self.inner.as_json() if self.inner else None)
        return _with_inode(data, inodes)


def _flow(data: dict) -> Flow:
    """A Flow from its JSON; fields the tracer left out are None."""
    return Flow(**{f.name: data.get(f.name) for f in fields(Flow)})


@dataclass
class Ranking:
    """What ranks a cause and what proving tries on it; internal, never in the JSON."""
    order: int                 # the order its check ran in (drops: after every check)
    confirmed: bool = False    # independently confirmed (certain config, or a traced drop): may be an "also"
    symptom: bool = False      # what another fault looks like from the sender (a FAILED neighbour entry)
    candidates: List[List[Command]] = field(default_factory=list)   # fixes to prove, the likeliest first


@dataclass
class Cause:
    """Where the ping breaks and why, with the evidence and the fix (proven on the model) or advice.
    `fix` and `advice` are Commands: the JSON renders each as a shell line and as argv."""
    cause: str
    netns: Optional[str]
    ifname: Optional[str]
    detail: str
    evidence: List[str] = field(default_factory=list)
    fix: List[Command] = field(default_factory=list)
    advice: List[Command] = field(default_factory=list)
    proven: bool = False
    confidence: float = 0.0
    direction: Optional[str] = None
    missing: str = ""   # without a fix: what a command would need that bpftools cannot know (the story says it)
    ranking: Ranking = field(default_factory=lambda: Ranking(0), repr=False, compare=False)

    def add_evidence(self, text: str) -> None:
        if text not in self.evidence:
            self.evidence.append(text)

    def set_fix(self, fix: List[Command], proven: bool, advice: List[Command] = ()) -> None:
        self.fix, self.proven, self.advice = list(fix), proven, list(advice)

    def to_json(self, inodes: Optional[Inodes] = None) -> dict:
        return _with_inode({
            "cause": self.cause, "netns": self.netns, "ifname": self.ifname, "detail": self.detail,
            "evidence": list(self.evidence), "fix": rendered(self.fix), "fix_argv": [c.to_json() for c in self.fix],
            "proven": self.proven, "advice": rendered(self.advice),
            "advice_argv": [c.to_json() for c in self.advice], "confidence": self.confidence,
            "direction": self.direction}, inodes)


@dataclass
class Result:
    """What `diagnose ping` found: `story()` (verdict.py) tells it, `to_json()` is its --json."""
    target: str
    netns: str
    reachable: bool
    sent: int
    received: int
    source: Optional[str]
    path: List[Hop]
    causes: List[Cause]
    drops: List[Drop]
    checks: list                       # checks.Finding (not imported here: checks may build on these records)
    device: Optional[str] = None       # ping -I IFACE
    family: int = 4
    notes: List[str] = field(default_factory=list)   # what the live part could not do
    inodes: Inodes = field(default_factory=dict)

    @property
    def first(self) -> Optional[Cause]:
        return self.causes[0] if self.causes else None

    def to_json(self) -> dict:
        inodes = self.inodes
        data = {"target": self.target, "netns": self.netns, "reachable": self.reachable, "sent": self.sent,
                "received": self.received, "source": self.source, "path": [h.to_json(inodes) for h in self.path],
                "causes": [c.to_json(inodes) for c in self.causes], "drops": [d.to_json(inodes) for d in self.drops],
                "checks": [_with_inode(f.to_dict(), inodes) for f in self.checks], "device": self.device,
                "family": self.family}
        _with_inode(data, inodes)
        data["notes"] = list(self.notes)
        return data
