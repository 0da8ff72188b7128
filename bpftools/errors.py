"""The one exception type whose message is shown to the user as a single line, and the one
way to carry on after an error without hiding it."""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator


class BpftoolsError(Exception):
    """A user-facing failure: bad input, missing privilege or kernel feature, compile error."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def survive(log: logging.Logger, what: str, *args, level: int = logging.DEBUG) -> Iterator[None]:
    """Carry on after an error in the block, but log it: `with survive(log, "reading %s", path):`.

    At `level` (debug by default: the caller can live without the result), with the traceback
    when debug logging is on. KeyboardInterrupt and SystemExit are never swallowed."""
    try:
        yield
    except Exception as exc:
        log.log(level, what + " failed: %s", *args, first_line(exc), exc_info=log.isEnabledFor(logging.DEBUG))
