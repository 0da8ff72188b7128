"""The lab's TUN/TAP responder: a small user-space program on the other end of a tun device (what
a VPN client is) or a tap device (what a VM is: it answers ARP too), answering ICMP echo requests
for one address behind it. The device's mode is read from sysfs (`tun_flags`).

    python -m bpftools.lab_tun start DEV ADDRESS   # in the background; returns once DEV has carrier
    python -m bpftools.lab_tun stop DEV            # ends the programs of this namespace holding DEV
    python -m bpftools.lab_tun serve DEV ADDRESS   # the responder itself (foreground)

`bpftools lab` starts it inside the topology's namespace; `lab down` ends it with the namespace's
other processes."""
from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import sys
import time
from typing import Optional

from .facts.tun import holders_of
from .traffic import checksum

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_TAP, IFF_NO_PI = 0x0001, 0x0002, 0x1000
ETH_ARP, ETH_IPV4 = b"\x08\x06", b"\x08\x00"
ARP_REQUEST, ARP_REPLY = b"\x00\x01", b"\x00\x02"
RESPONDER_MAC = bytes.fromhex("020000007502")   # the "VM"'s MAC behind a tap device
ICMP, ECHO_REQUEST, ECHO_REPLY = 1, 8, 0
DEADLINE = 10.0   # seconds to wait for the device's carrier, or for a holder to end


def echo_reply(packet: bytes, address: bytes) -> Optional[bytes]:
    """The IPv4 echo reply to `packet` when it is an echo request for `address`, else None."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != ICMP or packet[16:20] != address:
        return None
    header_len = (packet[0] & 0x0F) * 4
    icmp = bytearray(packet[header_len:])
    if len(icmp) < 8 or icmp[0] != ECHO_REQUEST:
        return None
    icmp[0], icmp[2:4] = ECHO_REPLY, b"\0\0"
    icmp[2:4] = struct.pack("!H", checksum(bytes(icmp)))
    header = bytearray(packet[:header_len])
    header[12:16], header[16:20] = packet[16:20], packet[12:16]
    header[8], header[10:12] = 64, b"\0\0"
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    return bytes(header) + bytes(icmp)


def frame_reply(frame: bytes, address: bytes, mac: bytes = RESPONDER_MAC) -> Optional[bytes]:
    """A tap device's frames: the ARP reply for `address`, or the echo reply, from `mac`."""
    if len(frame) < 14:
        return None
    asker, ethertype, body = frame[6:12], frame[12:14], frame[14:]
    if ethertype == ETH_ARP and len(body) >= 28 and body[6:8] == ARP_REQUEST and body[24:28] == address:
        return asker + mac + ETH_ARP + body[0:6] + ARP_REPLY + mac + address + body[8:18]   # to the asker
    reply = echo_reply(body, address) if ethertype == ETH_IPV4 else None
    return asker + mac + ETH_IPV4 + reply if reply is not None else None


def is_tap(ifname: str) -> bool:
    with open(f"/sys/class/net/{ifname}/tun_flags") as f:
        return bool(int(f.read(), 16) & IFF_TAP)


def attach(ifname: str, tap: bool) -> int:
    """Open /dev/net/tun attached to the (persistent) device `ifname`."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), (IFF_TAP if tap else IFF_TUN) | IFF_NO_PI))
    return fd


def serve(ifname: str, address: str) -> None:
    tap = is_tap(ifname)
    fd = attach(ifname, tap)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    wanted = bytes(int(part) for part in address.split("."))
    answer = frame_reply if tap else echo_reply
    while True:
        reply = answer(os.read(fd, 65536), wanted)
        if reply is not None:
            os.write(fd, reply)


def _carrier(ifname: str) -> bool:
    try:
        with open(f"/sys/class/net/{ifname}/carrier") as f:
            return f.read().strip() == "1"
    except OSError:   # reading carrier of a device that is down fails: no carrier
        return False


def start(ifname: str, address: str) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "bpftools.lab_tun", "serve", ifname, address],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + DEADLINE
    while not _carrier(ifname):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"lab_tun: the responder for {ifname} did not attach (exit {proc.poll()})")
        time.sleep(0.05)
    return proc.pid


def stop(ifname: str) -> None:
    own = os.stat("/proc/self/ns/net").st_ino
    pids = [h.pid for h in holders_of(ifname, own) if h.netns_inode == own]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DEADLINE
    while _carrier(ifname) and time.monotonic() < deadline:
        time.sleep(0.05)


def main(argv) -> None:
    verb, ifname, *rest = argv
    if verb == "serve":
        serve(ifname, rest[0])
    elif verb == "start":
        print(start(ifname, rest[0]))
    elif verb == "stop":
        stop(ifname)
    else:
        raise SystemExit(f"lab_tun: unknown verb {verb!r} (start, stop, serve)")


if __name__ == "__main__":
    main(sys.argv[1:])
