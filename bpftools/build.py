"""What this bpftools is and runs on, for `bpftools_build_info`: version, source revision, bcc
version, kernel release. Read once (none of them changes while the process runs)."""
from __future__ import annotations

import functools
import logging
import os
import subprocess
from pathlib import Path
from typing import Dict

from . import __version__
from .errors import survive

log = logging.getLogger(__name__)

REVISION_VARIABLE = "BPFTOOLS_REVISION"  # set by deploy/Dockerfile (--build-arg REVISION=...)
UNKNOWN = "unknown"


def revision() -> str:
    """$BPFTOOLS_REVISION, else the commit of the git checkout bpftools runs from, else unknown."""
    if os.environ.get(REVISION_VARIABLE):
        return os.environ[REVISION_VARIABLE]
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / ".git").exists():
        with survive(log, "asking git for the revision of %s", checkout):
            proc = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short=12", "HEAD"],
                                  capture_output=True, text=True, timeout=5)
            if proc.returncode == 0 and proc.stdout.strip():
                return proc.stdout.strip()
    return UNKNOWN


def bcc_version() -> str:
    with survive(log, "reading bcc's version"):
        from bcc.version import __version__ as version

        return version
    return UNKNOWN


@functools.lru_cache(maxsize=1)
def build_info() -> Dict[str, str]:
    return {"version": __version__, "revision": revision(), "bcc_version": bcc_version(),
            "kernel_release": os.uname().release}
