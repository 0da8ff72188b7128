"""Test traffic sent from inside a network namespace, for the demo, tests and benchmarks.

A socket belongs to the namespace it was created in, so each sender creates its socket in
`in_netns(ns)` and sends from this process: no `ip netns exec` per burst. Every loop is
bounded in packets and time. Traffic only ever goes to addresses inside namespaces.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import socket
import struct
import time
from typing import List, Optional

from .netlink import in_netns, ipr

NUD_VALID = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # REACHABLE STALE DELAY PROBE NOARP PERMANENT


def udp_socket(netns: Optional[str], src: Optional[str] = None, family: int = socket.AF_INET) -> socket.socket:
    with in_netns(netns):
        sock = socket.socket(family, socket.SOCK_DGRAM)
    if src:
        sock.bind((src, 0))
    return sock


def send_udp(netns: Optional[str], dst: str, port: int, count: int = 1, src: Optional[str] = None,
             payload: bytes = b"bpftools", gap: float = 0.0) -> int:
    """`count` UDP datagrams to dst:port; errors (unreachable...) are counted as not sent."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sent = 0
    with contextlib.closing(udp_socket(netns, src, family)) as sock:
        for _ in range(count):
            with contextlib.suppress(OSError):
                sock.sendto(payload, (dst, port))
                sent += 1
            if gap:
                time.sleep(gap)
    return sent


def tcp_connect(netns: Optional[str], dst: str, port: int, timeout: float = 0.3) -> bool:
    """Try a TCP connection (its SYN is what gets dropped); True if it connected."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with in_netns(netns):
        sock = socket.socket(family, socket.SOCK_STREAM)
    with contextlib.closing(sock):
        sock.settimeout(timeout)
        try:
            sock.connect((dst, port))
            return True
        except OSError:
            return False


def checksum(data: bytes) -> int:
    """The internet checksum (RFC 1071) of IPv4 headers and ICMP messages."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes = b"bpftools") -> bytes:
    """An IPv4+UDP packet with any source address (for raw sockets; UDP checksum 0 = none)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + udp


def send_spoofed_udp(netns: Optional[str], src: str, dst: str, dport: int, count: int = 1,
                     sport: int = 40000) -> int:
    """UDP with a forged source address through a raw socket (martian / rp_filter tests)."""
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    packet = ipv4_udp_packet(src, dst, sport, dport)
    sent = 0
    with contextlib.closing(sock):
        for _ in range(count):
            with contextlib.suppress(OSError):
                sock.sendto(packet, (dst, 0))
                sent += 1
    return sent


def resolve_neighbour(netns: Optional[str], dst: str, port: int = 9, timeout: float = 2.0) -> bool:
    """Get dst's (or its gateway's) ARP entry resolved, so bursts are not queued or dropped
    while the kernel resolves it. Sends one UDP datagram (which may itself be dropped)."""
    with ipr(netns) as sock:
        route = sock.route("get", dst=dst)[0]
        hop = route.get_attr("RTA_GATEWAY") or dst
        send_udp(netns, dst, port, 1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in sock.get_neighbours(dst=hop):
                if msg["state"] & NUD_VALID:
                    return True
            time.sleep(0.02)
    return False


def _flood_worker(netns: Optional[str], dst: str, port: int, seconds: float, src: Optional[str], result) -> None:
    sock = udp_socket(netns, src)
    sock.setblocking(False)
    payload = b"x" * 16
    cpu = time.process_time()  # the drops are processed in this task's softirq context
    sent, deadline = 0, time.monotonic() + seconds
    send = sock.sendto
    target = (dst, port)
    while True:
        for _ in range(256):
            try:
                send(payload, target)
                sent += 1
            except OSError:
                pass
        if time.monotonic() >= deadline:
            break
    result.put((sent, time.process_time() - cpu))


class UdpFlood:
    """`processes` senders blasting UDP at dst:port from inside `netns` for `seconds`."""

    def __init__(self, netns: Optional[str], dst: str, port: int, seconds: float, processes: int = 2,
                 src: Optional[str] = None):
        self.args = (netns, dst, port, seconds, src)
        self.processes = processes
        self._procs: List[multiprocessing.Process] = []
        self._queue = multiprocessing.Queue()
        self.sent = 0
        self.cpu_seconds = 0.0  # CPU the senders used, including the kernel's work on their packets

    def start(self) -> "UdpFlood":
        for _ in range(self.processes):
            proc = multiprocessing.Process(target=_flood_worker, args=(*self.args, self._queue), daemon=True)
            proc.start()
            self._procs.append(proc)
        return self

    def wait(self) -> int:
        timeout = self.args[3] + 30
        results = [self._queue.get(timeout=timeout) for _ in self._procs]
        self.sent = sum(sent for sent, _ in results)
        self.cpu_seconds = sum(cpu for _, cpu in results)
        for proc in self._procs:
            proc.join(timeout=5)
        return self.sent

    def __enter__(self) -> "UdpFlood":
        return self.start()

    def __exit__(self, *exc) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
