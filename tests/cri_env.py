"""A real CRI runtime for the tests: containerd with its CRI plugin and the standard CNI plugins.

- The session starts its own containerd (own root, state, sockets and CNI config under a new
  temp dir, where no runtime answers yet: the node's own containerd is never used). It runs inside a network namespace the session creates (the "node"), through
  `nsenter --net` (the mount namespace stays the host's, so pod namespaces it mounts under
  /run/netns/cni-… and its snapshots are visible to bpftools): the CNI bridge plugin's bridge,
  its iptables chains (CNI-FORWARD, CNI-ADMIN, masquerade, portmap) and ip_forward all live in
  that namespace; the host's are never touched.
- No image registry: the sandbox (pause) image is built from busybox-static as a docker-archive
  tarball and imported with `ctr -n k8s.io images import`.
- Pods are created through the CRI API (`RunPodSandbox`) as the kubelet does, with unique names,
  and are stopped and removed after the test, pass or fail; at the end of the session the image
  is removed, containerd stopped, its shims and mounts cleaned up, and the node namespace deleted.
- Where containerd, runc or the CNI plugins are missing (bootstrap.sh installs them), or it cannot
  start, the tests that need it skip with the reason.

Fixtures (imported by tests/integration/conftest.py): `cri_runtime` (the running runtime: its
endpoint, node namespace and CNI subnet) and `cri_env`, a factory: `cri_env.pod("web-0",
namespace="shop")` runs a pod sandbox and returns its id, IP and network namespace path.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from bpftools import docker_engine

CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
TEST_DIR_PREFIX = "bt-cri-"  # the temp dir of each test containerd: /tmp/bt-cri-XXXX (a unix socket path is short)
START_TIMEOUT = 60
CALL_TIMEOUT = 60  # RunPodSandbox on a busy 2-vCPU machine: image unpack, runc, CNI
K8S_NAMESPACE = "k8s.io"  # containerd's namespace for the CRI plugin
CNI_BRIDGE = "cni-bt0"
PAUSE_REPOSITORY = "bpftools-test/pause"


def cni_bin_dir() -> Optional[str]:
    for path in CNI_BIN_DIRS:
        if os.path.exists(os.path.join(path, "bridge")):
            return path
    return None


def missing() -> Optional[str]:
    """Why the runtime cannot run here, or None."""
    if os.geteuid() != 0:
        return "CRI tests need root"
    for binary in ("containerd", "ctr", "runc", "containerd-shim-runc-v2", "nsenter"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (bootstrap.sh installs containerd)"
    if cni_bin_dir() is None:
        return "the CNI plugins are not installed (bootstrap.sh installs containernetworking-plugins)"
    if not os.path.exists(docker_engine.BUSYBOX):
        return f"{docker_engine.BUSYBOX} missing (bootstrap.sh installs busybox-static)"
    return None


# --- the sandbox image ------------------------------------------------------------

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pause_image_archive(reference: str) -> bytes:
    """A docker-archive tarball (`docker save` layout) of one busybox layer whose entrypoint
    sleeps for ever: the sandbox's "pause" process."""
    layer = docker_engine.busybox_rootfs()
    config = json.dumps({
        "architecture": "amd64" if os.uname().machine == "x86_64" else "arm64", "os": "linux",
        "config": {"Entrypoint": ["/bin/sleep", "2147483647"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{_sha256(layer)}"]},
    }).encode()
    config_name = f"{_sha256(config)}.json"
    layer_name = f"{_sha256(layer)}/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [reference], "Layers": [layer_name]}]).encode()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in ((config_name, config), (layer_name, layer), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


# --- containerd ---------------------------------------------------------------------

CONFIG = """\
version = 2
root = "{dir}/root"
state = "{dir}/state"
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{dir}/containerd.sock"

[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # what the CRI sandbox needs on this kind of machine (measured): no AppArmor, no cgroups of its own
  disable_apparmor = true
  restrict_oom_score_adj = true
  disable_hugetlb_controller = true
  disable_cgroup = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{dir}/net.d"
    max_conf_num = 1
"""


def cni_config(name: str, subnet: str, data_dir: str) -> Dict:
    """A bridge + host-local network with the portmap and firewall plugins, as most clusters
    built on the reference plugins have it."""
    return {
        "cniVersion": "0.4.0", "name": name,
        "plugins": [
            {"type": "bridge", "bridge": CNI_BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": subnet}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall", "backend": "iptables"},
        ],
    }


def _ns_run(netns: str, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net=/run/netns/{netns}", *argv], capture_output=True, text=True,
                          check=check, timeout=timeout)


@dataclass
class Runtime:
    """A containerd with the CRI plugin, and where its pods' network lives."""
    endpoint: str  # the socket path
    node_netns: Optional[str]  # the namespace containerd (and CNI's bridge) runs in; None for a foreign one
    subnet: str
    gateway: str
    image: str
    directory: Optional[str] = None
    process: Optional[subprocess.Popen] = None
    created: List[str] = field(default_factory=list)  # sandbox ids not removed yet

    def client(self):
        from bpftools.cri import Runtime as Client

        return Client(self.endpoint, "containerd", timeout=CALL_TIMEOUT)

    def ctr(self, *argv: str, stdin: Optional[bytes] = None) -> subprocess.CompletedProcess:
        return subprocess.run(["ctr", "--address", self.endpoint, "-n", K8S_NAMESPACE, *argv], input=stdin,
                              capture_output=True, check=True, timeout=CALL_TIMEOUT)

    def node(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a host binary (iptables, ip) in the node's namespace."""
        return _ns_run(self.node_netns, *argv, check=check)


def _answers(endpoint: str) -> bool:
    if not os.path.exists(endpoint):
        return False
    from bpftools.cri import Runtime as Client

    client = Client(endpoint, "containerd", timeout=5)
    try:
        client.version()
        return True
    except Exception:
        return False
    finally:
        client.close()


def _test_processes(directory: str) -> List[int]:
    """containerd and the shims of the containerd whose files are in `directory`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            if any(directory in arg for arg in argv) and os.path.basename(argv[0]).startswith("containerd"):
                found.append(int(entry))
    return found


def _kill(pids: List[int], timeout: float = 20) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") and not _zombie(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _unmount_under(directory: str) -> None:
    with open("/proc/self/mountinfo") as f:
        points = [line.split(" ")[4] for line in f]
    for point in sorted((p for p in points if p.startswith(directory + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def start(token: str) -> Runtime:
    """containerd in a new node namespace with its own CNI network; raises RuntimeError with the reason."""
    directory = tempfile.mkdtemp(prefix=TEST_DIR_PREFIX)
    node = f"bt-crinode-{token}"
    octet = int(token[:2], 16) % 200 + 20
    subnet, gateway = f"10.{octet}.77.0/24", f"10.{octet}.77.1"
    image = f"{PAUSE_REPOSITORY}:{TEST_DIR_PREFIX}{token}"
    runtime = Runtime(f"{directory}/containerd.sock", node, subnet, gateway, f"docker.io/{image}", directory)
    try:
        subprocess.run(["ip", "netns", "add", node], check=True, capture_output=True)
        _ns_run(node, "ip", "link", "set", "lo", "up")
        os.makedirs(f"{directory}/net.d")
        with open(f"{directory}/net.d/10-bt.conflist", "w") as f:
            json.dump(cni_config(f"bt-{token}", subnet, f"{directory}/ipam"), f)
        with open(f"{directory}/config.toml", "w") as f:
            f.write(CONFIG.format(dir=directory, image=runtime.image, cni_bin=cni_bin_dir()))
        log = open(f"{directory}/containerd.log", "ab")
        runtime.process = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{node}", "containerd", "--config", f"{directory}/config.toml"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(runtime.endpoint):
            if runtime.process.poll() is not None:
                tail = Path(f"{directory}/containerd.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"containerd exited with {runtime.process.returncode}: {' | '.join(tail)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not answer within {START_TIMEOUT}s ({directory}/containerd.log)")
            time.sleep(0.1)
        runtime.ctr("images", "import", "-", stdin=pause_image_archive(image))
        return runtime
    except BaseException:
        stop(runtime)
        raise


def remove_pod(runtime: Runtime, sandbox_id: str) -> None:
    client = runtime.client()
    try:
        api = client.api
        client.call("StopPodSandbox", api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), api.StopPodSandboxResponse)
        client.call("RemovePodSandbox", api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id),
                    api.RemovePodSandboxResponse)
    finally:
        client.close()
    with contextlib.suppress(ValueError):
        runtime.created.remove(sandbox_id)


def stop(runtime: Runtime) -> None:
    """Remove what the session created in the runtime; stop the runtime if the session started it."""
    errors = []
    for sandbox_id in list(runtime.created):
        try:
            remove_pod(runtime, sandbox_id)
        except Exception as exc:
            errors.append(f"pod sandbox {sandbox_id[:12]}: {exc}")
    if runtime.process is not None and runtime.process.poll() is None:
        with contextlib.suppress(Exception):
            runtime.ctr("images", "rm", runtime.image)
    if runtime.directory:
        if runtime.process is not None:
            _kill([runtime.process.pid])
            runtime.process.wait(timeout=30)
        _kill(_test_processes(runtime.directory))  # shims of sandboxes that could not be removed
        _unmount_under(runtime.directory)
        shutil.rmtree(runtime.directory, ignore_errors=True)
    if runtime.node_netns and os.path.exists(f"/run/netns/{runtime.node_netns}"):
        subprocess.run(["ip", "netns", "del", runtime.node_netns], capture_output=True)
    if errors:
        raise AssertionError("CRI teardown failed: " + "; ".join(errors))


def leftover_processes() -> List[int]:
    """containerd processes (and shims) of test runtimes: their directory is /tmp/bt-cri-…"""
    return _test_processes(os.path.join(tempfile.gettempdir(), TEST_DIR_PREFIX))


# --- pods -------------------------------------------------------------------------

@dataclass
class RunningPod:
    id: str
    name: str
    namespace: str
    uid: str
    ip: str
    netns_path: str  # /var/run/netns/cni-…
    pid: int

    @property
    def label(self) -> str:
        return f"pod:{self.namespace}/{self.name}"

    def exec(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a host binary (ping, ip, iptables) in the pod's network namespace only."""
        return subprocess.run(["nsenter", f"--net={self.netns_path}", *argv], capture_output=True, text=True,
                              check=check, timeout=timeout)


class PodFactory:
    """Runs uniquely named pod sandboxes; `close()` stops and removes all of them."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.token = uuid.uuid4().hex[:6]
        self.ids: List[str] = []

    def name(self, suffix: str) -> str:
        return f"{suffix}-{self.token}"

    def pod(self, name: str, namespace: str = "default", unique: bool = True, host_network: bool = False,
            **labels: str) -> RunningPod:
        """RunPodSandbox as the kubelet sends it (metadata, hostname, log directory, labels,
        a pod network namespace); returns the ready sandbox."""
        from bpftools.cri import pod_from_status

        name = self.name(name) if unique else name
        uid = str(uuid.uuid4())
        client = self.runtime.client()
        api = client.api
        kube_labels = {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace,
                       "io.kubernetes.pod.uid": uid, **labels}
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
            hostname="" if host_network else name, log_directory=os.path.join(self.runtime.directory or "/tmp", "pods", f"{namespace}_{name}_{uid}"),
            labels=kube_labels, annotations={"kubernetes.io/config.source": "api"},
            linux=api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(network=api.NODE if host_network else api.POD, pid=api.CONTAINER,
                                                      ipc=api.POD))))
        try:
            answer = client.call("RunPodSandbox", api.RunPodSandboxRequest(config=config), api.RunPodSandboxResponse)
            self.ids.append(answer.pod_sandbox_id)
            self.runtime.created.append(answer.pod_sandbox_id)
            status = client.sandbox_status(answer.pod_sandbox_id)
        finally:
            client.close()
        pod = pod_from_status(status, "containerd")
        assert pod is not None and pod.pid and (pod.netns_path or host_network), f"sandbox {pod} has no namespace"
        return RunningPod(pod.id, name, namespace, uid, pod.ip, pod.netns_path or f"/proc/{pod.pid}/ns/net", pod.pid)

    def remove(self, pod: RunningPod) -> None:
        remove_pod(self.runtime, pod.id)
        self.ids.remove(pod.id)

    def close(self) -> None:
        errors = []
        for sandbox_id in reversed(self.ids):
            try:
                remove_pod(self.runtime, sandbox_id)
            except Exception as exc:
                errors.append(f"{sandbox_id[:12]}: {exc}")
        self.ids.clear()
        if errors:
            raise AssertionError("pod teardown failed: " + "; ".join(errors))


# --- fixtures -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def cri_runtime() -> Iterator[Runtime]:
    """This session's containerd with the CRI plugin and the local sandbox image (started here: its
    socket is in a new temp dir, where none answers); or skip with the reason."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    from bpftools import cri

    try:
        runtime = start(uuid.uuid4().hex[:6])
    except Exception as exc:
        pytest.skip(f"containerd with the CRI plugin cannot start here: {exc}")
    cri.configure(runtime.endpoint)  # in-process selectors; commands get --cri-endpoint
    try:
        yield runtime
    finally:
        cri.configure(None)
        stop(runtime)


@pytest.fixture
def cri_env(cri_runtime) -> Iterator[PodFactory]:
    """A factory: `cri_env.pod("web-0", namespace="shop")`; all pods removed after the test."""
    factory = PodFactory(cri_runtime)
    try:
        yield factory
    finally:
        factory.close()
