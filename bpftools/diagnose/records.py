"""The typed records of a diagnosis: the hops of the path (and the outer packet of a tunnel hop).
JSON is made from them here, in one place."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional


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

    def to_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k != "outer"}
        data["outer"] = asdict(self.outer) if self.outer is not None else None
        return data
