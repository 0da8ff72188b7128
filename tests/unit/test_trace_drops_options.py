"""trace-drops port/exclude filters, stacks and --pcap: configuration, decoding and the pcapng
file, without root or bcc (the real drops: tests/integration/test_trace_drops_capture.py)."""
from __future__ import annotations

import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from bpftools.cli.main import cli, register_commands
from bpftools.drop_events import EVENT_LAYOUT, DropEvent, Names, decode_event, decode_raw
from bpftools.drop_pcap import LINKTYPE_RAW, DropPcap, drop_comments, wire_length
from bpftools.errors import BpftoolsError
from bpftools.kernel.drop_reasons import parse_format
from bpftools.kernel.kallsyms import addresses_hidden, hidden_note
from bpftools.trace_drops import DropCapture, DropFilter, DropTracer, build_filter, program_defines

FIXTURES = Path(__file__).parent / "fixtures"
FMT_618 = parse_format((FIXTURES / "kfree_skb-6.18.format").read_text())
FMT_510 = parse_format((FIXTURES / "kfree_skb-5.10.format").read_text())
BPF_SOURCE = Path(__file__).resolve().parents[2] / "bpf" / "trace_drops.bpf.c"
NOT_SPECIFIED, NO_SOCKET, NETFILTER_DROP = 2, 3, 12

register_commands()


def udp_packet(payload: bytes = b"bpftools") -> bytes:
    """IPv4/UDP 10.11.0.1:40000 > 10.11.0.2:53 (checksums left 0: not needed here)."""
    udp = struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton("10.11.0.1"), socket.inet_aton("10.11.0.2"))
    return ip + udp


def drop_event(**kw) -> DropEvent:
    fields = dict(ts=1_700_000_000.25, netns="bt-b-1", netns_inode=4026532999, netns_name="bt-b-1", ifname="vb",
                  ifindex=3, reason="NO_SOCKET", reason_code=NO_SOCKET, location="__udp4_lib_rcv+0x4bc",
                  family="ipv4", proto="udp", src="10.11.0.1", dst="10.11.0.2", sport=40000, dport=53,
                  icmp_type=None, icmp_code=None, len=36, packet=udp_packet())
    fields.update(kw)
    return DropEvent(**fields)


# --- filters: options -> DropFilter -> -D defines ---------------------------------------------------

def test_port_and_exclude_defines():
    flt = DropFilter(all_netns=True, port=53, sport=1000, dport=0, exclude_reasons={NOT_SPECIFIED})
    d = program_defines(flt, FMT_618, summary=False)
    assert (d["FILTER_PORT"], d["FILTER_SPORT"], d["FILTER_DPORT"]) == (53, 1000, 0)  # port 0 is a value too
    assert d["FILTER_EXCLUDE_REASONS"] and not d["FILTER_REASONS"]
    assert d["STACK_DEPTH"] == 0 and d["SNAPLEN"] == 0
    plain = program_defines(DropFilter(all_netns=True), FMT_618, summary=False)
    assert not any(name in plain for name in ("FILTER_PORT", "FILTER_SPORT", "FILTER_DPORT"))
    assert not plain["FILTER_EXCLUDE_REASONS"]


def test_capture_defines_and_every_define_is_in_the_source():
    flt = DropFilter(all_netns=True, port=1, sport=2, dport=3, exclude_reasons={2})
    d = program_defines(flt, FMT_618, summary=False, capture=DropCapture(stack_depth=32, snaplen=200))
    assert (d["STACK_DEPTH"], d["SNAPLEN"]) == (32, 200)
    text = BPF_SOURCE.read_text()
    for name in d:
        assert name in text, name


def test_build_filter_resolves_reasons_from_the_kernel_format():
    flt = build_filter([], None, True, fmt=FMT_618, exclude_reasons=["not_specified", "SKB_DROP_REASON_NO_SOCKET"],
                       dport=53)
    assert flt.exclude_reasons == {NOT_SPECIFIED, NO_SOCKET} and not flt.reasons and flt.dport == 53
    # wanted and excluded together: one wanted set, no second lookup in the kernel
    both = build_filter([], None, True, reasons=["NO_SOCKET", "NETFILTER_DROP"], exclude_reasons=["NO_SOCKET"],
                        fmt=FMT_618)
    assert both.reasons == {NETFILTER_DROP} and not both.exclude_reasons
    assert "port" not in both.describe() and "dport 53" in flt.describe() and "not 2,3" in flt.describe()
    assert both.describe(Names(FMT_618, ksym=None)).endswith("all network namespaces reason NETFILTER_DROP")


@pytest.mark.parametrize("kwargs, message", [
    (dict(exclude_reasons=["NO_SUCH_REASON"]), "unknown drop reason 'NO_SUCH_REASON' on this kernel"),
    (dict(reasons=["NO_SOCKET"], exclude_reasons=["NO_SOCKET"]), "removes every --reason given"),
    (dict(proto="icmp", port=53), "--proto icmp has no ports"),
])
def test_build_filter_rejects(kwargs, message):
    with pytest.raises(BpftoolsError, match=message):
        build_filter([], None, True, fmt=FMT_618, **kwargs)


def test_exclude_reason_needs_a_kernel_with_reasons():
    with pytest.raises(BpftoolsError, match=r"no drop reason \(before 5.17\): --exclude-reason unavailable"):
        build_filter([], None, True, fmt=FMT_510, exclude_reasons=["NO_SOCKET"])


@pytest.mark.parametrize("proto", ["tcp", "udp", "sctp", "udplite", "132"])
def test_ports_with_protocols_that_have_them(proto):
    assert build_filter([], None, True, proto=proto, port=9, fmt=FMT_618).port == 9


# --- CLI: what combines and what does not -----------------------------------------------------------

@pytest.mark.parametrize("args", [["--summary", "--stack"], ["--summary", "--pcap", "x.pcapng"]])
def test_stack_and_pcap_are_per_drop_not_summary(args):
    result = CliRunner().invoke(cli, ["trace-drops", *args])
    assert result.exit_code == 2
    assert "--stack and --pcap need each drop; --summary only counts them in the kernel" in result.output


def test_tracer_refuses_capture_in_summary_mode():
    with pytest.raises(BpftoolsError, match="not with a summary"):
        DropTracer(DropFilter(all_netns=True), summary=True, fmt=FMT_618, capture=DropCapture(stack_depth=8))


@pytest.mark.parametrize("args", [["--port", "65536"], ["--dport", "-1"], ["--snaplen", "0"], ["--snaplen", "4096"]])
def test_out_of_range_values_are_usage_errors(args):
    assert CliRunner().invoke(cli, ["trace-drops", *args]).exit_code == 2


def test_help_shows_the_new_options():
    output = CliRunner().invoke(cli, ["trace-drops", "--help"], catch_exceptions=False).output
    for option in ("--port", "--sport", "--dport", "--exclude-reason", "--stack", "--pcap", "--snaplen"):
        assert option in output, option


# --- decoding: stack and packet bytes after the event -----------------------------------------------

def raw_record(stack=(), packet=b"", stack_depth=0) -> bytes:
    head = EVENT_LAYOUT.pack(1_000_000_000, 0xffffffff81000010, 4026532999, 3, NO_SOCKET, 36, 0x0800, 4, 17,
                             40000, 53, 0, 0, 1, 1, socket.inet_aton("10.11.0.1"), socket.inet_aton("10.11.0.2"),
                             b"vb", 8 * len(stack), len(packet), *[0] * 13, b"", b"")
    slots = list(stack) + [0xdead] * (stack_depth - len(stack))  # unused slots hold whatever was there
    return head + struct.pack(f"<{stack_depth}Q", *slots) + packet + b"\xaa" * 7


SYMBOLS = {0x10: "bpf_prog_6deef7357e7b4530_bpftools_drops+0x2c3", 0x20: "bpf_trace_run4+0x8e",
           0x30: "sk_skb_reason_drop+0x90", 0x40: "__udp4_lib_rcv+0x4bc", 0x50: "ip_local_deliver_finish+0x81"}


@pytest.fixture
def names(monkeypatch):
    monkeypatch.setattr("bpftools.drop_events.named_netns", lambda: {4026532999: "bt-b-1"})
    return Names(FMT_618, ksym=lambda addr: SYMBOLS.get(addr, "[unknown]"))


def test_stack_and_packet_are_decoded_after_the_event(names):
    packet = udp_packet()
    raw = decode_raw(raw_record(stack=(0x10, 0x20, 0x30, 0x40, 0x50), packet=packet, stack_depth=8), stack_depth=8)
    assert raw.stack == (0x10, 0x20, 0x30, 0x40, 0x50) and raw.packet == packet
    event = decode_event(raw, names, 0)
    # the tracing machinery above kfree_skb is not part of the drop
    assert event.stack == ["sk_skb_reason_drop+0x90", "__udp4_lib_rcv+0x4bc", "ip_local_deliver_finish+0x81"]
    assert event.as_json()["stack"] == event.stack and "packet" not in event.as_json()
    assert event.text().endswith("\n    stack:\n      sk_skb_reason_drop+0x90\n      __udp4_lib_rcv+0x4bc\n"
                                 "      ip_local_deliver_finish+0x81")


def test_without_stack_the_field_is_null_and_an_empty_stack_says_so(names):
    plain = decode_event(decode_raw(raw_record()), names, 0)
    assert plain.stack is None and plain.as_json()["stack"] is None and "stack" not in plain.text()
    failed = decode_event(decode_raw(raw_record(stack_depth=4), stack_depth=4), names, 0)  # bpf_get_stack failed
    assert failed.stack == [] and failed.text().endswith("stack:\n      (not available)")


def test_unresolved_frames_stay_addresses(names):
    event = decode_event(decode_raw(raw_record(stack=(0xffffffff81234567,), stack_depth=1), stack_depth=1), names, 0)
    assert event.stack == ["0xffffffff81234567"]


def test_hidden_kallsyms_is_noticed():
    visible = "ffffffff81000000 T _stext\nffffffff81000010 t foo\n"
    hidden = "0000000000000000 T _stext\n0000000000000000 t foo\n"
    assert not addresses_hidden(visible) and addresses_hidden(hidden) and addresses_hidden("")
    assert hidden_note(visible) is None and "CAP_SYSLOG" in hidden_note(hidden)


# --- pcapng -------------------------------------------------------------------------------------------

def test_wire_length_from_the_ip_header():
    packet = udp_packet(b"x" * 300)
    assert wire_length(packet[:256], fallback=1) == 328  # truncated capture: the IP total length
    v6 = bytes([0x60, 0, 0, 0, 0, 16, 17, 64]) + b"\0" * 32
    assert wire_length(v6, fallback=1) == 56
    assert wire_length(bytes([0x60]) + b"\0" * 39, fallback=1400) == 1400  # payload length 0 (GSO/jumbo)


def test_pcapng_file_has_the_packets_and_the_comments(tmp_path):
    from scapy.utils import RawPcapNgReader

    path = tmp_path / "drops.pcapng"
    with DropPcap(str(path)) as pcap:
        assert pcap.write(drop_event(stack=["sk_skb_reason_drop+0x90", "__udp4_lib_rcv+0x4bc"]))
        assert pcap.write(drop_event(ifname=None, ifindex=7, reason="NETFILTER_DROP", reason_code=12, ts=1_700_000_001.5))
        assert not pcap.write(drop_event(family="arp", packet=b"\0\1\x08\0"))  # LINKTYPE_RAW holds IP only
        assert not pcap.write(drop_event(packet=b""))
    assert (pcap.written, pcap.skipped) == (2, 2)
    assert pcap.note() == (f"wrote 2 dropped packet(s) to {path}; 2 drop(s) without IP bytes not written "
                           "(non-IP, or no header in the skb)")
    reader = RawPcapNgReader(str(path))
    records = list(reader)
    assert [data for data, _meta in records] == [udp_packet(), udp_packet()]
    assert {linktype for linktype, *_ in reader.interfaces} == {LINKTYPE_RAW} and len(reader.interfaces) == 1
    first, second = (meta for _data, meta in records)
    assert first.comments == [b"bpftools drop: reason NO_SOCKET (3), netns bt-b-1, interface vb (ifindex 3), "
                              b"location __udp4_lib_rcv+0x4bc",
                              b"stack: sk_skb_reason_drop+0x90 < __udp4_lib_rcv+0x4bc"]
    assert second.comments == [b"bpftools drop: reason NETFILTER_DROP (12), netns bt-b-1, interface if7 "
                               b"(ifindex 7), location __udp4_lib_rcv+0x4bc"]
    assert ((second.tshigh << 32) | second.tslow) == 1_700_000_001_500_000  # microseconds
    assert first.wirelen == len(udp_packet())


def test_empty_pcapng_is_still_a_valid_file(tmp_path):
    path = tmp_path / "none.pcapng"
    with DropPcap(str(path)):
        pass
    if shutil.which("tcpdump"):
        proc = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0 and "link-type RAW" in proc.stderr, proc.stderr


@pytest.mark.skipif(not shutil.which("tcpdump"), reason="tcpdump not installed")
def test_tcpdump_reads_the_file(tmp_path):
    path = tmp_path / "drops.pcapng"
    with DropPcap(str(path)) as pcap:
        pcap.write(drop_event())
        pcap.write(drop_event(ts=1_700_000_002.0))
    proc = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all("IP 10.11.0.1.40000 > 10.11.0.2.53" in line for line in lines), proc.stdout


def test_unwritable_pcap_is_a_one_line_error(tmp_path):
    with pytest.raises(BpftoolsError, match=r"cannot write --pcap .*/missing/x.pcapng: No such file or directory"):
        with DropPcap(str(tmp_path / "missing" / "x.pcapng")):
            pass


def test_comments_name_the_drop():
    assert drop_comments(drop_event(location=None, stack=[])) == [
        "bpftools drop: reason NO_SOCKET (3), netns bt-b-1, interface vb (ifindex 3), location ?"]


def test_snaplen_needs_pcap():
    result = CliRunner().invoke(cli, ["trace-drops", "--snaplen", "100"])
    assert result.exit_code == 2 and "--snaplen is the length of packets written with --pcap FILE" in result.output


def test_record_tail_order_matches_the_decoder():
    """decode_raw reads STACK_DEPTH u64 slots right after the event, then the packet bytes."""
    text = BPF_SOURCE.read_text()
    record = text[text.index("struct drop_record {"):text.index("};", text.index("struct drop_record {"))]
    lines = [line.strip() for line in record.splitlines()]
    assert lines.index("struct drop_event event;") < lines.index("u64 stack[STACK_DEPTH];") \
        < lines.index("u8 packet[SNAPLEN];")
    assert EVENT_LAYOUT.size % 8 == 0  # the u64 stack slots start right after the event, no padding
