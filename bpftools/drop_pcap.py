"""trace-drops --pcap: the dropped packets as a pcapng file for tcpdump, tshark and Wireshark.

Each packet is written from its network header (LINKTYPE_RAW: IPv4 or IPv6, told apart by
the version nibble), so drops on devices without an Ethernet header and locally generated
packets before L2 are captured alike. Non-IP drops (ARP, ...) cannot be told apart in that
link type and are not written; they are counted. Every packet carries one comment naming the
drop (reason, namespace, interface, kernel location), a tunnel packet a second one naming the
tunnel and the flow inside it, and, with --stack, one more with the stack. Each packet is flushed as it is written. The file has one pcapng interface: libpcap (tcpdump) refuses files whose LINKTYPE_RAW
interfaces are more than one, so the namespace and interface are in the comment.

Written with scapy's PcapNgWriter (maintained, writes per-packet opt_comment and if_name);
imported only when --pcap is used.
"""
from __future__ import annotations

import contextlib
import struct
from typing import List, Optional

from .drop_events import DropEvent
from .errors import BpftoolsError
from .text import shown

LINKTYPE_RAW = 101  # the file-format value; libpcap's DLT_RAW is platform-dependent (12 or 14)


def drop_comments(event: DropEvent) -> List[str]:
    """The per-packet comments: what dropped it, where; the stack when there is one. Names are
    escaped (text.shown): a comment is UTF-8 that Wireshark shows, and names need not be either."""
    iface = shown(event.ifname or f"if{event.ifindex}")
    comments = [f"bpftools drop: reason {event.reason} ({event.reason_code}), netns {shown(event.netns)}, "
                f"interface {iface} (ifindex {event.ifindex}), location {event.location or '?'}"]
    if event.encap:  # Wireshark decodes the inner packet too, but only on the tunnel's standard port
        comments.append(f"bpftools tunnel: {event.encap.text()}"
                        + (f" udp port {event.encap.dport}" if event.encap.dport else "")
                        + f", inner {event.inner.text() if event.inner else 'unknown'}")
    if event.stack:
        comments.append("stack: " + " < ".join(event.stack))
    return comments


def wire_length(packet: bytes, fallback: int) -> int:
    """The IP packet's own length (IPv4 total length, IPv6 payload + 40) when the header says
    one, else `fallback` (the skb length): what pcap calls the original length."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= 4:
        length = struct.unpack_from("!H", packet, 2)[0]
    elif version == 6 and len(packet) >= 6:
        payload = struct.unpack_from("!H", packet, 4)[0]
        length = payload + 40 if payload else 0  # 0: a jumbogram or GSO packet
    else:
        length = 0
    return max(length or fallback, len(packet))


class DropPcap(contextlib.AbstractContextManager):
    """`with DropPcap(path) as pcap: pcap.write(event)`; the file is complete when the block ends."""

    def __init__(self, path: str):
        self.path = path
        self.written = 0
        self.skipped = 0  # non-IP drops, or no bytes captured
        self._writer = None

    def __enter__(self) -> "DropPcap":
        from scapy.utils import PcapNgWriter

        class RawIpWriter(PcapNgWriter):
            linktype = LINKTYPE_RAW  # every packet starts at its IP header

        try:
            self._writer = RawIpWriter(self.path)
        except OSError as exc:
            raise BpftoolsError(f"cannot write --pcap {self.path}: {exc.strerror}") from None
        self._writer.write_header(None)  # section and interface blocks: a valid file even without drops
        self._writer.sync = True  # each packet reaches the file at once: readable while tracing, and after a kill
        return self

    def write(self, event: DropEvent) -> bool:
        """Append one dropped packet; False (and counted) when it has no IP bytes to write."""
        if not event.packet or event.family not in ("ipv4", "ipv6"):
            self.skipped += 1
            return False
        from scapy.packet import Raw

        packet = Raw(load=event.packet)
        packet.time = event.ts
        packet.wirelen = wire_length(event.packet, event.len)
        packet.comments = [c.encode() for c in drop_comments(event)]
        self._writer.write_packet(packet)  # not write(): it warns that Raw has no link type of its own
        self.written += 1
        return True

    def note(self) -> Optional[str]:
        """The end-of-run line: how many packets went to the file (and how many could not)."""
        text = f"wrote {self.written} dropped packet(s) to {self.path}"
        if self.skipped:
            text += f"; {self.skipped} drop(s) without IP bytes not written (non-IP, or no header in the skb)"
        return text

    def __exit__(self, *exc) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
