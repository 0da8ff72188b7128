"""trace-drops cost under a flood of drops, against bpftrace counting the same tracepoint.

A UDP flood from namespace A is dropped in namespace B by an iptables raw/PREROUTING rule
(NETFILTER_DROP, >= 100k drops/s). In one run, alternating the tools:
- none:       the flood alone (the senders' CPU per drop is the baseline)
- bpftrace:   `bpftrace -e 'tracepoint:skb:kfree_skb { @[args->reason] = count(); }'`
- bpftools:   `bpftools trace-drops --all-netns --summary` (counts everything, like bpftrace)
- bpftools+filters: the same with `--dport 9 --exclude-reason NOT_SPECIFIED` (the packet is parsed
              and the reason looked up in the kernel; every flood packet still matches)
- events:     `bpftools trace-drops --all-netns --json --no-hints` (one event per drop: the reader
              cannot keep up with a flood, the kernel counts what it could not send)
- events+stack+pcap: the same with `--stack --pcap FILE` (bpf_get_stack and 256 packet bytes per event)
CPU per million drops = the tool process's CPU during the flood (/proc/PID/stat) + its BPF
program's run time (bpf_stats run_time_ns; `kernel.bpf_stats_enabled` is switched on for the
run and restored). The senders' CPU per drop minus the baseline is also shown: it includes
what bpf_stats cannot see (the perf-tracepoint glue around a BPF program).
Start-up: from exec to the first drop the tool's program counted (a 1 kHz trickle of drops
runs while it starts). Counts: both tools attached together (bpftrace filtered to B's netns
inode, bpftools --netns B) during a bounded burst, against the rule's packet counter.

Run as root: .venv/bin/python benchmarks/bench_trace_drops.py [--seconds S] [--rounds N] [--senders N]
Targets: CPU per drop no worse than bpftrace; counts identical; start-up under 2 s.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bpftools import bpfsys  # noqa: E402
from bpftools.cli.output import table  # noqa: E402
from bpftools.kernel.drop_reasons import kfree_skb_format  # noqa: E402
from bpftools.netlink import netns_inode  # noqa: E402
from bpftools.topology import Topology, run  # noqa: E402
from bpftools.traffic import UdpFlood, resolve_neighbour, send_udp  # noqa: E402

A_ADDR, B_ADDR, PORT = "10.71.0.1", "10.71.0.2", 9
BPFTRACE_ONE_LINER = "tracepoint:skb:kfree_skb { @[args->reason] = count(); }"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TRACING_TYPES = ("tracepoint", "raw_tracepoint")


def process_cpu(pid: int) -> float:
    """utime + stime of a process (seconds)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tracing_prog_ids(pid: int) -> set:
    """Ids of the tracepoint programs a process holds (from its fds)."""
    ids = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fdinfo"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
    return {i for i in ids if (info := bpfsys.prog_info(i)) and info.type in TRACING_TYPES}


def prog_stats(prog_id: int) -> tuple:
    """(run_time_ns, run_cnt) of a program (struct bpf_prog_info offsets 192/200; needs bpf_stats)."""
    try:
        fd = bpfsys.prog_fd_by_id(prog_id)
    except OSError:
        return 0, 0
    try:
        return struct.unpack_from("<QQ", bpfsys._info(fd, 232), 192)
    finally:
        os.close(fd)


def stats_of(ids: set) -> tuple:
    runs = [prog_stats(i) for i in ids]
    return sum(r[0] for r in runs), sum(r[1] for r in runs)


@contextlib.contextmanager
def bpf_stats_enabled():
    path = "/proc/sys/kernel/bpf_stats_enabled"
    with open(path) as f:
        old = f.read().strip()
    with open(path, "w") as f:
        f.write("1")
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write(old)


class Trickle(threading.Thread):
    """One dropped packet per millisecond while a tool starts (to see when it first counts)."""

    def __init__(self, ns: str):
        super().__init__(daemon=True)
        self.ns, self.stop = ns, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            send_udp(self.ns, B_ADDR, PORT, count=20, gap=0.001)


def start_tool(cmd: list, trickle_ns: str, timeout: float = 30) -> tuple:
    """Popen, and seconds from exec until its tracepoint program first ran."""
    trickle = Trickle(trickle_ns)
    trickle.start()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while time.monotonic() - t0 < timeout:
            ids = tracing_prog_ids(proc.pid)
            if ids and stats_of(ids)[1] > 0:
                return proc, time.monotonic() - t0, ids
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited: {proc.stderr.read()}")
            time.sleep(0.002)
        raise RuntimeError(f"{cmd[0]} did not attach within {timeout}s")
    finally:
        trickle.stop.set()
        trickle.join()


def stop_tool(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    out, _err = proc.communicate(timeout=60)
    return out


def rule_packets(ns: str) -> int:
    out = run("iptables", "-t", "raw", "-nvxL", "PREROUTING", netns=ns).stdout.splitlines()
    return int(out[2].split()[0])


def tool_commands(ns_b: str, pcap_path: str) -> dict:
    bpftools = [sys.executable, "-m", "bpftools", "trace-drops", "--all-netns", "--json"]
    events = bpftools + ["--no-hints"]
    return {
        "bpftrace": ["bpftrace", "-e", BPFTRACE_ONE_LINER],
        "bpftools": bpftools + ["--summary"],
        "bpftools+filters": bpftools + ["--summary", "--dport", str(PORT), "--exclude-reason", "NOT_SPECIFIED"],
        "events": events,
        "events+stack+pcap": events + ["--stack", "--pcap", pcap_path],
    }


def flood_round(tool: str, cmd: list, ns_a: str, ns_b: str, seconds: float, senders: int) -> dict:
    proc, startup, ids = (None, None, set())
    if cmd:
        proc, startup, ids = start_tool(cmd, ns_a)
        time.sleep(0.2)
    try:
        run("iptables", "-t", "raw", "-Z", "PREROUTING", netns=ns_b)
        cpu0 = process_cpu(proc.pid) if proc else 0.0
        bpf0 = stats_of(ids)
        flood = UdpFlood(ns_a, B_ADDR, PORT, seconds, processes=senders)
        with flood:
            flood.start()
            flood.wait()
        drops = rule_packets(ns_b)
        cpu1 = process_cpu(proc.pid) if proc else 0.0
        bpf1 = stats_of(ids)
    finally:
        if proc:
            stop_tool(proc)
    return {"tool": tool, "drops": drops, "rate": drops / seconds, "startup": startup,
            "tool_cpu": cpu1 - cpu0, "bpf_ns": bpf1[0] - bpf0[0], "bpf_runs": bpf1[1] - bpf0[1],
            "sender_cpu": flood.cpu_seconds}


def start_quietly(cmd: list, ready_mark: str = "", timeout: float = 30) -> subprocess.Popen:
    """Start a tool without generating drops: wait for its ready line (or its programs) + a margin."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    if ready_mark:
        for line in proc.stderr:
            if line.startswith(ready_mark):
                return proc
            if time.monotonic() > deadline:
                break
        raise RuntimeError(f"{cmd[0]} never became ready")
    while not tracing_prog_ids(proc.pid):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} did not load its program")
        time.sleep(0.01)
    time.sleep(1.0)  # program loaded; attaching follows within milliseconds
    return proc


def counts_identical(ns_a: str, ns_b: str, seconds: float, senders: int) -> dict:
    """Both tools attached together (no drops while they start); a bounded burst; compare
    with the rule's own packet counter, zeroed once both are attached."""
    inode = netns_inode(ns_b)
    reason = kfree_skb_format().reason_code("NETFILTER_DROP")
    script = ("tracepoint:skb:kfree_skb /((struct sk_buff *)args->skbaddr)->dev->nd_net.net->ns.inum == "
              f"{inode}/ {{ @[args->reason] = count(); }}")
    bt = start_quietly(["bpftrace", "-e", script])
    ours = None
    try:
        ours = start_quietly([sys.executable, "-m", "bpftools", "trace-drops", "--netns", ns_b, "--summary",
                              "--json"], ready_mark="bpftools: ready")
        run("iptables", "-t", "raw", "-Z", "PREROUTING", netns=ns_b)
        flood = UdpFlood(ns_a, B_ADDR, PORT, seconds, processes=senders)
        with flood:
            flood.start()
            flood.wait()
        time.sleep(0.3)
        rule = rule_packets(ns_b)
    finally:
        ours_out = stop_tool(ours) if ours else ""
        bt_out = stop_tool(bt)
    summary = [json.loads(line) for line in ours_out.splitlines() if '"summary"' in line][0]
    ours_count = sum(d["count"] for d in summary["drops"] if d["reason"] == "NETFILTER_DROP")
    bt_counts = {int(k) if k.isdigit() else k: int(v) for k, v in re.findall(r"@\[(\w+)\]: (\d+)", bt_out)}
    bt_count = bt_counts.get(reason, bt_counts.get("SKB_DROP_REASON_NETFILTER_DROP", 0))
    return {"rule": rule, "bpftools": ours_count, "bpftrace": bt_count, "events_lost": summary["events_lost"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="flood length per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per tool")
    parser.add_argument("--senders", type=int, default=2, help="flooding processes")
    args = parser.parse_args()

    with Topology("bench") as topo, bpf_stats_enabled(), tempfile.TemporaryDirectory() as tmp:
        ns_a, ns_b = topo.netns("a"), topo.netns("b")
        topo.veth(ns_a, "fa", ns_b, "fb", f"{A_ADDR}/24", f"{B_ADDR}/24")
        run("iptables", "-t", "raw", "-A", "PREROUTING", "-p", "udp", "--dport", str(PORT), "-j", "DROP",
            netns=ns_b)
        resolve_neighbour(ns_a, B_ADDR)
        commands = {"none": None, **tool_commands(ns_b, os.path.join(tmp, "drops.pcapng"))}
        results = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, cmd in commands.items():
                results[name].append(flood_round(name, cmd, ns_a, ns_b, args.seconds, args.senders))
        counts = counts_identical(ns_a, ns_b, 1.0, args.senders)

    def med(name, key):
        values = [r[key] for r in results[name] if r[key] is not None]
        return statistics.median(values) if values else None

    base_sender = med("none", "sender_cpu") / med("none", "drops") * 1e9
    rows, per_million, bpf_ns = [], {}, {}
    for name in commands:
        drops = med(name, "drops")
        sender_ns = med(name, "sender_cpu") / drops * 1e9
        if name == "none":
            rows.append((name, f"{med(name, 'rate') / 1e3:.0f}k", "-", "-", "-", f"{sender_ns:.0f}", "-"))
            continue
        tool_cpu = statistics.median(r["tool_cpu"] / r["drops"] * 1e6 for r in results[name])
        bpf_cpu = statistics.median(r["bpf_ns"] / 1e9 / r["drops"] * 1e6 for r in results[name])
        per_million[name] = tool_cpu + bpf_cpu
        bpf_ns[name] = statistics.median(r["bpf_ns"] / r["bpf_runs"] for r in results[name] if r["bpf_runs"])
        rows.append((name, f"{med(name, 'rate') / 1e3:.0f}k", f"{tool_cpu:.3f}", f"{bpf_cpu:.3f}",
                     f"{tool_cpu + bpf_cpu:.3f}", f"{sender_ns:.0f} (+{sender_ns - base_sender:.0f})",
                     f"{med(name, 'startup'):.2f}"))
    print(f"flood: {args.senders} senders x {args.seconds:.0f}s, {args.rounds} rounds (medians); "
          "CPU in seconds per million drops")
    print(table(["TOOL", "DROPS/S", "TOOL CPU", "BPF PROG", "TOTAL", "SENDER NS/DROP", "START S"], rows))
    ratio_cpu = per_million["bpftools"] / per_million["bpftrace"]
    ratio_start = med("bpftools", "startup") / med("bpftrace", "startup")
    print(f"\nratio bpftools/bpftrace: CPU per drop {ratio_cpu:.2f}x, start-up {ratio_start:.2f}x")
    print(f"ratio BPF program ns per drop: filters on/off {bpf_ns['bpftools+filters'] / bpf_ns['bpftools']:.2f}x, "
          f"events with --stack --pcap / events {bpf_ns['events+stack+pcap'] / bpf_ns['events']:.2f}x")
    same = counts["bpftools"] == counts["bpftrace"] == counts["rule"]
    print(f"counts (both attached, one burst): iptables rule {counts['rule']}, bpftools {counts['bpftools']} "
          f"(events_lost {counts['events_lost']}), bpftrace {counts['bpftrace']} -> "
          f"{'identical' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
