"""Log lines of every bpftools command: the standard `logging` module, one setup.

Modules log through `logging.getLogger(__name__)` (all under the `bpftools` logger); a command
calls `setup_logging()` once with the user's `--log-level`/`--log-format`. Lines go to stderr,
one per event, with time and level, as logfmt (like Prometheus and its exporters) or JSON:

    time=2026-12-01T20:01:02.345Z level=info logger=bpftools.serve msg="encap attached to ns1/veth1"
    {"time": "2026-12-01T20:01:02.345Z", "level": "info", "logger": "bpftools.serve", "msg": "..."}
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Callable, Optional, TextIO

from .text import is_shown_raw

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("logfmt", "json")
ROOT = "bpftools"


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict:
    fields = {"time": _timestamp(record), "level": record.levelname.lower(), "logger": record.name,
              "msg": record.getMessage()}
    if record.exc_info:
        fields["error"] = formatter.formatException(record.exc_info)
    return fields


def _logfmt_value(value: str) -> str:
    if value and not any(c in ' "=\\' or not is_shown_raw(c) for c in value):
        return value
    return json.dumps(value)  # quoted, with \" \\ and control characters escaped: what logfmt parsers read back


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _fields(record, self).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record, self))


FORMATTERS: dict = {"logfmt": LogfmtFormatter, "json": JsonFormatter}


def setup_logging(level: str = "info", fmt: str = "logfmt", stream: Optional[TextIO] = None) -> logging.Logger:
    """Send the `bpftools` loggers' records at `level` and above to stderr; idempotent (a second
    call replaces the handler, so tests and re-invocations do not duplicate lines)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: one of {', '.join(LEVELS)}")
    root = logging.getLogger(ROOT)
    for handler in [h for h in root.handlers if getattr(h, "_bpftools", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._bpftools = True  # type: ignore[attr-defined]
    handler.setFormatter(FORMATTERS[fmt]())
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    root.propagate = False
    return root


def log_options(fn: Callable) -> Callable:
    """`--log-level` and `--log-format` for a click command; pass them to `setup_logging()`."""
    import click

    fn = click.option("--log-format", type=click.Choice(FORMATS), default="logfmt", show_default=True,
                      help="Log lines on stderr as logfmt or JSON.")(fn)
    return click.option("--log-level", type=click.Choice(LEVELS), default="info", show_default=True,
                        help="Least severe log lines shown on stderr.")(fn)
