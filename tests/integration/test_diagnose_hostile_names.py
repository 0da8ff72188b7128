"""A tenant names an interface of its own namespace with shell syntax or terminal escapes, and its
link goes down: `diagnose ping` explains it, prints no control byte, and its printed fix, pasted
into bash as an administrator would, brings the link up without running the tenant's command
(issue 20). The kernel forbids `/` and white space in interface names, so the canaries are
`$(touch${IFS}f)` and a backquoted `touch${IFS}f`: run, they would create the file f."""
from __future__ import annotations

import subprocess
import sys

import pytest

from bpftools.topology import run

CANARY = "f"
NAMES = ["$(touch${IFS}f)", "`touch${IFS}f`", "-x\x1b[31m;\x1b]0;t\x07'"]


def _printed_fix(stdout: str):
    """The commands under `  fix:` in diagnose's human output (indented by four spaces)."""
    lines = stdout.splitlines()
    start = lines.index("  fix:") + 1
    return [line[4:] for line in lines[start:] if line.startswith("    ")]


def _pings(ns: str, dst: str, attempts: int = 1) -> bool:
    """A single ping works, of `attempts` tried one after the other."""
    return any(run("ping", "-n", "-q", "-c", "1", "-W", "1", dst, netns=ns, check=False).returncode == 0
               for _ in range(attempts))


@pytest.mark.parametrize("hostile", NAMES, ids=["dollar-paren", "backquotes", "dash-escapes-quote"])
def test_the_printed_fix_for_a_hostile_interface_is_safe_to_paste(topo, tmp_path, hostile):
    ns_a, ns_b = topo.netns("a"), topo.netns("b")
    topo.veth(ns_a, "va", ns_b, hostile, "10.11.0.1/24", "10.11.0.2/24")
    run("ip", "link", "set", "dev", hostile, "down", netns=ns_b)
    assert not _pings(ns_a, "10.11.0.2")

    proc = subprocess.run([sys.executable, "-m", "bpftools", "diagnose", "ping", "10.11.0.2", "--netns", ns_a,
                           "--count", "2", "--timeout", "1"], capture_output=True, timeout=120, cwd=tmp_path)
    out = proc.stdout.decode()
    assert proc.returncode == 1, out + proc.stderr.decode()
    assert "link_down" in out
    assert not any(b < 0x20 and b != 0x0A or b == 0x7F for b in proc.stdout + proc.stderr)
    fix = _printed_fix(out)
    assert fix, out
    for command in fix:   # as the administrator runs it: pasted into bash
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, (command, done.stderr)
    assert not (tmp_path / CANARY).exists(), f"pasting {fix} ran the interface name's command"
    # the first ping may meet the neighbour entry still INCOMPLETE from the failed pings (its ARP
    # probes spent while the link was down), which drops it: a few attempts
    assert _pings(ns_a, "10.11.0.2", attempts=5), fix
