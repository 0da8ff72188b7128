"""`bpftools demo` end to end: the ping fails, the drops are shown with reason and hint, the
fixes work, and nothing is left behind."""
from __future__ import annotations

import subprocess

from bpftools_proc import cli


def demo_namespaces() -> set:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("demo-")}


def test_demo_shows_both_failures_and_cleans_up():
    before = demo_namespaces()
    proc = cli("demo", timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("ping FAILS") == 2 and out.count("ping works") == 2, out
    assert "/r-client NETFILTER_DROP icmp 10.88.1.2 > 10.88.2.2 echo-request" in out
    assert "policy DROP of chain FORWARD (table filter)" in out
    assert "/r-client IP_RPFILTER icmp 10.88.9.2 > 10.88.2.2 echo-request" in out
    assert "max(all=1, r-client=0) = 1" in out and "via 10.88.2.2 dev r-server, not r-client" in out
    assert "IP_RPFILTER     2" in out or "IP_RPFILTER  " in out  # the summary table
    assert "network removed." in out
    assert demo_namespaces() <= before  # ours are gone (others' demos may run concurrently)
