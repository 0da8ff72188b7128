"""Rates beside totals: packets/s and bits/s of counters read at each report, and their
human-readable form (1.5k, 12.3M)."""
from __future__ import annotations

from typing import Dict, Hashable, Optional, Tuple

Rate = Tuple[float, float]  # packets per second, bits per second


class RateMeter:
    """`meter.rate(key, packets, bytes)` between two `meter.report(ts)` calls: the rate since the
    previous report (the first: since `start`). A key absent from the previous report had no
    traffic then (rows appear once they count something); a counter that went back (an evicted
    LRU entry) restarts from 0."""

    def __init__(self, start: float):
        self.start = start
        self._previous_ts = start
        self._ts = start
        self._previous: Dict[Hashable, Tuple[int, int]] = {}
        self._current: Dict[Hashable, Tuple[int, int]] = {}

    def report(self, ts: float) -> None:
        """A new report at `ts`: the counts of the last one become the base."""
        self._previous, self._current = self._current, {}
        self._previous_ts, self._ts = self._ts, ts

    def rate(self, key: Hashable, packets: int, bytes_: int, since: Optional[float] = None) -> Rate:
        """Since the previous report, or since `since` (e.g. `meter.start` for the whole run)."""
        self._current[key] = (packets, bytes_)
        if since is not None:
            base_ts, base = since, (0, 0)
        else:
            base_ts, base = self._previous_ts, self._previous.get(key, (0, 0))
        elapsed = self._ts - base_ts
        if elapsed <= 0:
            return 0.0, 0.0
        if packets < base[0] or bytes_ < base[1]:
            base = (0, 0)
        return (packets - base[0]) / elapsed, (bytes_ - base[1]) * 8 / elapsed


SI_PREFIXES = ("", "k", "M", "G", "T", "P")


def human(value: float) -> str:
    """1234 -> '1.23k', 0.5 -> '0.5', 12_300_000 -> '12.3M': three significant digits, SI prefixes."""
    if value == 0:
        return "0"
    prefix = 0
    while abs(value) >= 999.5 and prefix < len(SI_PREFIXES) - 1:
        value /= 1000
        prefix += 1
    digits = 0 if abs(value) >= 99.95 else 1 if abs(value) >= 9.995 else 2
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") + SI_PREFIXES[prefix]
