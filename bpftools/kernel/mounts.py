"""Pseudo filesystems the tool needs; mounted on demand because a fresh machine may lack them."""
from __future__ import annotations

import os
import subprocess
from typing import Dict

from ..errors import BpftoolsError

# mount point -> filesystem type
REQUIRED_MOUNTS = {
    "/sys/kernel/tracing": "tracefs",
    "/sys/kernel/debug": "debugfs",
    "/sys/fs/bpf": "bpf",
    "/sys/kernel/security": "securityfs",
}
TRACEFS = "/sys/kernel/tracing"


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
    proc = subprocess.run(["mount", "-t", fstype, fstype, mount_point], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BpftoolsError(f"cannot mount {fstype} on {mount_point}: {proc.stderr.strip() or 'mount failed'}")
    return True


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


def tracefs_path(*parts: str) -> str:
    ensure_mounted(TRACEFS)
    return os.path.join(TRACEFS, *parts)
