"""Throwaway network topologies built from namespaces, veth pairs and bridges.

Used by `doctor` probes, the demo/lab and the test fixtures. Everything is created
through `ip`, so what we build is exactly what a user would type, and every
`Topology` removes what it made when its `with` block ends, also on errors.
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import uuid
from typing import List, Optional, Sequence

from .errors import BpftoolsError, survive

log = logging.getLogger(__name__)


def run(*args: str, netns: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, inside `netns` when given; a failure is a one-line BpftoolsError."""
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise BpftoolsError(f"`{' '.join(cmd)}` failed: {detail[0] if detail else proc.returncode}")
    return proc


def unique_name(prefix: str) -> str:
    """A namespace/link-safe unique name (interface names max 15 characters)."""
    return f"{prefix}{uuid.uuid4().hex[:6]}"


class Topology(contextlib.AbstractContextManager):
    """Namespaces and links created here are deleted on exit (namespaces take their links along)."""

    def __init__(self, prefix: str = "bt"):
        self.prefix = prefix
        self.namespaces: List[str] = []

    def netns(self, role: str = "") -> str:
        name = unique_name(f"{self.prefix}-{role}-" if role else f"{self.prefix}-")
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "link", "set", "lo", "up", netns=name)
        return name

    def veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str,
             addr_a: Optional[str] = None, addr_b: Optional[str] = None) -> None:
        """A veth pair with one end in each namespace, both up, optionally addressed (CIDR)."""
        tmp_a, tmp_b = unique_name("bta"), unique_name("btb")
        run("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b, netns=ns_a)
        run("ip", "link", "set", tmp_b, "netns", ns_b, netns=ns_a)
        run("ip", "link", "set", tmp_a, "name", name_a, netns=ns_a)
        run("ip", "link", "set", tmp_b, "name", name_b, netns=ns_b)
        for ns, name, addr in ((ns_a, name_a, addr_a), (ns_b, name_b, addr_b)):
            if addr:
                run("ip", "addr", "add", addr, "dev", name, netns=ns)
            run("ip", "link", "set", name, "up", netns=ns)

    def bridge(self, ns: str, name: str, ports: Sequence[str], addr: Optional[str] = None) -> None:
        run("ip", "link", "add", name, "type", "bridge", netns=ns)
        for port in ports:
            run("ip", "link", "set", port, "master", name, netns=ns)
        if addr:
            run("ip", "addr", "add", addr, "dev", name, netns=ns)
        run("ip", "link", "set", name, "up", netns=ns)

    def sysctl(self, ns: str, key: str, value) -> None:
        # /proc/sys/net resolves against the namespace of the writer: write from inside it.
        run("sysctl", "-qw", f"{key}={value}", netns=ns)

    def close(self) -> None:
        for name in reversed(self.namespaces):
            with survive(log, "removing namespace %s", name, level=logging.WARNING):
                kill_netns_processes(name)
                run("ip", "netns", "del", name, check=False)
        self.namespaces.clear()

    def __exit__(self, *exc) -> None:
        self.close()


def kill_netns_processes(name: str) -> None:
    """Processes left in a namespace (a ping, a tcpdump) would keep it alive: end them.
    Only those `ip netns exec` started (they have a mount namespace of their own): a process
    that entered the namespace for a moment with setns() (bpftools status, serve, another
    test's tracer listing every namespace) shares ours, and leaves by itself."""
    proc = run("ip", "netns", "pids", name, check=False)
    ours = os.stat("/proc/self/ns/mnt").st_ino
    for pid in proc.stdout.split():
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{pid}/ns/mnt").st_ino != ours:
                os.kill(int(pid), 9)
