"""Facts about the running kernel that need no probing: version, BTF, lockdown."""
from __future__ import annotations

import logging
import os
import re
from typing import Optional

from .btf import VMLINUX_BTF
from .mounts import ensure_mounted

log = logging.getLogger(__name__)

LOCKDOWN = "/sys/kernel/security/lockdown"


def kernel_release() -> str:
    return os.uname().release


def has_btf() -> bool:
    return os.path.exists(VMLINUX_BTF)


def lockdown_mode() -> Optional[str]:
    """The bracketed mode in securityfs' lockdown file ("none", "integrity", "confidentiality")."""
    try:
        ensure_mounted("/sys/kernel/security")
        with open(LOCKDOWN) as f:
            match = re.search(r"\[(\w+)\]", f.read())
    except Exception as exc:
        log.debug("reading the lockdown mode failed: %s", exc)
        return None
    return match.group(1) if match else None
