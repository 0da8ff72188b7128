"""`trace-drops --summary` counts in the kernel; for >= 1,000 dropped packets they must equal
the kernel's own counters for the same traffic (iptables rule/policy packet counters,
IPReversePathFilter in the namespace's /proc/net/netstat)."""
from __future__ import annotations

import re

from bpftools.topology import run
from bpftools.traffic import resolve_neighbour, send_udp
from bpftools_proc import BpftoolsProcess
from waiting import settled

PACKETS = 1500
GAP = 0.0001  # keep veth's backlog from overflowing: every packet should reach the rule


def summary_count(proc: BpftoolsProcess, netns: str, ifname: str, reason: str) -> int:
    summaries = [e for e in proc.json_lines() if e["type"] == "summary"]
    assert len(summaries) == 1, proc.stdout
    assert summaries[0]["events_lost"] == 0
    return sum(d["count"] for d in summaries[0]["drops"]
               if (d["netns"], d["ifname"], d["reason"]) == (netns, ifname, reason))


def iptables_packets(ns: str, chain: str) -> tuple:
    """(policy packets, first rule's packets) from `iptables -nvxL CHAIN`."""
    out = run("iptables", "-nvxL", chain, netns=ns).stdout
    policy = re.search(r"policy \w+ (\d+) packets", out)
    rules = [line.split() for line in out.splitlines()[2:] if line.strip()]
    return int(policy.group(1)) if policy else 0, int(rules[0][0]) if rules else 0


def netstat(ns: str, name: str) -> int:
    lines = run("cat", "/proc/net/netstat", netns=ns).stdout.splitlines()
    for header, values in zip(lines[::2], lines[1::2]):
        fields = dict(zip(header.split()[1:], values.split()[1:]))
        if name in fields:
            return int(fields[name])
    raise AssertionError(f"{name} not in /proc/net/netstat")


def test_summary_equals_iptables_rule_counter(veth_pair):
    ns_b = veth_pair.ns_b
    run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "DROP", netns=ns_b)
    resolve_neighbour(veth_pair.ns_a, veth_pair.addr_b)
    with BpftoolsProcess("trace-drops", "--netns", ns_b, "--summary", "--json") as proc:
        run("iptables", "-Z", "INPUT", netns=ns_b)
        send_udp(veth_pair.ns_a, veth_pair.addr_b, 9, count=PACKETS, gap=GAP)
        _, rule_packets = settled(lambda: iptables_packets(ns_b, "INPUT"), "the INPUT rule's counter")
        assert proc.stop() == 0, proc.stderr
    assert rule_packets >= 1000
    assert summary_count(proc, ns_b, "vb", "NETFILTER_DROP") == rule_packets


def test_summary_equals_iptables_policy_counter(routed):
    run("iptables", "-P", "FORWARD", "DROP", netns=routed.router)
    resolve_neighbour(routed.left, routed.right_addr)
    with BpftoolsProcess("trace-drops", "r-left", "--netns", routed.router, "--summary", "--json") as proc:
        run("iptables", "-Z", "FORWARD", netns=routed.router)
        send_udp(routed.left, routed.right_addr, 5001, count=PACKETS, gap=GAP)
        policy_packets, _ = settled(lambda: iptables_packets(routed.router, "FORWARD"), "the FORWARD policy's counter")
        assert proc.stop() == 0, proc.stderr
    assert policy_packets >= 1000
    assert summary_count(proc, routed.router, "r-left", "NETFILTER_DROP") == policy_packets


def test_summary_equals_ip_reverse_path_filter_counter(routed, topo):
    run("ip", "addr", "add", "10.21.9.2/32", "dev", "eth0", netns=routed.left)
    run("ip", "route", "add", "10.21.9.0/24", "via", routed.right_addr, netns=routed.router)
    topo.sysctl(routed.router, "net.ipv4.conf.all.rp_filter", 1)
    resolve_neighbour(routed.left, routed.right_addr)
    with BpftoolsProcess("trace-drops", "--netns", routed.router, "--summary", "--json") as proc:
        before = netstat(routed.router, "IPReversePathFilter")
        send_udp(routed.left, routed.right_addr, 5002, count=PACKETS, src="10.21.9.2", gap=GAP)
        kernel = settled(lambda: netstat(routed.router, "IPReversePathFilter"), "IPReversePathFilter") - before
        assert proc.stop() == 0, proc.stderr
    assert kernel >= 1000
    assert summary_count(proc, routed.router, "r-left", "IP_RPFILTER") == kernel
