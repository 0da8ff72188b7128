"""Output helpers shared by commands: JSON lines (a stable interface), tables, and `say`, the
one way human output reaches the terminal."""
from __future__ import annotations

import json
import sys
from typing import Iterable, List, Optional, Sequence

from ..names import check_ifname, check_netns_selector, check_not_an_option
from ..text import shown, terminal_safe


def say(text: str = "", err: bool = False, nl: bool = True) -> None:
    """Human output: interface, namespace, container and process names, rule comments are other
    people's, so every control or non-printable character is escaped (`\x1b`) here, whichever
    path built the line. Printed commands arrive rendered (commands.render: bash $'…' for such
    words), so they stay pasteable. JSON (`emit_json`) keeps names exact."""
    import click

    click.echo(terminal_safe(text), err=err, nl=nl)


class EscapingStream:
    """A text stream that escapes what `say` escapes: for click's own messages (usage errors
    quote the value the user gave)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(terminal_safe(text))

    def flush(self) -> None:
        self.stream.flush()


def emit_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


def table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    rows = [[shown(c) for c in row] for row in rows]  # escaped before measuring: columns stay aligned
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines: List[str] = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


READY_MARK = "bpftools: ready"


def announce_ready(what: str) -> None:
    """The line tests and scripts wait for: everything is attached and counting."""
    sys.stderr.write(f"{READY_MARK}: {terminal_safe(what)}\n")
    sys.stderr.flush()


def duration_option(fn):
    """`--duration SECONDS` with one meaning everywhere: stop after that many seconds (> 0);
    without it, run until Ctrl-C/SIGTERM."""
    import click

    return click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
                        metavar="SECONDS", help="Stop after SECONDS (default: until Ctrl-C or SIGTERM).")(fn)


def _own_options(ctx) -> List[str]:
    return [o for p in ctx.command.params for o in list(p.opts) + list(p.secondary_opts) if o.startswith("-")] \
        + list(ctx.help_option_names)


def checked_netns(ctx, param, value: Optional[str]) -> Optional[str]:
    """--netns: not one of our options (the name was left out), a name `ip netns` could have."""
    if value is None:
        return None
    check_not_an_option("--netns", value, _own_options(ctx))
    return check_netns_selector(value)


def checked_ifnames(ctx, param, value):
    """Interface arguments and options: names the kernel could give (names.ifname_problem)."""
    for name in (value if isinstance(value, tuple) else (value,)):
        if name is not None:
            what = param.opts[0] if param.param_type_name == "option" else "interface"
            check_not_an_option(what, name, _own_options(ctx))
            check_ifname(what, name)
    return value


def checked_iface_or_address(ctx, param, value: Optional[str]) -> Optional[str]:
    """`-I IFACE|ADDR` as ping takes it: an address, or else an interface name."""
    import ipaddress

    try:
        ipaddress.ip_address(value or "")
    except ValueError:
        return checked_ifnames(ctx, param, value)
    return value


def netns_option(what: str = "Namespace of IFACE"):
    """`--netns SELECTOR`, one help text everywhere (selectors: docs/namespaces.md). Resolve
    it with `bpftools.netlink.select_netns` after the privilege check."""
    import click

    return click.option("--netns", metavar="NETNS", callback=checked_netns,
                        help=f"{what}: an `ip netns` name, docker:NAME, pod:NS/NAME, pid:N, inode:N, host or "
                             "a /proc/PID/ns/net path (docs/namespaces.md); default: the current one.")


def interval_option(default: float, what: str = "reports"):
    """`--interval SECONDS` between a long-running command's reports (at least 0.1 s)."""
    import click

    return click.option("--interval", type=click.FloatRange(min=0.1), default=default, show_default=True,
                        metavar="SECONDS", help=f"Seconds between {what}.")
