"""Who holds a TUN/TAP device: the processes with an open /dev/net/tun file attached to it
(`/proc/PID/fdinfo/FD` has an `iff:` line naming the device). A device nobody holds has no
carrier and drops what is sent to it. Read-only; processes of other PID namespaces are not seen."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TunHolder:
    pid: int
    comm: str
    netns_inode: int   # the holder's own network namespace (the device may be in another)

    def describe(self) -> str:
        return f"PID {self.pid} ({self.comm})"


def _read(path: str) -> Optional[str]:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:   # the process ended while we looked, or the fd closed: it holds nothing
        return None


def _netns_inode(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return 0


def tun_holders() -> Dict[str, List[TunHolder]]:
    """Device name -> the processes holding it (every namespace's devices; names can repeat
    across namespaces, so callers compare the holder's namespace where it matters)."""
    found: Dict[str, List[TunHolder]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        fdinfo = f"/proc/{pid}/fdinfo"
        try:
            fds = os.listdir(fdinfo)
        except OSError:
            continue
        for fd in fds:
            text = _read(os.path.join(fdinfo, fd))
            if not text or "iff:" not in text:
                continue
            for line in text.splitlines():
                if line.startswith("iff:"):
                    name = line.split(":", 1)[1].strip()
                    comm = (_read(f"/proc/{pid}/comm") or "?").strip()
                    holder = TunHolder(pid, comm, _netns_inode(pid))
                    if holder not in found.setdefault(name, []):
                        found[name].append(holder)
    return found


def holders_of(ifname: str, netns_inode: int, table: Optional[Dict[str, List[TunHolder]]] = None) -> List[TunHolder]:
    """The holders of `ifname`, those in the device's namespace first (the usual case)."""
    holders = (table if table is not None else tun_holders()).get(ifname, [])
    return sorted(holders, key=lambda h: h.netns_inode != netns_inode)
