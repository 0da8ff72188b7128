"""Pseudo filesystems the tool needs; mounted on demand because a fresh machine may lack them.

`bpftools mount` (and every command that needs one) mounts what is missing; `bpftools doctor`
runs inside `reporting_only()`, where a missing mount is an error to report, never mounted."""
from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Dict, Iterator

from ..errors import BpftoolsError

# mount point -> filesystem type
REQUIRED_MOUNTS = {
    "/sys/kernel/tracing": "tracefs",
    "/sys/kernel/debug": "debugfs",
    "/sys/fs/bpf": "bpf",
    "/sys/kernel/security": "securityfs",
}
TRACEFS = "/sys/kernel/tracing"
DEBUGFS = "/sys/kernel/debug"
DEBUGFS_TRACING = "/sys/kernel/debug/tracing"
MOUNT_HINT = "`bpftools mount` or `bpftools doctor --fix` mounts it"

_mounting = [True]  # False inside reporting_only()


@contextlib.contextmanager
def reporting_only() -> Iterator[None]:
    """Inside the block ensure_mounted() mounts nothing: a missing filesystem is a BpftoolsError."""
    _mounting.append(False)
    try:
        yield
    finally:
        _mounting.pop()


def mounting_allowed() -> bool:
    return _mounting[-1]


def mounted_filesystems() -> Dict[str, str]:
    """Mount point -> filesystem type, from /proc/self/mounts."""
    result = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3:
                result[fields[1]] = fields[2]
    return result


def ensure_mounted(mount_point: str) -> bool:
    """Mount `mount_point` with its filesystem unless already there; True if we mounted it."""
    fstype = REQUIRED_MOUNTS[mount_point]
    if mounted_filesystems().get(mount_point) == fstype:
        return False
    if not mounting_allowed():
        raise BpftoolsError(f"{fstype} is not mounted on {mount_point} ({MOUNT_HINT})")
    proc = subprocess.run(["mount", "-t", fstype, fstype, mount_point], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BpftoolsError(f"cannot mount {fstype} on {mount_point}: {proc.stderr.strip() or 'mount failed'}")
    return True


def mount_status() -> Dict[str, str]:
    """Mount point -> 'mounted' | 'MISSING …' | 'absent …', changing nothing."""
    mounted = mounted_filesystems()
    status = {}
    for mount_point, fstype in REQUIRED_MOUNTS.items():
        if not os.path.isdir(mount_point):
            status[mount_point] = f"absent (kernel without {fstype})"
        elif mounted.get(mount_point) == fstype:
            status[mount_point] = "mounted"
        else:
            status[mount_point] = f"MISSING ({MOUNT_HINT})"
    return status


def ensure_all_mounted() -> Dict[str, str]:
    """Mount everything in REQUIRED_MOUNTS that is missing; mount point -> 'mounted' | 'already mounted'."""
    status = {}
    for mount_point, fstype in REQUIRED_MOUNTS.items():
        if not os.path.isdir(mount_point):
            status[mount_point] = "absent (kernel without " + fstype + ")"
            continue
        try:
            status[mount_point] = "mounted now" if ensure_mounted(mount_point) else "already mounted"
        except BpftoolsError as exc:
            status[mount_point] = str(exc)
    return status


def ensure_tracing() -> None:
    """tracefs where bcc looks for it: /sys/kernel/tracing, and under debugfs where that is
    mounted (bcc 0.26 prefers /sys/kernel/debug/tracing, which the kernel mounts on first use:
    in reporting_only() that first use is refused too)."""
    ensure_mounted(TRACEFS)
    mounted = mounted_filesystems()
    if not mounting_allowed() and mounted.get(DEBUGFS) == "debugfs" and mounted.get(DEBUGFS_TRACING) != "tracefs":
        raise BpftoolsError(f"tracefs is not mounted on {DEBUGFS_TRACING}, where bcc reads it "
                            f"(the kernel mounts it there on first use; {MOUNT_HINT})")


def tracefs_path(*parts: str) -> str:
    ensure_mounted(TRACEFS)
    return os.path.join(TRACEFS, *parts)
