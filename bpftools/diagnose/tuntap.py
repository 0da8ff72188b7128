"""TUN/TAP devices as the walk sees them: the other end is the program holding the device (a VPN
client, a VM); without one the device has no carrier and its queue drops what is sent to it.
Which program should hold it the kernel does not record, so nothing here derives a command."""
from __future__ import annotations

from typing import Optional

from .state import Link


def is_tuntap(link: Link) -> bool:
    return link.kind == "tun"


def held(link: Link) -> bool:
    return bool(link.tun_holders) and link.lower_up


def holder_text(link: Link) -> str:
    """"PID N (comm) through tun0"."""
    return f"{link.tun_holders[0]} through {link.ifname}"


def unheld_detail(link: Link) -> Optional[str]:
    """Why nothing comes out of the device's other end, or None when a program holds it."""
    if held(link):
        return None
    mode = link.tun_type or "tun"
    made = "persistent (made by `ip tuntap add` or a program's TUNSETPERSIST)" if link.tun_persist else "not persistent"
    owner = f", owner uid {link.tun_owner}" if link.tun_owner is not None else ""
    role = "a VM that is down: its TAP port has no program" if mode == "tap" else \
        "the program that serves it (a VPN client) is not running"
    return (f"no program holds {link.ifname} ({mode} device, {made}{owner}): NO-CARRIER, so the kernel drops what "
            f"is sent to it on its queue (qlen {link.qlen}, {link.tx_dropped} dropped so far); {role}: start it again")
