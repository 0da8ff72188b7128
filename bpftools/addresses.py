"""Addresses as users type them and as BPF maps hold them (shared by the capabilities)."""
from __future__ import annotations

import ipaddress
import socket
from typing import Optional

from .errors import BpftoolsError


def format_address(family: int, raw: bytes) -> Optional[str]:
    """Address bytes from a BPF struct (family 4 or 6) -> text; None for any other family."""
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, bytes(raw[:4]))
    if family == 6:
        return socket.inet_ntop(socket.AF_INET6, bytes(raw[:16]))
    return None


def parse_cidr(text: str, option: str = ""):
    """An address or CIDR (host bits allowed: 10.1.2.3/24 is 10.1.2.0/24) -> ipaddress network;
    the error names `option` (--src, --allow-remote...) when given."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise BpftoolsError(f"{option + ' ' if option else ''}{text!r} is not an address or CIDR") from None
