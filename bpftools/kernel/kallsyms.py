"""/proc/kallsyms: kernel symbol addresses, and whether this process may see them.

Without CAP_SYSLOG (a container's default) and with kernel.perf_event_paranoid > 1 or
kernel.kptr_restrict >= 1, the kernel shows every address as 0: locations and stacks can
then only be printed as raw addresses, and the user must be told so.
"""
from __future__ import annotations

import functools
import re
from typing import Optional

KALLSYMS = "/proc/kallsyms"
HIDDEN_NOTE = ("kernel symbols are hidden (/proc/kallsyms shows zero addresses: needs CAP_SYSLOG, or "
               "kernel.kptr_restrict=0 with kernel.perf_event_paranoid<=1); locations and stacks are raw addresses")


@functools.lru_cache(maxsize=1)
def read_kallsyms() -> str:
    """The whole table ("" if unreadable); read once per process."""
    try:
        with open(KALLSYMS) as f:
            return f.read()
    except OSError:
        return ""


def addresses_hidden(text: str) -> bool:
    """True when the table is unreadable or every address in it is zero."""
    return not re.search(r"^0*[1-9a-fA-F][0-9a-fA-F]* ", text, flags=re.M)


def hidden_note(text: Optional[str] = None) -> Optional[str]:
    """The one-line note to print when symbols cannot be resolved, else None."""
    return HIDDEN_NOTE if addresses_hidden(read_kallsyms() if text is None else text) else None
