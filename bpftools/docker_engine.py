"""The Docker Engine, through its API on the unix socket (the `docker` SDK).

Docker is optional: every function here answers "not available" rather than raising when
the SDK is missing, the socket is absent or the Engine does not answer (logged at debug).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/run/docker.sock"
API_TIMEOUT = 3  # seconds; a hung Engine must not hang a bpftools command


@dataclass(frozen=True)
class Container:
    """A container as the Engine reports it (only what naming its namespace needs)."""
    id: str
    name: str
    running: bool
    pid: Optional[int]  # State.Pid of a running container
    sandbox_key: Optional[str]  # NetworkSettings.SandboxKey: /var/run/docker/netns/…
    network_mode: str  # HostConfig.NetworkMode: bridge, host, none, container:ID, a network name


def socket_path() -> str:
    """The Engine's socket: DOCKER_HOST when it names a unix socket, else the default."""
    host = os.environ.get("DOCKER_HOST", "")
    return host[len("unix://"):] if host.startswith("unix://") else DEFAULT_SOCKET


_clients: Dict[str, object] = {}  # socket -> client; creating one negotiates the API version


def client():
    """A connected SDK client, or None (SDK missing, no socket, Engine not answering)."""
    path = socket_path()
    if not os.path.exists(path):
        log.debug("docker: no socket at %s", path)
        return None
    try:
        if path not in _clients:  # pinged once; a later failing call forgets it (`forget`)
            import docker

            engine = docker.DockerClient(base_url=f"unix://{path}", timeout=API_TIMEOUT)
            engine.ping()
            _clients[path] = engine
        return _clients[path]
    except Exception as exc:  # ImportError, DockerException, requests' errors: all mean "no Docker"
        log.debug("docker: engine at %s not usable: %s", path, exc)
        _clients.pop(path, None)
        return None


def _container_from_attrs(attrs: Dict) -> Container:
    state = attrs.get("State") or {}
    running = bool(state.get("Running"))
    pid = state.get("Pid") or None
    return Container(
        id=attrs["Id"],
        name=(attrs.get("Name") or "").lstrip("/"),
        running=running,
        pid=pid if running else None,
        sandbox_key=(attrs.get("NetworkSettings") or {}).get("SandboxKey") or None,
        network_mode=(attrs.get("HostConfig") or {}).get("NetworkMode") or "",
    )


def container(engine, name_or_id: str) -> Optional[Container]:
    """One container by name or (a prefix of its) id; None if the Engine knows none."""
    try:
        return _container_from_attrs(engine.api.inspect_container(name_or_id))
    except Exception as exc:  # docker.errors.NotFound, or the Engine went away
        log.debug("docker: inspect %s: %s", name_or_id, exc)
        return None


def _start_time(pid: Optional[int]) -> Optional[str]:
    """Field 22 of /proc/PID/stat: tells a process from a later one that reused its PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError, TypeError):
        return None


_inspected: Dict[str, tuple] = {}  # container id -> (Container, its process' start time)


def _inspect_running(engine, container_id: str) -> Container:
    """inspect, skipped while the container's process is the one we saw (a restart changes it)."""
    cached = _inspected.get(container_id)
    if cached and cached[1] is not None and _start_time(cached[0].pid) == cached[1]:
        return cached[0]
    found = _container_from_attrs(engine.api.inspect_container(container_id))
    _inspected[container_id] = (found, _start_time(found.pid))
    return found


def containers(engine=None, running_only: bool = False) -> List[Container]:
    """The containers the Engine knows ([] without Docker)."""
    engine = engine or client()
    if engine is None:
        return []
    try:
        summaries = engine.api.containers(all=not running_only)
        found = []
        for summary in summaries:
            try:
                if summary.get("State") == "running":
                    found.append(_inspect_running(engine, summary["Id"]))
                else:
                    found.append(_container_from_attrs(engine.api.inspect_container(summary["Id"])))
            except Exception as exc:  # removed between list and inspect
                log.debug("docker: inspect %s failed: %s", summary.get("Id", "?")[:12], exc)
        return found
    except Exception as exc:
        log.debug("docker: listing containers failed: %s", exc)
        _clients.pop(socket_path(), None)
        return []


def availability() -> Dict:
    """What `doctor` reports: socket present, API answering, Engine version."""
    path = socket_path()
    report: Dict = {"socket": path, "socket_present": os.path.exists(path), "api": False, "version": None}
    try:
        import docker  # noqa: F401
    except ImportError:
        report["detail"] = "the docker Python SDK is not installed"
        return report
    if not report["socket_present"]:
        report["detail"] = "no Docker Engine socket (dockerd not running or not installed)"
        return report
    engine = client()
    if engine is None:
        report["detail"] = "the socket exists but the Engine does not answer"
        return report
    try:
        report["version"] = engine.version().get("Version")
        report["api"] = True
        report["detail"] = "container namespaces are named docker:NAME"
    except Exception as exc:
        report["detail"] = f"the Engine does not answer: {exc}"
    return report


def bridge_networks(engine=None) -> Dict[str, Dict]:
    """Bridge interface -> {"name", "id", "icc"} for the Engine's bridge networks ({} without Docker):
    `diagnose` names the networks whose rules it explains."""
    engine = engine or client()
    if engine is None:
        return {}
    try:
        found = {}
        for net in engine.api.networks(filters={"driver": "bridge"}):
            options = net.get("Options") or {}
            bridge = options.get("com.docker.network.bridge.name") or f"br-{net['Id'][:12]}"
            icc = options.get("com.docker.network.bridge.enable_icc", "true").lower() != "false"
            found[bridge] = {"name": net.get("Name", ""), "id": net["Id"][:12], "icc": icc}
        return found
    except Exception as exc:
        log.debug("docker: listing networks failed: %s", exc)
        return {}


BUSYBOX = "/bin/busybox"  # busybox-static: runs in an image that holds nothing else


def busybox_rootfs(busybox: str = BUSYBOX) -> bytes:
    """A tar of a root filesystem holding busybox and a link per applet (no registry needed)."""
    import io
    import subprocess
    import tarfile

    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for directory in ("bin", "tmp", "etc", "proc", "sys", "dev"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            if applet != "busybox":
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
    return data.getvalue()


def import_busybox(engine, repository: str, tag: str) -> str:
    """`docker import` the busybox root filesystem as REPOSITORY:TAG; returns that reference."""
    engine.api.import_image_from_data(busybox_rootfs(), repository=repository, tag=tag,
                                      changes=['CMD ["/bin/sh"]', "ENV PATH=/bin"])
    return f"{repository}:{tag}"
