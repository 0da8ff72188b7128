"""Names other people choose, made safe to show on a terminal.

bpftools runs as root and prints names a tenant can choose: an interface renamed inside a
container (the kernel takes any byte but `/`, `:`, white space and NUL, so ESC too), a
container, namespace or process name, a firewall rule's comment. Human output escapes every
control or non-printable character as `\\xNN` (as `ip -o`, systemd and git do) so none reaches
the terminal; JSON keeps the exact name. Names the kernel gives us that are not UTF-8 arrive
as surrogateescape'd str (os, pyroute2): their lone surrogates are shown as the byte they
stand for, `\\xNN`.
"""
from __future__ import annotations


def _is_raw_byte(ch: str) -> bool:
    """A lone surrogate U+DC80..U+DCFF: surrogateescape's stand-in for the byte 0x80..0xFF."""
    return "\udc80" <= ch <= "\udcff"


def char_escape(ch: str) -> str:
    """`\\xNN` (a byte, or a code point below 0x100), `\\uNNNN` / `\\UNNNNNNNN` otherwise."""
    code = ord(ch)
    if _is_raw_byte(ch):
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def is_shown_raw(ch: str) -> bool:
    """Printable, and not a stand-in for a raw byte (a space is printable; a newline is not)."""
    return ch.isprintable() and not _is_raw_byte(ch)


def terminal_safe(text: str) -> str:
    """`text` with every control or non-printable character escaped, newlines kept: nothing
    below 0x20 but the newline, no DEL, no C1 control and no lone surrogate is left."""
    if all(ch == "\n" or is_shown_raw(ch) for ch in text):
        return text
    return "".join(ch if ch == "\n" or is_shown_raw(ch) else char_escape(ch) for ch in text)


def shown(name) -> str:
    """One name (an interface, a namespace, a container, a rule comment) for human output: a
    newline in it is escaped too, so a name stays on its line."""
    return "".join(ch if is_shown_raw(ch) else char_escape(ch) for ch in str(name))
