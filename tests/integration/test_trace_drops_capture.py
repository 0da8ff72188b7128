"""trace-drops --stack and --pcap on real drops: UDP and TCP to closed ports in a namespace this
test built; the stack must name the kernel functions that dropped, the pcapng file must hold
exactly those packets (read back with tcpdump) with the drop described in each packet's
comment (read back with scapy)."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bpftools.traffic import resolve_neighbour, send_udp, tcp_connect
from bpftools_proc import BpftoolsProcess
from waiting import wait_until

DROP_FUNCTIONS = ("kfree_skb", "sk_skb_reason_drop", "kfree_skb_reason", "kfree_skb_list_reason")


def traced(*args: str) -> BpftoolsProcess:
    return BpftoolsProcess("trace-drops", "--no-hints", "--proto", "udp", *args)


def stopped(proc: BpftoolsProcess, drops: int) -> BpftoolsProcess:
    """Stop once `drops` drop events were printed (the rest of the ring buffer is read at the end)."""
    proc.wait_for(lambda lines: len([e for e in lines if e["type"] == "drop"]) >= drops, f"{drops} drop event(s)")
    assert proc.stop() == 0, proc.stderr
    return proc


def frame_names(stack: list) -> list:
    return [frame.split("+")[0] for frame in stack]


@pytest.mark.parametrize("tracepoint", ["raw", "perf"])
def test_stack_names_the_functions_that_dropped(veth_pair, monkeypatch, tracepoint):
    if tracepoint == "perf":  # the fallback's stack starts in other tracing code, which is left out too
        monkeypatch.setenv("BPFTOOLS_TRACEPOINT", "perf")
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with traced("--json", "--netns", veth_pair.ns_b, "--dport", "7101", "--stack") as proc:
        assert ("via tracepoint" in proc.stderr) == (tracepoint == "perf")
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 7101, count=2, gap=0.02)
        stopped(proc, drops=2)
    events = [e for e in proc.json_lines() if e["type"] == "drop"]
    assert [e["reason"] for e in events] == ["NO_SOCKET"] * 2, events
    for event in events:
        names = frame_names(event["stack"])
        assert names[0] in DROP_FUNCTIONS, event["stack"]  # innermost: the free itself, no tracing glue
        assert event["location"].split("+")[0] == "__udp4_lib_rcv"
        assert event["location"] in event["stack"]  # the caller of kfree_skb is the next frame
        assert "ip_local_deliver_finish" in names and all("+0x" in frame for frame in event["stack"])


def test_stack_in_text_output(veth_pair):
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with traced("--netns", veth_pair.ns_b, "--dport", "7102", "--stack", "--count", "1") as proc:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 7102, count=2, gap=0.02)
        assert proc.wait() == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "NO_SOCKET udp" in lines[0] and lines[1] == "    stack:", proc.stdout
    assert lines[2].strip().split("+")[0] in DROP_FUNCTIONS
    assert any(line.strip().startswith("__udp4_lib_rcv+0x") for line in lines[2:]), proc.stdout


def kallsyms_hidden_without_cap_syslog() -> bool:
    probe = subprocess.run(["setpriv", "--inh-caps=-syslog", "--bounding-set=-syslog", "head", "-1",
                            "/proc/kallsyms"], capture_output=True, text=True)
    return probe.returncode == 0 and probe.stdout.startswith("0000000000000000")


def test_without_cap_syslog_stacks_degrade_with_a_note(veth_pair):
    if not kallsyms_hidden_without_cap_syslog():
        pytest.skip("this kernel shows /proc/kallsyms addresses even without CAP_SYSLOG (perf_event_paranoid <= 1)")
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    cmd = ["setpriv", "--inh-caps=-syslog", "--bounding-set=-syslog", sys.executable, "-m", "bpftools",
           "trace-drops", "--json", "--no-hints", "--netns", veth_pair.ns_b, "--dport", "7103", "--stack",
           "--duration", "60", "--count", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        err = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            err.append(line)
            if not line or line.startswith("bpftools: ready"):
                break
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 7103, count=3, gap=0.05)
        out, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stderr = "".join(err) + rest
    assert proc.returncode == 0, stderr
    assert "bpftools: note: kernel symbols are hidden" in stderr and "CAP_SYSLOG" in stderr
    import json

    event = json.loads(out.splitlines()[0])
    assert event["stack"] and all(frame.startswith("0x") for frame in event["stack"]), event
    assert event["location"].startswith("0x")


def test_pcap_holds_the_dropped_packets_with_their_story(veth_pair, tmp_path):
    from scapy.utils import RawPcapNgReader

    path = tmp_path / "drops.pcapng"
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with BpftoolsProcess("trace-drops", "--json", "--no-hints", "--netns", veth_pair.ns_b, "--port", "7201",
                         "--pcap", str(path)) as proc:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 7201, count=3, payload=b"dropped-by-bpftools", gap=0.02)
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 7202, count=2, gap=0.02)  # filtered out: not in the file
        tcp_connect(veth_pair.ns_a, veth_pair.addr_b, 7201)  # a SYN to a closed port
        stopped(proc, drops=4)
    events = [e for e in proc.json_lines() if e["type"] == "drop"]
    assert len(events) >= 4, events  # 3 datagrams, the SYN (and maybe its retransmission)
    assert f"bpftools: wrote {len(events)} dropped packet(s) to {path}" in proc.stderr

    dump = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True)
    assert dump.returncode == 0 and "link-type RAW" in dump.stderr, dump.stderr
    lines = dump.stdout.splitlines()
    a, b = veth_pair.addr_a, veth_pair.addr_b
    udp_lines = [line for line in lines if f"IP {a}." in line and f" > {b}.7201: UDP, length 19" in line]
    syn_lines = [line for line in lines if f" > {b}.7201: Flags [S]" in line]
    assert len(udp_lines) == 3 and syn_lines and len(lines) == len(events), dump.stdout

    records = list(RawPcapNgReader(str(path)))
    assert b"dropped-by-bpftools" in records[0][0]
    for (data, meta), event in zip(records, events):
        assert meta.comments == [f"bpftools drop: reason NO_SOCKET ({event['reason_code']}), netns {veth_pair.ns_b}, "
                                 f"interface vb (ifindex {event['ifindex']}), location {event['location']}".encode()]
        assert data[0] >> 4 == 4 and meta.wirelen == len(data)  # whole packets: shorter than the snap length



def test_snaplen_truncates_and_the_stack_goes_into_the_comments(veth_pair, tmp_path):
    from scapy.utils import RawPcapNgReader

    path = tmp_path / "short.pcapng"
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with traced("--json", "--netns", veth_pair.ns_b, "--dport", "7301", "--pcap", str(path), "--snaplen", "40",
                "--stack") as proc:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 7301, count=1, payload=b"x" * 100)
        stopped(proc, drops=1)
    (data, meta), = list(RawPcapNgReader(str(path)))
    assert len(data) == 40 and meta.wirelen == 20 + 8 + 100
    assert meta.comments[1].startswith(b"stack: ") and b"__udp4_lib_rcv+0x" in meta.comments[1]
    dump = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True)
    assert dump.returncode == 0 and ".7301: UDP, length 100" in dump.stdout, dump.stdout


def test_ipv6_drops_in_the_pcap_with_ports_filtered(veth_pair, tmp_path):
    """IPv6 goes through the same file (LINKTYPE_RAW tells the versions apart), and --dport
    matches IPv6 ports."""
    path = tmp_path / "v6.pcapng"
    from bpftools.topology import run

    run("ip", "addr", "add", "fd00:71::1/64", "dev", veth_pair.veth_a, "nodad", netns=veth_pair.ns_a)
    run("ip", "addr", "add", "fd00:71::2/64", "dev", veth_pair.veth_b, "nodad", netns=veth_pair.ns_b)
    resolve_neighbour(veth_pair.ns_a, "fd00:71::2")
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with traced("--json", "--netns", veth_pair.ns_b, "--dport", "7501", "--pcap", str(path)) as proc:
        send_udp(veth_pair.ns_a, "fd00:71::2", 7501, count=2, gap=0.02)
        send_udp(veth_pair.ns_a, "fd00:71::2", 7502, count=2, gap=0.02)  # other port
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 7501, count=1)  # IPv4 in the same file
        stopped(proc, drops=3)
    events = [e for e in proc.json_lines() if e["type"] == "drop"]
    assert [(e["family"], e["dport"], e["reason"]) for e in events] == [("ipv6", 7501, "NO_SOCKET")] * 2 + [
        ("ipv4", 7501, "NO_SOCKET")], events
    dump = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True)
    lines = dump.stdout.splitlines()
    assert dump.returncode == 0 and len(lines) == 3, dump.stdout + dump.stderr
    assert all("IP6 fd00:71::1." in line and "> fd00:71::2.7501: UDP" in line for line in lines[:2]), dump.stdout
    assert f"IP {veth_pair.addr_a}." in lines[2] and f"> {veth_pair.addr_b}.7501: UDP" in lines[2]


def packets_in(path) -> int:
    dump = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True)
    return len(dump.stdout.splitlines())


def test_pcap_is_readable_while_tracing_and_after_a_kill(veth_pair, tmp_path):
    """Each packet is flushed as written: tcpdump reads the file during the run, and a SIGKILL
    loses nothing already reported."""
    import signal

    path = tmp_path / "live.pcapng"
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with traced("--netns", veth_pair.ns_b, "--dport", "7601", "--pcap", str(path)) as proc:
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 7601, count=3, gap=0.02)
        assert wait_until(lambda: packets_in(path), "3 packets in the pcap file while tracing",
                          done=lambda n: n >= 3) == 3
        proc.stop(signal.SIGKILL)
    dump = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True)
    assert dump.returncode == 0 and dump.stdout.count(".7601: UDP") == 3, dump.stdout + dump.stderr
