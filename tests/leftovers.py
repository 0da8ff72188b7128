"""What the suite must not leave behind, and how to remove it.

A snapshot is taken when the session starts and again when it ends; whatever is new at the end
(bpftools programs and processes, pins, namespaces, non-default qdiscs in our namespace, Docker
objects of the tests, test containerds and their shims) was left by the suite: the run fails naming each, then it is removed so the
next run starts clean. Snapshots, not prefixes: a test that created something under an unusual
name is caught too, and what was there before the run (someone else's) is never touched.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Tuple

from bpftools import bpfsys
from bpftools.attach import PROG_NAME_PREFIX

RELEASE_GRACE = 10.0  # seconds: the kernel frees a killed process's programs after an RCU grace period


def _programs() -> FrozenSet[Tuple[int, str]]:
    """(id, name) of every loaded bpftools program."""
    found = set()
    for prog_id in bpfsys.prog_ids():
        info = bpfsys.prog_info(prog_id)
        if info and info.name.startswith(PROG_NAME_PREFIX):
            found.add((info.id, info.name))
    return frozenset(found)


def _pins() -> FrozenSet[str]:
    return frozenset(os.path.join(d, f) for d, _dirs, files in os.walk(bpfsys.PIN_ROOT) for f in files)


def _namespaces() -> FrozenSet[str]:
    try:
        return frozenset(os.listdir("/run/netns"))
    except FileNotFoundError:
        return frozenset()


def _qdiscs() -> FrozenSet[Tuple[str, str]]:
    """(interface, kind) of the clsact/ingress qdiscs in our namespace (tests never add any there)."""
    proc = subprocess.run(["tc", "-j", "qdisc", "show"], capture_output=True, text=True)
    try:
        entries = json.loads(proc.stdout or "[]")
    except ValueError:
        return frozenset()
    return frozenset((q.get("dev", "?"), q["kind"]) for q in entries if q.get("kind") in ("clsact", "ingress"))


def _cmdline(pid: int) -> List[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]


SESSION_VARIABLE = "BPFTOOLS_TEST_SESSION"  # set by the session, inherited by all it starts


def _session_of(pid: int) -> str:
    """The test session a process was started by ('' for none): its environment says."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        for entry in f.read().split(b"\0"):
            if entry.startswith(SESSION_VARIABLE.encode() + b"="):
                return entry.split(b"=", 1)[1].decode(errors="replace")
    return ""


def _ancestors(pid: int) -> set:
    """pid and its ancestors (a `timeout` or shell that runs this pytest is not another session)."""
    found = set()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return found


def other_sessions() -> List[int]:
    """PIDs of other pytest processes running beside this one (engineers share a machine): what
    is new may be theirs, so it is only reported, never removed. (A session's own marker is set
    after it started, so /proc/PID/environ of pytest itself does not show it: go by the name.)"""
    found = []
    mine = _ancestors(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        with contextlib.suppress(OSError):
            argv = _cmdline(int(entry))
            if any(os.path.basename(a) in ("pytest", "py.test") for a in argv[:2]) or \
                    "pytest" in argv[argv.index("-m") + 1:argv.index("-m") + 2] if "-m" in argv else False:
                found.append(int(entry))
    return found


def _processes() -> FrozenSet[Tuple[int, str]]:
    """(pid, command line) of running bpftools commands (`python -m bpftools`, the entry point)
    that this test session started."""
    found = set()
    mine = os.environ.get(SESSION_VARIABLE)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            argv = _cmdline(int(entry))
            is_module = "-m" in argv and "bpftools" in argv[argv.index("-m") + 1:argv.index("-m") + 2]
            is_script = len(argv) > 1 and os.path.basename(argv[1]) == "bpftools"
            if (is_module or is_script) and mine and _session_of(int(entry)) == mine:
                found.add((int(entry), " ".join(argv)))
    return frozenset(found)


def _docker_objects() -> FrozenSet[Tuple[str, str]]:
    """(kind, name) of the containers, networks and images the tests name with their prefix."""
    import docker_env

    if not os.path.exists(docker_env.SOCKET):
        return frozenset()
    try:
        api = docker_env._client().api
        found = {("container", c["Names"][0].lstrip("/")) for c in api.containers(all=True)}
        found |= {("network", n["Name"]) for n in api.networks()}
        found |= {("image", tag) for image in api.images() for tag in image.get("RepoTags") or []}
    except Exception:
        return frozenset()  # no Engine answers: nothing of ours can be there
    return frozenset(o for o in found if o[1].split(":")[-1].startswith(docker_env.PREFIX)
                     or o[1].startswith(docker_env.PREFIX))


def _runtimes() -> FrozenSet[Tuple[int, str]]:
    """(pid, command line) of the test containerds (tests/cri_env.py) and their shims."""
    import cri_env

    found = set()
    for pid in cri_env.leftover_processes():
        with contextlib.suppress(OSError):
            found.add((pid, " ".join(_cmdline(pid))))
    return frozenset(found)


@dataclass(frozen=True)
class Snapshot:
    programs: FrozenSet[Tuple[int, str]] = field(default_factory=frozenset)
    pins: FrozenSet[str] = field(default_factory=frozenset)
    namespaces: FrozenSet[str] = field(default_factory=frozenset)
    qdiscs: FrozenSet[Tuple[str, str]] = field(default_factory=frozenset)
    processes: FrozenSet[Tuple[int, str]] = field(default_factory=frozenset)
    docker: FrozenSet[Tuple[str, str]] = field(default_factory=frozenset)
    runtimes: FrozenSet[Tuple[int, str]] = field(default_factory=frozenset)

    @classmethod
    def take(cls) -> "Snapshot":
        return cls(_programs(), _pins(), _namespaces(), _qdiscs(), _processes(), _docker_objects(), _runtimes())


@dataclass
class Leftover:
    description: str
    remove: Callable[[], None]
    surely_ours: bool = False  # started by this session (its environment says so)


def _session_of_or_empty(pid: int) -> str:
    try:
        return _session_of(pid)
    except OSError:
        return ""


def _remove_process(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)


def _remove_namespace(name: str) -> None:
    from bpftools.topology import kill_netns_processes, run

    kill_netns_processes(name)
    run("ip", "netns", "del", name, check=False)


def _remove_docker(kind: str, name: str) -> None:
    import docker_env

    api = docker_env._client().api
    {"container": lambda: api.remove_container(name, force=True, v=True),
     "network": lambda: api.remove_network(name),
     "image": lambda: api.remove_image(name, force=True)}[kind]()


def _remove_netlink_attachments() -> None:
    from bpftools.status import remove_attachments

    remove_attachments(None, None, force=False)


def new_since(before: Snapshot) -> List[Leftover]:
    """What exists now and did not when `before` was taken, each with how to remove it."""
    now = Snapshot.take()
    if now.programs - before.programs:  # a killed process's programs are freed a moment later
        deadline = time.monotonic() + RELEASE_GRACE
        while time.monotonic() < deadline and _programs() - before.programs:
            time.sleep(0.1)
        now = Snapshot.take()
    found: List[Leftover] = []
    for pid, argv in sorted(now.processes - before.processes):
        found.append(Leftover(f"bpftools process {pid}: {argv}", lambda pid=pid: _remove_process(pid), True))
    mine = os.environ.get(SESSION_VARIABLE)
    for pid, argv in sorted(now.runtimes - before.runtimes):  # a test containerd or shim: its pods' namespaces too
        ours = bool(mine) and _session_of_or_empty(pid) == mine
        found.append(Leftover(f"test containerd process {pid}: {argv}", lambda pid=pid: _remove_process(pid), ours))
    for name in sorted(now.docker - before.docker, reverse=True):  # containers before networks and images
        found.append(Leftover(f"docker {name[0]} {name[1]}", lambda name=name: _remove_docker(*name)))
    for name in sorted(now.namespaces - before.namespaces):
        found.append(Leftover(f"network namespace {name}", lambda name=name: _remove_namespace(name)))
    for dev, kind in sorted(now.qdiscs - before.qdiscs):
        found.append(Leftover(f"{kind} qdisc on {dev} (this namespace)",
                              lambda dev=dev, kind=kind: subprocess.run(["tc", "qdisc", "del", "dev", dev, kind],
                                                                        capture_output=True)))
    for pin in sorted(now.pins - before.pins):
        found.append(Leftover(f"pin {pin}", lambda pin=pin: bpfsys.unpin(pin)))
    programs = sorted(now.programs - before.programs)
    if programs:
        # Netlink attachments hold programs after their process is gone: `detach --all` removes them.
        described = ", ".join(f"{name} (id {prog_id})" for prog_id, name in programs)
        found.append(Leftover(f"bpftools programs still loaded: {described}", _remove_netlink_attachments))
    return found


def remove(leftovers: List[Leftover]) -> Dict[str, str]:
    """Remove each; description -> error for those that could not be removed."""
    errors = {}
    for item in leftovers:
        try:
            item.remove()
        except Exception as exc:  # keep removing the rest; the run fails anyway
            errors[item.description] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return errors
