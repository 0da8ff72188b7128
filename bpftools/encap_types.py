"""The tunnel types of bpf/include/encap.h (one list, by value) and the UDP ports that make a
packet a tunnel packet for the BPF tunnel parser (bpf/include/tunnel.h): used by encap-stats,
trace-drops and diagnose alike. Pure; no BPF here."""
from __future__ import annotations

from typing import Dict, Iterable, Tuple

from .errors import BpftoolsError

# Mirror of enum encap_type in bpf/include/encap.h, by value (tests/unit/test_encap_stats_decode.py checks it).
ENCAP_TYPES = ("none", "ipip", "sit", "ip6ip6", "ip4in6", "gre", "gretap", "vxlan", "geneve", "fou", "gue")
# UDP ports tunnel.h knows without being told (udp_tunnel_kind); more come as -D defines.
PARSER_UDP_PORTS = {4789: "vxlan", 8472: "vxlan", 6081: "geneve"}
# How many extra ports of each UDP tunnel type tunnel.h takes (TUNNEL_VXLAN_PORT0..3, TUNNEL_GENEVE_PORT0..1).
PARSER_EXTRA_PORTS = {"vxlan": 4, "geneve": 2}


def tunnel_defines(ports: Iterable[Tuple[str, int]], open_tunnels: bool = True) -> Dict[str, int]:
    """The -D defines of tunnel.h: the extra UDP ports (tunnel_port_defines), or, when no
    tunnel can be on the traced path, TUNNEL_OUTER_ONLY (the outer flow alone: loads in ms)."""
    return tunnel_port_defines(ports) if open_tunnels else {"TUNNEL_OUTER_ONLY": 1}


def tunnel_port_defines(ports: Iterable[Tuple[str, int]]) -> Dict[str, int]:
    """(type, port) pairs (`--udp-port vxlan=4790`, a VXLAN device's dstport) -> the -D defines
    of tunnel.h. Ports it knows already need none; too many of a type is a one-line error."""
    extra: Dict[str, list] = {kind: [] for kind in PARSER_EXTRA_PORTS}
    for kind, port in ports:
        if kind not in PARSER_EXTRA_PORTS:
            raise BpftoolsError(f"UDP port {port}: the tunnel parser opens {' and '.join(PARSER_EXTRA_PORTS)} "
                                f"packets, not {kind}")
        if PARSER_UDP_PORTS.get(port) == kind or port in extra[kind]:
            continue
        if len(extra[kind]) == PARSER_EXTRA_PORTS[kind]:
            raise BpftoolsError(f"at most {PARSER_EXTRA_PORTS[kind]} extra {kind} UDP ports, "
                                f"besides {sorted(p for p, k in PARSER_UDP_PORTS.items() if k == kind)}")
        extra[kind].append(port)
    return {f"TUNNEL_{kind.upper()}_PORT{i}": port for kind, found in extra.items() for i, port in enumerate(found)}
