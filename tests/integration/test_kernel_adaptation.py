"""BTF offsets against the running kernel (cross-checked with bpftool), mounts, doctor."""
import json
import os
import re
import subprocess

from bpftools.kernel.btf import Btf
from bpftools.kernel.offsets import KERNEL_FIELDS, kernel_offsets
from bpftools.topology import run
from bpftools_proc import cli


def bpftool_btf_types():
    """type id -> (kind, name, size, [(member, type id, bit offset)]) from `bpftool btf dump`."""
    out = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"],
                         capture_output=True, text=True, check=True).stdout
    types, current = {}, None
    head = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'(?: size=(\d+))?(?: type_id=(\d+))?")
    member = re.compile(r"^\s+'([^']*)' type_id=(\d+) bits_offset=(\d+)")
    for line in out.splitlines():
        m = head.match(line)
        if m:
            current = int(m.group(1))
            types[current] = (m.group(2), m.group(3), int(m.group(5) or 0), [])
            continue
        m = member.match(line)
        if m and current is not None:
            types[current][3].append((m.group(1), int(m.group(2)), int(m.group(3))))
    return types


def bpftool_offset(types, struct, path):
    def strip(tid):
        while types[tid][0] in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
            tid = types[tid][2]
        return tid

    def find(tid, name):
        for m_name, m_type, bits in types[strip(tid)][3]:
            if m_name == name:
                return bits, m_type
        for m_name, m_type, bits in types[strip(tid)][3]:
            if m_name == "(anon)" and types[strip(m_type)][0] in ("STRUCT", "UNION"):
                found = find(m_type, name)
                if found:
                    return bits + found[0], found[1]
        return None

    tid = next(i for i, t in types.items() if t[0] == "STRUCT" and t[1] == struct)
    total = 0
    for part in path.split("."):
        bits, tid = find(tid, part)
        total += bits
    return total // 8


def test_offsets_match_bpftool():
    types = bpftool_btf_types()
    btf = Btf.from_file()  # the parser itself, not the cached result
    for define, (struct, path) in KERNEL_FIELDS.items():
        assert btf.member(struct, path)[0] == bpftool_offset(types, struct, path), define
    assert kernel_offsets() == {name: btf.member(*where) for name, where in KERNEL_FIELDS.items()}


def test_mount_remounts_missing_tracefs_in_a_private_mount_namespace():
    script = ("umount /sys/kernel/tracing 2>/dev/null; umount /sys/fs/bpf 2>/dev/null; "
              f"{os.sys.executable} -m bpftools mount && grep -E ' (tracefs|bpf) ' /proc/self/mounts")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "/sys/kernel/tracing: mounted now" in proc.stdout
    assert " tracefs " in proc.stdout and " bpf " in proc.stdout


def test_doctor_reports_real_probes():
    proc = cli("doctor", "--json", check=True)
    report = json.loads(proc.stdout)
    features = report["features"]
    assert set(features) >= {"xdp_native", "xdp_generic", "bpf_link", "tc_clsact", "tcx", "kprobes", "fentry",
                             "prog_test_run", "ipip_module", "gre_module", "vxlan_module"}
    # kprobes can only work where the kernel exposes the kprobe PMU
    if not os.path.exists("/sys/bus/event_source/devices/kprobe/type"):
        assert features["kprobes"]["ok"] is False
    assert features["xdp_generic"]["ok"] and features["tracepoint_kfree_skb"]["ok"]
    assert report["btf"]["available"] and report["drop_reasons"]["count"] > 0
    assert report["capabilities"]["trace-drops"] is True
    assert report["lockdown"] in ("none", "integrity", "confidentiality", None)


def link_kinds(netns=None):
    """(name, kind) of every device in the namespace (`ip -d`: kind is the driver, '' for lo/eth)."""
    out = run("ip", "-j", "-d", "link", "show", netns=netns).stdout
    return {(link["ifname"], link.get("linkinfo", {}).get("info_kind", "")) for link in json.loads(out)}


# Devices other test sessions and the Docker Engine make in the host namespace while this test runs.
CHURN_KINDS = {"veth", "bridge"}

DOCTOR_IN_A_PRIVATE_MOUNT_NAMESPACE = (
    "umount /sys/kernel/debug/tracing 2>/dev/null; umount /sys/kernel/tracing; umount /sys/fs/bpf 2>/dev/null; "
    "cat /proc/self/mounts > {before}; {python} -m bpftools doctor {args} > {out}; echo $? > {rc}; "
    "cat /proc/self/mounts > {after}")


def filesystems(mounts: str) -> set:
    """(mount point, type) of /proc/self/mounts' text, without network namespaces (doctor's
    throwaway namespace comes and goes; the session's leftover check covers namespaces)."""
    return {(fields[1], fields[2]) for fields in map(str.split, mounts.splitlines()) if fields[2] != "nsfs"}


def doctor_without_tracefs(tmp_path, *args):
    """doctor where tracefs and bpffs are missing (a private mount namespace): mounts before,
    mounts after, its output."""
    files = {name: tmp_path / name for name in ("before", "after", "out", "rc")}
    script = DOCTOR_IN_A_PRIVATE_MOUNT_NAMESPACE.format(python=os.sys.executable, args=" ".join(args), **files)
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)
    assert files["rc"].read_text().strip() == "0", proc.stderr
    return files["before"].read_text(), files["after"].read_text(), files["out"].read_text()


def test_doctor_changes_no_mount_and_no_device(tmp_path, topo):
    host_before = {d for d in link_kinds() if d[1] not in CHURN_KINDS}
    early = topo.netns("early")
    fresh_before = link_kinds(early)

    before, after, out = doctor_without_tracefs(tmp_path)
    # (mounts can leave a private mount namespace, when another session removes their mount point,
    # but none can arrive from outside: whatever is new, doctor mounted)
    assert filesystems(after) - filesystems(before) == set(), "doctor mounted something"
    assert "/sys/kernel/tracing    MISSING (`bpftools mount`" in out
    assert "tracepoint_kfree_skb   no   tracefs is not mounted" in out
    assert out.rstrip().endswith("changed:       nothing")

    assert link_kinds(early) == fresh_before  # no tunl0/sit0/gre0 appeared in an existing namespace
    assert link_kinds(topo.netns("late")) == fresh_before  # nor in a new one
    host_after = {d for d in link_kinds() if d[1] not in CHURN_KINDS}
    assert host_after - host_before == set()

    report = json.loads(cli("doctor", "--json", check=True).stdout)
    assert report["changes"] == []
    for name in ("ipip_module", "sit_module", "gre_module", "vxlan_module", "geneve_module"):
        probe = report["features"][name]  # a module that is there but not loaded is reported, not loaded
        assert probe["probed"] or (probe["ok"] and "--load-modules" in probe["detail"]), (name, probe)

    _before, after, out = doctor_without_tracefs(tmp_path, "--fix")
    assert " tracefs " in after and "/sys/kernel/tracing    mounted now" in out
    assert "changed:       mounted /sys/kernel/tracing; mounted /sys/fs/bpf" in out
    assert "tracepoint_kfree_skb   yes" in out
