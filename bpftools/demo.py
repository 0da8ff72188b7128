"""`bpftools demo`, classic ping failures, end to end.

For each, a lab topology is built, broken, diagnosed (the human story `bpftools diagnose
ping` prints), fixed with the diagnosis' own fix commands, and pinged again:
1. two namespaces routed through a router, strict rp_filter with an asymmetric return route;
2. two namespaces on a bridge with br_netfilter on and the FORWARD policy DROP (Docker's story);
3. a host that cannot ping its own container on a macvlan network (the child of its LAN interface);
4. pods on two nodes of a VXLAN overlay, where the far node's firewall drops the tunnel's UDP port
   (the ping's own packets are never seen dropped: their outer packets are);
5. where a Docker Engine answers: a container whose own firewall drops pings, diagnosed from
   the host (the walk enters the container's namespace).
The labs live in namespaces with their own prefix (never a user's `bpftlab-*` lab) and are
removed at the end, also on errors or Ctrl-C.
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
import uuid
from typing import Callable, Iterator, List, Optional, Tuple

from . import docker_engine, lab
from .commands import Command, argv_of, run_argv
from .diagnose import diagnose_ping, story
from .errors import BpftoolsError, survive
from .topology import run

log = logging.getLogger(__name__)

Echo = Callable[[str], None]
STORIES: List[Tuple[str, str]] = [("routed", "rp_filter"), ("bridge", "bridge_netfilter"),
                                  ("macvlan", "macvlan_parent_isolation"), ("overlay-l2", "tunnel_firewall")]


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


def ping_works(ns: Optional[str], dst: str, echo: Echo) -> bool:
    """A short ping from lab namespace `ns` (None: from here)."""
    echo(f"$ {Command(argv_of('ping -c 2 -W 1 {}', dst), ns).render()}")
    ok = run("ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", dst, netns=ns, check=False).returncode == 0
    echo("  ping works" if ok else "  ping FAILS")
    return ok


def diagnose_and_fix(dst: str, ns: Optional[str], echo: Echo) -> bool:
    """`bpftools diagnose ping`, its story, then its first fix applied: each command as printed,
    run from its argv (no shell)."""
    echo("$ " + Command(("bpftools", "diagnose", "ping", dst) + (("--netns", ns) if ns else ())).render())
    result = diagnose_ping(dst, ns, count=3, timeout=1.0)
    echo("\n".join("  " + line for line in story(result).splitlines()))
    if result.first is None or not result.first.fix:
        echo("  (no fix to apply)")
        return False
    echo("apply the first fix:")
    for command in result.first.fix:
        echo(f"$ {command.render()}")
        done = subprocess.run(run_argv(command), capture_output=True, text=True)
        if done.returncode != 0:
            echo(f"  failed: {(done.stderr or done.stdout).strip()}")
            return False
    return True


def tell_story(topology: str, fault: str, echo: Echo) -> Optional[bool]:
    """One story: up, break, diagnose, apply the fix, ping again. True if the fix worked; None
    when the kernel cannot build the topology (a tunnel module it lacks)."""
    try:
        topo = lab.up(topology)
    except BpftoolsError as exc:
        if not lab.topology(topology).requires:
            raise
        echo(f"\n(no {topology} story: {exc})")
        return None
    echo(f"\n== lab {topology}: {topo.summary}")
    broken = lab.break_(topology, fault)
    echo(f"$ bpftools lab break {topology} {fault}    # {broken.summary}")
    ns, dst = topo.ping(fault)
    return diagnose_and_fix(dst, ns, echo) and ping_works(ns, dst, echo)


def docker_story(echo: Echo) -> Optional[bool]:
    """The Docker story, where a Docker Engine answers: a container drops echo requests in its own
    firewall; diagnosed from the host, the walk enters the container. Its container and image are
    removed at the end. None when Docker is not available."""
    engine = docker_engine.client()
    if engine is None or not os.path.exists(docker_engine.BUSYBOX):
        echo("\n(no Docker story: no Docker Engine answers, or busybox-static is missing)")
        return None
    token = uuid.uuid4().hex[:6]
    image = docker_engine.import_busybox(engine, "bpftools-demo", token)
    name = f"bpftools-demo-{token}"
    try:
        engine.containers.run(image, ["sleep", "600"], name=name, detach=True, network="bridge")
        pid, ip = _running(engine, name)
        echo(f"\n== docker: container {name} on Docker's default bridge; its own firewall drops pings")
        drop = Command(argv_of("iptables -A INPUT -p icmp --icmp-type echo-request -j DROP"), f"pid:{pid}")
        echo(f"$ {drop.render()}")
        subprocess.run(run_argv(drop), check=True, capture_output=True)
        return diagnose_and_fix(ip, None, echo) and ping_works(None, ip, echo)
    finally:
        with survive(log, "removing the demo's container %s", name, level=logging.WARNING):
            engine.api.remove_container(name, force=True, v=True)
        with survive(log, "removing the demo's image %s", image, level=logging.WARNING):
            engine.api.remove_image(image, force=True)


def _running(engine, name: str, timeout: float = 30) -> Tuple[int, str]:
    """(PID, IP address) of the container once it runs."""
    deadline = time.monotonic() + timeout
    while True:
        attrs = engine.api.inspect_container(name)
        state, ip = attrs["State"], attrs["NetworkSettings"]["Networks"].get("bridge", {}).get("IPAddress")
        if state.get("Running") and state.get("Pid") and ip:
            return state["Pid"], ip
        if time.monotonic() > deadline or state.get("Status") in ("exited", "dead"):
            raise BpftoolsError(f"demo container {name} did not start: {state.get('Error') or state.get('Status')}")
        time.sleep(0.1)


def run_demo(echo: Echo) -> bool:
    """Every story, each torn down after it; True if every fix made the ping work."""
    results = []
    with demo_lab_prefix():
        for topology, fault in STORIES:
            try:
                results.append(tell_story(topology, fault, echo) is not False)
            finally:
                lab.down(topology)
    results.append(docker_story(echo) is not False)
    return all(results)
