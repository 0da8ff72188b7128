"""BTF offsets against the running kernel (cross-checked with bpftool), mounts, doctor."""
import json
import os
import re
import subprocess

from bpftools.kernel.btf import Btf
from bpftools.kernel.offsets import KERNEL_FIELDS, kernel_offsets
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
