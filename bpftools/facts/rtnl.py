"""rtnetlink numbers as names, from pyroute2's own tables (never hand-written copies):
route types, policy-rule actions, neighbour states, link flags."""
from __future__ import annotations

from pyroute2.netlink.rtnl import rt_type
from pyroute2.netlink.rtnl.fibmsg import FR_ACT_VALUES
from pyroute2.netlink.rtnl.ifinfmsg import IFF_LOWER_UP, IFF_NOARP, IFF_UP
from pyroute2.netlink.rtnl.ndmsg import NUD_VALUES

__all__ = ["IFF_LOWER_UP", "IFF_NOARP", "IFF_UP", "route_type", "rule_action", "neigh_state"]

# Route types that refuse the packet instead of forwarding it.
FAILURE_ROUTE_TYPES = ("blackhole", "unreachable", "prohibit")


def route_type(number: int) -> str:
    """RTN_* -> "unicast", "local", "blackhole", … (the number itself when unnamed)."""
    name = rt_type.get(number)
    return name if isinstance(name, str) else str(number)


def rule_action(number: int) -> str:
    """FR_ACT_* -> "to_tbl", "goto", "nop", "blackhole", "unreachable", "prohibit"."""
    name = FR_ACT_VALUES.get(number)
    return name[len("FR_ACT_"):].lower() if name else str(number)


def neigh_state(number: int) -> str:
    """NUD_* -> "reachable", "stale", "failed", …; 0 is "none"."""
    name = NUD_VALUES.get(number)
    return name[len("NUD_"):].lower() if name else hex(number)
