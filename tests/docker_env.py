"""Real Docker for the tests: the Engine, a local busybox image, containers and networks.

- `dockerd` is started only if no Engine answers, and stopped at the end only if this test
  suite started it and no other running test session (several engineers share a machine)
  still uses it. Where it cannot start, the tests that need it skip with the reason.
- No image registry is reachable: the image is built from the static busybox binary with
  `docker import`, under a unique tag, and removed at the end.
- Containers and networks get unique names and are removed at teardown, pass or fail.

Fixtures (imported by tests/integration/conftest.py): `docker_engine` (an SDK client),
`docker_image` (the image tag) and `docker_env`, a factory: `docker_env.run("web")` runs a
container (`network=`, `cap_add=` NET_ADMIN by default), `docker_env.network("n", icc=False)`
creates a bridge network (`driver="macvlan", options={"parent": IFACE}`: a macvlan network on an
interface the test created); both are removed after the test.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import pytest

from bpftools import docker_engine as engine_api  # (the `docker_engine` fixture below takes the name)

SOCKET = "/var/run/docker.sock"
STATE_DIR = Path("/run/bpftools-tests-docker")  # who uses the dockerd the tests started
LOCK = STATE_DIR / "lock"
STARTED_MARK = STATE_DIR / "started-dockerd.pid"
USERS_DIR = STATE_DIR / "users"
DOCKERD_LOG = STATE_DIR / "dockerd.log"
DOCKERD_ARGS: List[str] = []  # the distribution's defaults (its socket is SOCKET)
BUSYBOX = engine_api.BUSYBOX
START_TIMEOUT = 90  # seconds; dockerd's first start (overlay2, iptables) is slow on a busy machine
PREFIX = "bt-"  # every container and network the tests create starts with this
CREATED: set = set()  # containers and networks of this test process not yet removed


def leftovers() -> List[str]:
    """Containers and networks this test process created that still exist."""
    if not CREATED:
        return []
    try:
        engine = _client()
        found = {c["Names"][0].lstrip("/") for c in engine.api.containers(all=True)}
        found |= {n["Name"] for n in engine.api.networks()}
    except Exception:
        return []
    return [f"docker object {name}" for name in sorted(CREATED & found)]


def _client():
    import docker

    return docker.DockerClient(base_url=f"unix://{SOCKET}", timeout=60)


def _answers() -> bool:
    try:
        _client().ping()
        return True
    except Exception:
        return False


_started: Dict[int, subprocess.Popen] = {}  # the dockerd this process started, to reap it


def _pid_alive(pid: int) -> bool:
    """Running and not a zombie."""
    if pid in _started:
        return _started[pid].poll() is None
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _start_dockerd() -> int:
    """Start dockerd in its own session (a Ctrl-C to pytest must not kill it midway)."""
    if shutil.which("dockerd") is None:
        raise RuntimeError("dockerd is not installed (bootstrap.sh installs docker.io)")
    log = open(DOCKERD_LOG, "ab")
    proc = subprocess.Popen(["dockerd", *DOCKERD_ARGS], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = DOCKERD_LOG.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"dockerd exited with {proc.returncode}: {' | '.join(tail)}")
        if _answers():
            _started[proc.pid] = proc
            return proc.pid
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"dockerd did not answer within {START_TIMEOUT}s (log: {DOCKERD_LOG})")


def _stop_dockerd(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def acquire_engine() -> None:
    """Make sure an Engine answers; register this test session as one of its users."""
    with _locked():
        USERS_DIR.mkdir(exist_ok=True)
        (USERS_DIR / str(os.getpid())).touch()
        if _answers():
            return
        STARTED_MARK.write_text(str(_start_dockerd()))


def release_engine() -> None:
    """Unregister; the last user stops dockerd if the test suite started it."""
    with _locked():
        with contextlib.suppress(FileNotFoundError):
            (USERS_DIR / str(os.getpid())).unlink()
        users = [p for p in USERS_DIR.iterdir() if p.name.isdigit() and _pid_alive(int(p.name))]
        if users or not STARTED_MARK.exists():
            return
        pid = int(STARTED_MARK.read_text())
        STARTED_MARK.unlink()
        if _pid_alive(pid):
            _stop_dockerd(pid)


def import_image(engine) -> str:
    """`docker import` the busybox root filesystem under a unique tag; returns the tag."""
    return engine_api.import_busybox(engine, "bpftools-test-busybox", f"{PREFIX}{uuid.uuid4().hex[:8]}")


@dataclass
class RunningContainer:
    name: str
    id: str
    pid: int  # State.Pid: /proc/PID/ns/net is its network namespace
    sandbox_key: str  # /var/run/docker/netns/…
    ips: Dict[str, str]  # network name -> IPv4 address

    @property
    def ip(self) -> str:
        return next(iter(self.ips.values()))

    @property
    def netns_path(self) -> str:
        return f"/proc/{self.pid}/ns/net"

    def exec(self, *cmd: str) -> subprocess.CompletedProcess:
        """Run a command inside the container (docker exec through the API)."""
        result = _client().containers.get(self.id).exec_run(list(cmd))
        return subprocess.CompletedProcess(cmd, result.exit_code, result.output.decode(errors="replace"), "")

    def host_exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a host binary (iptables, ip, ping) inside the container's network namespace only."""
        return subprocess.run(["nsenter", f"--net={self.netns_path}", *cmd], capture_output=True, text=True,
                              check=check, timeout=60)


class DockerFactory:
    """Creates uniquely named containers and networks; `close()` removes all of them."""

    def __init__(self, engine, image: str):
        self.engine = engine
        self.image = image
        self.token = uuid.uuid4().hex[:6]
        self.containers: List[str] = []  # names, also in CREATED until removed
        self.networks: List[str] = []

    def name(self, suffix: str) -> str:
        return f"{PREFIX}{self.token}-{suffix}"

    def network(self, suffix: str, icc: bool = True, options: Optional[Dict[str, str]] = None,
                driver: str = "bridge", subnet: Optional[str] = None, gateway: Optional[str] = None,
                ip_range: Optional[str] = None) -> str:
        """A bridge network; icc=False sets com.docker.network.bridge.enable_icc=false.
        `driver="macvlan", options={"parent": IFACE}`: a macvlan network on a host interface the
        test created; `subnet`/`gateway`/`ip_range`: its IPAM pool."""
        import docker

        opts = dict(options or {})
        if not icc:
            opts["com.docker.network.bridge.enable_icc"] = "false"
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
            subnet=subnet, gateway=gateway, iprange=ip_range)]) if subnet else None
        name = self.name(suffix)
        self.networks.append(name)
        CREATED.add(name)
        self.engine.networks.create(name, driver=driver, options=opts, ipam=ipam)
        return name

    def run(self, suffix: str, network: str = "bridge", cap_add: Sequence[str] = ("NET_ADMIN",),
            command: Sequence[str] = ("sleep", "3600"), **kwargs) -> RunningContainer:
        name = self.name(suffix)
        self.containers.append(name)
        CREATED.add(name)
        container = self.engine.containers.run(self.image, list(command), name=name, detach=True,
                                               network=network, cap_add=list(cap_add), **kwargs)
        return self.wait_running(container.id)

    def wait_running(self, container_id: str, timeout: float = 30) -> RunningContainer:
        deadline = time.monotonic() + timeout
        while True:
            attrs = self.engine.api.inspect_container(container_id)
            if attrs["State"]["Running"] and attrs["State"]["Pid"]:
                break
            if time.monotonic() > deadline or attrs["State"]["Status"] in ("exited", "dead"):
                raise AssertionError(f"container {attrs['Name']} did not start: {attrs['State']}")
            time.sleep(0.1)
        networks = attrs["NetworkSettings"]["Networks"] or {}
        return RunningContainer(attrs["Name"].lstrip("/"), attrs["Id"], attrs["State"]["Pid"],
                                attrs["NetworkSettings"]["SandboxKey"],
                                {net: info["IPAddress"] for net, info in networks.items() if info.get("IPAddress")})

    def stop(self, container: RunningContainer) -> None:
        """Stop (not remove) a container: its namespace goes away, the Engine still knows it."""
        self.engine.api.kill(container.id)
        self.engine.api.wait(container.id, timeout=30)

    def close(self) -> None:
        errors = []
        for name in reversed(self.containers):
            with contextlib.suppress(Exception):
                self.engine.api.remove_container(name, force=True, v=True)
            CREATED.discard(name)
        for name in reversed(self.networks):
            try:
                self.engine.api.remove_network(name)
            except Exception as exc:
                if "not found" not in str(exc).lower() and "no such" not in str(exc).lower():
                    errors.append(f"network {name}: {exc}")
            CREATED.discard(name)
        if errors:
            raise AssertionError("docker teardown failed: " + "; ".join(errors))


# --- fixtures ---------------------------------------------------------------

@pytest.fixture(scope="session")
def docker_engine():
    """An SDK client to a running Engine (started here if needed), or skip with the reason."""
    if os.geteuid() != 0:
        pytest.skip("Docker tests need root")
    try:
        import docker  # noqa: F401
    except ImportError:
        pytest.skip("the docker Python SDK is not installed (pyproject dependency `docker`)")
    try:
        acquire_engine()
    except Exception as exc:
        release_engine()
        pytest.skip(f"Docker Engine unavailable: {exc}")
    try:
        yield _client()
    finally:
        release_engine()


@pytest.fixture(scope="session")
def docker_image(docker_engine) -> Iterator[str]:
    if not os.path.exists(BUSYBOX):
        pytest.skip(f"{BUSYBOX} missing (bootstrap.sh installs busybox-static)")
    tag = import_image(docker_engine)
    try:
        yield tag
    finally:
        with contextlib.suppress(Exception):
            docker_engine.api.remove_image(tag, force=True)


@pytest.fixture
def docker_env(docker_engine, docker_image) -> Iterator[DockerFactory]:
    """A factory: `docker_env.run("web")`, `docker_env.network("n", icc=False)`; all removed after the test."""
    factory = DockerFactory(docker_engine, docker_image)
    try:
        yield factory
    finally:
        factory.close()
