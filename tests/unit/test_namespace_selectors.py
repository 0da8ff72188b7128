"""Namespace selectors (every label is a selector); the CRI client's tests are in test_cri.py."""
import pytest

from bpftools import namespaces
from bpftools.errors import BpftoolsError
from bpftools.namespaces import label_as_path_component, label_from_path_component, parse_selector

@pytest.mark.parametrize("selector, parsed", [
    (None, ("own", "")),
    ("", ("own", "")),
    ("host", ("host", "")),
    ("bt-a-1f2e3d", ("name", "bt-a-1f2e3d")),
    ("cni-8f2b6c1d-3e4a-5b6c-7d8e-9f0a1b2c3d4e", ("name", "cni-8f2b6c1d-3e4a-5b6c-7d8e-9f0a1b2c3d4e")),
    ("docker:web", ("docker", "web")),
    ("docker:3935fc02956c", ("docker", "3935fc02956c")),
    ("pod:default/api-7d9f8c6b5-x2k4q", ("pod", "default/api-7d9f8c6b5-x2k4q")),
    ("pid:1234", ("pid", "1234")),
    ("pid:1234 (nginx)", ("pid", "1234")),
    ("pid:77 (kworker/u8:2-events)", ("pid", "77")),
    ("pid:9 (my proc (x))", ("pid", "9")),
    ("inode:4026532281", ("inode", "4026532281")),
    ("/proc/1234/ns/net", ("path", "/proc/1234/ns/net")),
    ("/var/run/docker/netns/1a2b3c4d5e6f", ("path", "/var/run/docker/netns/1a2b3c4d5e6f")),
    ("4026532281", ("name", "4026532281")),  # bare inodes (older output) fall back to inode: at resolve time
])
def test_selector_parsing(selector, parsed):
    assert parse_selector(selector) == parsed


@pytest.mark.parametrize("label", ["host", "bt-a-1f2e3d", "docker:web", "pod:kube-system/coredns-5d78c9869d-8xq2p",
                                   "pid:1234 (nginx)", "pid:77 (kworker/u8:2-events)", "inode:4026532281"])
def test_every_label_kind_is_a_selector_of_its_kind(label):
    kind = parse_selector(label)[0]
    assert kind == {"host": "host", "bt-a-1f2e3d": "name"}.get(label, label.split(":")[0])


@pytest.mark.parametrize("selector, message", [
    ("pod:default", "a pod is pod:NAMESPACE/NAME"),
    ("pod:/api", "a pod is pod:NAMESPACE/NAME"),
    ("pod:a/b/c", "a pod is pod:NAMESPACE/NAME"),
    ("inode:abc", "an inode is a number"),
    ("pid:x", "a process is pid:N"),
    ("pid:12 nginx", "a process is pid:N"),
    ("docker:", "nothing after docker:"),
])
def test_malformed_selectors_are_one_line_errors(selector, message):
    with pytest.raises(BpftoolsError, match=message) as info:
        parse_selector(selector)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("label", ["pod:default/api", "pid:1234 (nginx)", "docker:web", "host", "inode:4026532281"])
def test_labels_survive_a_trip_through_a_file_name(label):
    component = label_as_path_component(label)
    assert "/" not in component and " " not in component
    assert label_from_path_component(component) == label


def test_init_net_inode_is_below_the_dynamic_range():
    assert namespaces.NET_NS_INIT_INO < 0xF0000000


def _reply(msg_type: int, nsid: int) -> bytes:
    import struct

    body = struct.pack("=B3x", 0) + struct.pack("=HHi", 8, namespaces.NETNSA_NSID, nsid)
    return struct.pack("=IHHII", 16 + len(body), msg_type, 0, 1, 0) + body


def test_rtm_getnsid_request_and_reply():
    import struct

    request = namespaces._nsid_request(fd=7, seq=3)
    length, msg_type, flags, seq = struct.unpack_from("=IHHI", request)
    assert (length, msg_type, flags, seq) == (len(request), namespaces.RTM_GETNSID, 1, 3)
    assert struct.unpack_from("=HHI", request, 20) == (8, namespaces.NETNSA_FD, 7)
    assert namespaces._parse_nsid_reply(_reply(namespaces.RTM_NEWNSID, 5)) == 5
    assert namespaces._parse_nsid_reply(_reply(namespaces.RTM_NEWNSID, -1)) is None  # not assigned
    assert namespaces._parse_nsid_reply(_reply(namespaces.NLMSG_ERROR, 0)) is None


def test_a_cached_namespace_whose_inode_was_reused_is_not_trusted(monkeypatch, tmp_path):
    """The kernel gives a new namespace the inode of one freed a moment ago: a cached entry for
    that inode names the old namespace (its `ip netns` file is gone) and must be refreshed."""
    import time

    from bpftools import namespaces
    from bpftools.namespaces import Netns

    old = Netns(4026532247, "bt-b-old", "netns", str(tmp_path / "bt-b-old"))
    new = Netns(4026532247, "bt-b-new", "netns", str(tmp_path / "bt-b-new"))
    (tmp_path / "bt-b-new").write_text("")
    monkeypatch.setattr(namespaces, "_cache", (time.monotonic(), [old]))
    monkeypatch.setattr(namespaces, "_discover", lambda: [new])
    monkeypatch.setattr(namespaces, "stat_inode",
                        lambda path: 4026532247 if path and path.endswith("bt-b-new") else None)
    assert namespaces.label_for_inode(4026532247) == "bt-b-new"


def test_a_fresh_cached_entry_is_used_without_rediscovery(monkeypatch):
    import time

    from bpftools import namespaces
    from bpftools.namespaces import Netns

    entry = Netns(4026532250, "bt-a", "netns", "/run/netns/bt-a")
    monkeypatch.setattr(namespaces, "_cache", (time.monotonic(), [entry]))
    monkeypatch.setattr(namespaces, "_discover", lambda: (_ for _ in ()).throw(AssertionError("rediscovered")))
    monkeypatch.setattr(namespaces, "stat_inode", lambda path: 4026532250)
    assert namespaces.find_inode(4026532250) == entry
