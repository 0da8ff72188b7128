"""Wait for a condition, never for a fixed time: with dockerd or a parallel build beside the
suite, start-up and event delivery are slower, and a sleep that was enough yesterday is not."""
from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


def wait_until(probe: Callable[[], T], what: str, timeout: float = 15, interval: float = 0.05,
               done: Optional[Callable[[T], bool]] = None) -> T:
    """Call `probe` until its result is truthy (or `done(result)`), and return that result.
    After `timeout` seconds, fail naming `what` was awaited and the last result seen."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if (done(result) if done else result):
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}; last seen: {result!r}")
        time.sleep(interval)


def stays(probe: Callable[[], T], expected: T, what: str, duration: float, interval: float = 0.05) -> None:
    """Assert `probe()` keeps returning `expected` for `duration` seconds (a thing that must NOT
    happen: a bounded watch, not a wait for something)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        result = probe()
        if result != expected:
            raise AssertionError(f"{what}: expected {expected!r} to hold for {duration:g} s, saw {result!r}")
        time.sleep(interval)


def settled(probe: Callable[[], T], what: str, quiet: float = 0.2, timeout: float = 15,
            interval: float = 0.05, at_least: Optional[Callable[[T], bool]] = None) -> T:
    """The value of `probe()` once it has stopped changing for `quiet` seconds (a counter that
    packets still in flight would move), and `at_least(value)` holds if given."""
    deadline = time.monotonic() + timeout
    value = probe()
    since = time.monotonic()
    while True:
        time.sleep(interval)
        now_value = probe()
        if now_value != value:
            value, since = now_value, time.monotonic()
        elif time.monotonic() - since >= quiet and (at_least is None or at_least(value)):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g} s for {what} to settle; last seen: {value!r}")
