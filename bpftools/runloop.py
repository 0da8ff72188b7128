"""One run loop for the commands that run until told to stop (trace-drops, encap-stats,
xdp-decap, serve): a step every `interval` seconds, an end after `duration` seconds or `count`
items, and one stop on Ctrl-C, SIGTERM or SIGHUP that never cuts a step in half.

    with RunLoop(interval=1.0, duration=duration) as loop:
        announce_ready(...)
        for now in loop:
            report()
    report()        # the final totals: the loop ended between two steps

Signals only set a flag while the loop runs (the step in progress finishes, then the loop
ends); outside it, `attach.terminate_gracefully` turns them into an exception as before, so
setting up and tearing down stay interruptible. A command that reloads on SIGHUP instead
passes `on_hangup`, which runs between two steps, never inside the signal handler.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from typing import Callable, Dict, Iterator, Optional

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Every:
    """True once per `period` seconds: `due(now)` for actions slower than the loop's step."""

    def __init__(self, period: float, now: Optional[float] = None):
        self.period = period
        self.next = (time.monotonic() if now is None else now) + period

    def __call__(self, now: float) -> bool:
        if now < self.next:
            return False
        # Behind by more than a period (a slow step): the next one is a period from now, no burst.
        self.next = self.next + self.period if now < self.next + self.period else now + self.period
        return True


class RunLoop:
    """Iterate to run: yields the monotonic clock after each wait, until a stop.

    `wait(timeout)` blocks for at most `timeout` seconds (default: sleeps, woken early by a
    signal or `stop()`); a command whose work is waiting (trace-drops polling its ring
    buffer) passes its own, and then gets a step after every poll. `stopped_by` says why the
    loop ended: "duration", "count", the signal's name, or what `stop()` was given.
    """

    def __init__(self, interval: float, duration: Optional[float] = None, count: Optional[int] = None,
                 wait: Optional[Callable[[float], object]] = None,
                 on_hangup: Optional[Callable[[], None]] = None,
                 clock: Callable[[], float] = time.monotonic):
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.interval = interval
        self.duration = duration
        self.count = count
        self.seen = 0
        self.stopped_by: Optional[str] = None
        self._wait = wait
        self._on_hangup = on_hangup
        self._hangups = 0
        self._clock = clock
        self._wakeup_r = self._wakeup_w = -1
        self._previous: Dict[int, object] = {}

    # --- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "RunLoop":
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_w, False)
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        for fd in (self._wakeup_r, self._wakeup_w):
            os.close(fd)
        self._wakeup_r = self._wakeup_w = -1

    # --- stopping --------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame) -> None:
        if signum == signal.SIGHUP and self._on_hangup is not None:
            self._hangups += 1
        else:
            self.stopped_by = self.stopped_by or signal.Signals(signum).name
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wakeup_w, b"\0")
        except (BlockingIOError, OSError):  # the pipe is full (already woken) or closed
            pass

    def stop(self, reason: str = "stopped") -> None:
        """End the loop after the current step; safe from other threads."""
        self.stopped_by = self.stopped_by or reason
        if self._wakeup_w >= 0:
            self._wake()

    @property
    def stopped(self) -> bool:
        return self.stopped_by is not None

    def add(self, n: int = 1) -> None:
        """Count `n` items towards `count`; the loop ends once `count` are reached."""
        self.seen += n
        if self.count is not None and self.seen >= self.count:
            self.stop("count")

    def left(self) -> Optional[int]:
        """How many items `count` still allows (None: no limit)."""
        return None if self.count is None else max(0, self.count - self.seen)

    # --- running ---------------------------------------------------------------------------
    def _sleep(self, timeout: float) -> None:
        readable, _, _ = select.select([self._wakeup_r], [], [], timeout)
        if readable:
            os.read(self._wakeup_r, 512)

    def __iter__(self) -> Iterator[float]:
        if self._wakeup_r < 0:
            raise RuntimeError("use `with RunLoop(...) as loop:` before iterating")
        start = self._clock()
        deadline = None if self.duration is None else start + self.duration
        step = Every(self.interval, start)
        while not self.stopped:
            now = self._clock()
            if deadline is not None and now >= deadline:
                self.stopped_by = "duration"
                break
            timeout = step.next - now
            if deadline is not None:
                timeout = min(timeout, deadline - now)
            if timeout > 0:
                (self._wait or self._sleep)(timeout)
            while self._hangups and not self.stopped:
                self._hangups -= 1
                self._on_hangup()
            if self.stopped:
                break
            now = self._clock()
            if deadline is not None and now >= deadline:
                self.stopped_by = "duration"
                break
            if step(now) or self._wait is not None:
                yield now
        log.debug("run loop ended: %s", self.stopped_by)
