"""Where bcc finds kernel headers: /lib/modules/$(uname -r)/build (set up by bootstrap.sh)."""
from __future__ import annotations

import os
import re
from typing import Optional

from ..errors import BpftoolsError


def build_dir() -> str:
    return f"/lib/modules/{os.uname().release}/build"


def headers_version(path: Optional[str] = None) -> Optional[str]:
    """Kernel version the headers at `path` were made for, or None if there are none."""
    path = path or build_dir()
    real = os.path.realpath(path)
    if not os.path.isdir(os.path.join(real, "include")):
        return None
    match = re.search(r"linux-headers-(.+)$", real)
    return match.group(1) if match else real


def require_headers() -> str:
    version = headers_version()
    if version is None:
        raise BpftoolsError(
            f"no kernel headers at {build_dir()}: bcc needs them; run ./bootstrap.sh as root to install them"
        )
    return version
