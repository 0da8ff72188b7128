"""Run bpftools as a real process (as a user would) and wait for its ready signal."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, List, Optional, Sequence

READY_MARK = "bpftools: ready"


def cli(*args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "bpftools", *args], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"bpftools {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


class BpftoolsProcess:
    """`with BpftoolsProcess("trace-drops", ...) as p:` starts it, waits until attached, stops it.
    Its output is read as it comes (`p.lines()`, `p.wait_for(...)`), so a test waits for the
    event it needs instead of sleeping."""

    def __init__(self, *args: str, ready_timeout: float = 30, prefix: Sequence[str] = ()):
        self.args = args
        self.prefix = list(prefix)   # runs it under another command (nsenter --net=FILE: in that namespace)
        self.ready_timeout = ready_timeout
        self.proc: Optional[subprocess.Popen] = None
        self._out: List[str] = []
        self._err: List[str] = []
        self._readers: List[threading.Thread] = []
        self._seen = threading.Condition()

    @property
    def stdout(self) -> str:
        with self._seen:
            return "".join(self._out)

    @property
    def stderr(self) -> str:
        with self._seen:
            return "".join(self._err)

    def _read(self, stream, into: List[str]) -> None:
        for line in stream:
            with self._seen:
                into.append(line)
                self._seen.notify_all()

    def __enter__(self) -> "BpftoolsProcess":
        self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "bpftools", *self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self._out), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self._err), daemon=True)]
        for reader in self._readers:
            reader.start()
        try:
            self.wait_for_stderr(lambda text: any(ln.startswith(READY_MARK) for ln in text.splitlines()),
                                 "the ready line", timeout=self.ready_timeout)
        except AssertionError:
            self.proc.kill()
            self._finish(timeout=10)
            raise AssertionError(f"bpftools {' '.join(self.args)} never became ready:\n{self.stderr}\n{self.stdout}")
        return self

    def _wait_on(self, text: Callable[[], str], predicate: Callable[[str], bool], what: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                current = text()
                if predicate(current):
                    return current
                left = deadline - time.monotonic()
                exited = self.proc.poll() is not None and not any(r.is_alive() for r in self._readers)
                if left <= 0 or exited:
                    why = "it exited" if exited else f"{timeout:g} s passed"
                    raise AssertionError(f"bpftools {' '.join(self.args)}: waited for {what}, {why}\n"
                                         f"stdout:\n{''.join(self._out)}\nstderr:\n{''.join(self._err)}")
                self._seen.wait(min(left, 0.2))

    def wait_for_stderr(self, predicate: Callable[[str], bool], what: str, timeout: float = 30) -> str:
        return self._wait_on(lambda: "".join(self._err), predicate, what, timeout)

    def wait_for(self, predicate: Callable[[List[dict]], object], what: str, timeout: float = 30) -> List[dict]:
        """Wait until `predicate(json_lines)` holds (the events a test needs were printed)."""
        lines = self._wait_on(lambda: "".join(self._out), lambda out: bool(predicate(_json_lines(out))),
                              what, timeout)
        return _json_lines(lines)

    def _finish(self, timeout: float) -> None:
        self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=timeout)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self._finish(timeout)
        return self.proc.returncode

    def wait(self, timeout: float = 60) -> int:
        self._finish(timeout)
        return self.proc.returncode

    def json_lines(self) -> List[dict]:
        return _json_lines(self.stdout)

    def __exit__(self, *exc) -> None:
        """A test that failed midway still lets bpftools clean up (SIGTERM); SIGKILL only if stuck."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self._finish(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self._finish(timeout=15)


def _json_lines(text: str) -> List[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") and line.endswith("}")]


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
