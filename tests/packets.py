"""Sending test traffic from inside a namespace (shared by the integration tests)."""
from __future__ import annotations

import socket
import time
from typing import Iterable

from bpftools.netlink import in_netns


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


def send_udp(netns: str, dst: str, port: int, count: int, payload: bytes = b"bpftools") -> None:
    """`count` UDP datagrams to dst:port from a socket opened in `netns`."""
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        for _ in range(count):
            try:
                sock.sendto(payload, (dst, port))
            except OSError:
                pass  # an ICMP error from an earlier datagram; the kernel drops or refuses: still counted
