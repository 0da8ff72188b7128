"""Run bpftools as a real process (as a user would) and wait for its ready signal."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import List, Optional

READY_MARK = "bpftools: ready"


def cli(*args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "bpftools", *args], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"bpftools {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


class BpftoolsProcess:
    """`with BpftoolsProcess("trace-drops", ...) as p:` starts it, waits until attached, stops it."""

    def __init__(self, *args: str, ready_timeout: float = 30):
        self.args = args
        self.ready_timeout = ready_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.stdout = ""
        self.stderr = ""

    def __enter__(self) -> "BpftoolsProcess":
        self.proc = subprocess.Popen([sys.executable, "-m", "bpftools", *self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + self.ready_timeout
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith(READY_MARK):
                self.stderr = "".join(lines)
                return self
        self.proc.kill()
        out, err = self.proc.communicate()
        raise AssertionError(f"bpftools {' '.join(self.args)} never became ready:\n{''.join(lines)}{err}\n{out}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=timeout)
        self.stdout += out
        self.stderr += err
        return self.proc.returncode

    def wait(self, timeout: float = 60) -> int:
        out, err = self.proc.communicate(timeout=timeout)
        self.stdout += out
        self.stderr += err
        return self.proc.returncode

    def json_lines(self) -> List[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def __exit__(self, *exc) -> None:
        """A test that failed midway still lets bpftools clean up (SIGTERM); SIGKILL only if stuck."""
        end_process(self.proc, timeout=15)


def end_process(proc: Optional[subprocess.Popen], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def run_printed(command: str, **kwargs) -> subprocess.CompletedProcess:
    """A command bpftools printed, run as a user runs it: pasted into bash. Printed commands are
    quoted for POSIX shells, with bash's $'…' for words holding control bytes (commands.render),
    so bash, not sh, is the shell that gives back their exact argv."""
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, **kwargs)
