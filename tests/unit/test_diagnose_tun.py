"""TUN/TAP on recorded state: the path ends in the program holding the device; with none, the
device drops the packets (`tun_no_program`, no command); the lab responder's echo reply."""
from __future__ import annotations

import struct

from bpftools.commands import rendered
from bpftools.diagnose.state import Addr, Link, Snapshot
from bpftools.diagnose.verdict import build_causes, verdict
from bpftools.diagnose.walk import Walker
from bpftools.lab_tun import RESPONDER_MAC, echo_reply, frame_reply
from bpftools.traffic import checksum

from test_diagnose_checks import ns


def tun(holders=(), carrier=True) -> Snapshot:
    link = Link(2, "tun0", "tun", lower_up=carrier, noarp=True, tun_type="tun", tun_persist=True,
                tun_holders=list(holders), qlen=500, tx_dropped=3)
    return Snapshot({"vpn": ns("vpn", [link], [Addr(2, "10.75.0.1", 24)])})


def test_a_held_device_hands_the_path_to_its_program():
    walk = Walker(tun(["PID 42 (openvpn)"])).walk("vpn", "10.75.0.2")
    assert [(h.oif, h.action) for h in walk.hops] == [("tun0", "program")]
    assert walk.handed_to == "PID 42 (openvpn) through tun0"
    assert build_causes(walk.findings, []) == []
    result = verdict("10.75.0.2", "vpn", walk, 3, 0, [])
    assert result.causes[0].cause == "unknown"
    assert "the requests went to PID 42 (openvpn) through tun0; nothing came back from it" in \
        result.causes[0].evidence


def test_a_device_nobody_holds_drops_the_packets():
    walk = Walker(tun(carrier=False)).walk("vpn", "10.75.0.2")
    assert [(h.oif, h.action) for h in walk.hops] == [("tun0", "broken")]
    causes = build_causes(walk.findings, [])
    assert [(c.cause, c.netns, c.ifname) for c in causes] == [("tun_no_program", "vpn", "tun0")]
    assert rendered(causes[0].fix) == []
    assert "no program holds tun0 (tun device, persistent" in causes[0].detail
    assert "qlen 500, 3 dropped so far" in causes[0].detail


def test_a_tap_without_its_vm():
    snap = tun(carrier=False)
    snap.ns("vpn").links[1].tun_type = "tap"
    causes = build_causes(Walker(snap).walk("vpn", "10.75.0.2").findings, [])
    assert "a VM that is down" in causes[0].detail


def _echo_request(src: bytes, dst: bytes) -> bytes:
    icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, 7, 1) + b"payload!")
    icmp[2:4] = struct.pack("!H", checksum(bytes(icmp)))
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, src, dst))
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    return bytes(header + icmp)


def test_the_responder_answers_echo_requests_for_its_address_only():
    me, peer = bytes([10, 75, 0, 2]), bytes([10, 75, 0, 1])
    reply = echo_reply(_echo_request(peer, me), me)
    assert reply[12:16] == me and reply[16:20] == peer and reply[20] == 0
    assert checksum(reply[:20]) == 0 and checksum(reply[20:]) == 0
    assert reply[24:] == _echo_request(peer, me)[24:]   # identifier, sequence and payload kept
    assert echo_reply(_echo_request(peer, bytes([10, 75, 0, 9])), me) is None


def test_the_responder_answers_arp_for_its_address_behind_a_tap():
    me, asker_ip, asker = bytes([10, 76, 0, 2]), bytes([10, 76, 0, 1]), bytes.fromhex("02aabbccddee")
    request = b"\xff" * 6 + asker + b"\x08\x06" + bytes.fromhex("0001080006040001") + asker + asker_ip + \
        b"\0" * 6 + me
    reply = frame_reply(request, me)
    assert reply[:6] == asker and reply[6:12] == RESPONDER_MAC and reply[12:14] == b"\x08\x06"
    assert reply[20:22] == b"\x00\x02" and reply[22:28] == RESPONDER_MAC and reply[28:32] == me
    assert reply[32:38] == asker and reply[38:42] == asker_ip
    assert frame_reply(request[:-4] + bytes([10, 76, 0, 9]), me) is None


def _tap_bridge(holders=()) -> Snapshot:
    tap = Link(3, "tap0", "tun", lower_up=bool(holders), master=2, tun_type="tap", tun_holders=list(holders))
    return Snapshot({"host": ns("host", [Link(2, "br0", "bridge"), tap], [Addr(2, "10.76.0.1", 24)])})


def test_a_vms_tap_port_without_its_vm_is_named():
    walk = Walker(_tap_bridge()).walk("host", "10.76.0.2")
    causes = build_causes(walk.findings, [])
    assert [(c.cause, c.ifname) for c in causes] == [("tun_no_program", "tap0")]
    assert "a VM that is down" in causes[0].detail and rendered(causes[0].fix) == []


def test_a_vms_tap_port_hands_the_path_to_the_vm():
    walk = Walker(_tap_bridge(["PID 7 (qemu-system-x86)"])).walk("host", "10.76.0.2")
    assert [(h.oif, h.action) for h in walk.hops] == [("br0", "program")]
    assert walk.handed_to == "PID 7 (qemu-system-x86) through tap0" and build_causes(walk.findings, []) == []
