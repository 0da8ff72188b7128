"""Output helpers shared by commands: JSON lines (a stable interface) and tables."""
from __future__ import annotations

import json
import sys
from typing import Iterable, List, Sequence


def emit_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


def table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    rows = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines: List[str] = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


READY_MARK = "bpftools: ready"


def announce_ready(what: str) -> None:
    """The line tests and scripts wait for: everything is attached and counting."""
    sys.stderr.write(f"{READY_MARK}: {what}\n")
    sys.stderr.flush()


def duration_option(fn):
    """`--duration SECONDS` with one meaning everywhere: stop after that many seconds (> 0);
    without it, run until Ctrl-C/SIGTERM."""
    import click

    return click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
                        metavar="SECONDS", help="Stop after SECONDS (default: until Ctrl-C or SIGTERM).")(fn)


def netns_option(what: str = "Namespace of IFACE"):
    """`--netns SELECTOR`, one help text everywhere (selectors: docs/namespaces.md). Resolve
    it with `bpftools.netlink.select_netns` after the privilege check."""
    import click

    return click.option("--netns", metavar="NETNS",
                        help=f"{what}: an `ip netns` name, docker:NAME, pod:NS/NAME, pid:N, inode:N, host or "
                             "a /proc/PID/ns/net path (docs/namespaces.md); default: the current one.")


def interval_option(default: float, what: str = "reports"):
    """`--interval SECONDS` between a long-running command's reports (at least 0.1 s)."""
    import click

    return click.option("--interval", type=click.FloatRange(min=0.1), default=default, show_default=True,
                        metavar="SECONDS", help=f"Seconds between {what}.")
