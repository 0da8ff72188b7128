"""Sending test traffic from inside a namespace (shared by the integration tests)."""
from __future__ import annotations

import socket
import time
from typing import Iterable

from bpftools.netlink import in_netns
from bpftools.traffic import send_udp  # noqa: F401  (re-exported for the tests)


def send_frames(netns: str, ifname: str, frames: Iterable[bytes], gap: float = 0.0) -> None:
    """Send raw Ethernet frames out of `ifname` in `netns` (an AF_PACKET socket opened there)."""
    with in_netns(netns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    with sock:
        sock.bind((ifname, 0))
        for frame in frames:
            sock.send(bytes(frame))
            if gap:
                time.sleep(gap)
