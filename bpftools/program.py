"""Compile and load a BPF C source from bpf/ with bcc.

Run-time configuration reaches the C as -D defines from one dict (never text
substitution); kernel struct offsets from BTF are always among them.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Union

from .errors import BpftoolsError, first_line, survive
from .kernel.headers import require_headers
from .kernel.mounts import ensure_mounted, mounting_allowed
from .kernel.offsets import kernel_offsets, offset_cflags

log = logging.getLogger(__name__)

BPF_DIR = Path(__file__).resolve().parent / "bpf"  # a link to the top-level bpf/ in a checkout
Define = Union[int, str, bool]


def bpf_source(name: str) -> Path:
    path = BPF_DIR / name
    if not path.is_file():
        raise BpftoolsError(f"BPF source {path} is missing (broken installation?)")
    return path


def define_cflags(defines: Dict[str, Define]) -> list:
    flags = []
    for name, value in sorted(defines.items()):
        if value is False or value is None:
            continue
        flags.append(f"-D{name}" if value is True else f"-D{name}={value}")
    return flags


@contextlib.contextmanager
def _stderr_captured() -> Iterator[list]:
    """Capture fd 2 (where clang and the verifier print) while bcc works."""
    lines: list = []
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


def first_error(lines: list) -> str:
    """The line that explains a failure: clang's first error, else libbpf's/bcc's complaint."""
    for pattern in (r"\berror:", r"^bpf: |Failed to|[Pp]ermission|not permitted"):
        for line in lines:
            if re.search(pattern, line):
                return line.strip()
    meaningful = [ln.strip() for ln in lines if ln.strip() and not re.search(r"warning:|note:|In file included", ln)]
    return meaningful[-1] if meaningful else ""


class BpfProgram(contextlib.AbstractContextManager):
    """A compiled bcc module; `with BpfProgram(...) as prog` unloads it on exit. `source` may
    name several files of bpf/ (that share no names): they are compiled as one module, which
    costs one compile instead of several (bcc only takes the functions of its main file, so
    they are joined, not #included)."""

    def __init__(self, source: Union[str, Sequence[str]], defines: Optional[Dict[str, Define]] = None):
        names = [source] if isinstance(source, str) else list(source)
        self.sources = [bpf_source(name) for name in names]
        self.source = self.sources[0]
        self.defines = dict(defines or {})
        self.bpf = None

    @property
    def name(self) -> str:
        return " + ".join(path.name for path in self.sources)

    def _bcc_source(self) -> dict:
        if len(self.sources) == 1:
            return {"src_file": str(self.source).encode()}
        text = "".join(f'#line 1 "{path}"\n{path.read_text()}\n' for path in self.sources)
        return {"text": text.encode()}

    def cflags(self) -> list:
        return ["-I" + str(BPF_DIR / "include"), "-Wno-unused-function"] + offset_cflags(kernel_offsets()) \
            + define_cflags(self.defines)

    def compile(self) -> "BpfProgram":
        require_headers()
        if mounting_allowed():  # for tracepoints and kprobes; doctor's probe of them reports a missing tracefs
            ensure_mounted("/sys/kernel/tracing")
        from bcc import BPF  # lazily: --help, doctor and unit tests run without bcc

        with _stderr_captured() as output:
            try:
                self.bpf = BPF(cflags=self.cflags(), **self._bcc_source())
            except Exception as exc:  # bcc raises plain Exception; clang's message is on stderr
                self.bpf, error = None, first_line(exc)
        if self.bpf is None:
            raise BpftoolsError(f"compiling {self.name} failed: {first_error(output) or error}")
        return self

    def load(self, fn_name: str, prog_type: int) -> int:
        """Load one function into the kernel; its fd."""
        with _stderr_captured() as output:
            try:
                return self.bpf.load_func(fn_name.encode(), prog_type).fd
            except Exception as exc:
                error = str(exc)
        detail = first_error(output) or error
        raise BpftoolsError(f"the kernel rejected {fn_name} from {self.name}: {detail}")

    def table(self, name: str):
        return self.bpf[name.encode()]

    def __enter__(self) -> "BpfProgram":
        if self.bpf is None:
            self.compile()
        return self

    def __exit__(self, *exc) -> None:
        if self.bpf is not None:
            with survive(log, "releasing %s", self.source.name):
                self.bpf.cleanup()
            self.bpf = None
