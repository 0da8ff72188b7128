"""`bpftools demo`, two classic ping failures, end to end.

For each, a lab topology is built, broken, diagnosed (the human story `bpftools diagnose
ping` prints), fixed with the diagnosis' own fix commands, and pinged again:
1. two namespaces routed through a router, strict rp_filter with an asymmetric return route;
2. two namespaces on a bridge with br_netfilter on and the FORWARD policy DROP (Docker's story).
The labs live in namespaces with their own prefix (never a user's `bpftlab-*` lab) and are
removed at the end, also on errors or Ctrl-C.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import uuid
from typing import Callable, Iterator, List, Tuple

from . import lab
from .diagnose import diagnose_ping, story
from .topology import run

Echo = Callable[[str], None]
STORIES: List[Tuple[str, str]] = [("routed", "rp_filter"), ("bridge", "bridge_netfilter")]


@contextlib.contextmanager
def demo_lab_prefix() -> Iterator[str]:
    """Our own lab prefix for the duration of the demo."""
    previous = os.environ.get(lab.PREFIX_ENV)
    os.environ[lab.PREFIX_ENV] = f"{lab.PREFIX}-demo{uuid.uuid4().hex[:6]}"
    try:
        yield os.environ[lab.PREFIX_ENV]
    finally:
        if previous is None:
            os.environ.pop(lab.PREFIX_ENV, None)
        else:
            os.environ[lab.PREFIX_ENV] = previous


def ping_works(ns: str, dst: str, echo: Echo) -> bool:
    echo(f"$ ip netns exec {ns} ping -c 2 -W 1 {dst}")
    ok = run("ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", dst, netns=ns, check=False).returncode == 0
    echo("  ping works" if ok else "  ping FAILS")
    return ok


def tell_story(topology: str, fault: str, echo: Echo) -> bool:
    """One story: up, break, diagnose, apply the fix, ping again. True if the fix worked."""
    topo = lab.up(topology)
    echo(f"\n== lab {topology}: {topo.summary}")
    broken = lab.break_(topology, fault)
    echo(f"$ bpftools lab break {topology} {fault}    # {broken.summary}")
    ns, dst = topo.ping(fault)
    echo(f"$ bpftools diagnose ping {dst} --netns {ns}")
    result = diagnose_ping(dst, ns, count=3, timeout=1.0)
    echo("\n".join("  " + line for line in story(result).splitlines()))
    if not result["causes"] or not result["causes"][0]["fix"]:
        echo("  (no fix to apply)")
        return False
    echo("apply the first fix:")
    for command in result["causes"][0]["fix"]:
        echo(f"$ {command}")
        run(*shlex.split(command))
    return ping_works(ns, dst, echo)


def run_demo(echo: Echo) -> bool:
    """Every story, each torn down after it; True if every fix made the ping work."""
    results = []
    with demo_lab_prefix():
        for topology, fault in STORIES:
            try:
                results.append(tell_story(topology, fault, echo))
            finally:
                lab.down(topology)
    return all(results)
