"""Names a user can select on the command line, checked before anything looks them up.

An interface name is what the kernel's dev_valid_name() accepts: 1 to 15 bytes (IFNAMSIZ 16
with the NUL), not "." or "..", no `/`, `:`, white space or NUL; anything else (ESC, quotes,
`$(…)`, a leading `-`) is a valid name and must work. An `ip netns` name is a file name under
/run/netns: no `/`, not "." or "..". A value that is one of the command's own options
(`--netns --json`: the name was forgotten) is refused rather than taken as a name.
"""
from __future__ import annotations

from typing import Iterable, Optional

from .errors import BpftoolsError
from .text import shown

IFNAMSIZ = 16
C_SPACE = " \t\n\v\f\r"  # the kernel's isspace() in dev_valid_name()
NAME_MAX = 255


def ifname_problem(name: str) -> Optional[str]:
    """Why the kernel would never call an interface `name` (None: it could)."""
    size = len(name.encode("utf-8", "surrogateescape"))
    if size == 0:
        return "an interface name is never empty"
    if size >= IFNAMSIZ:
        return f"an interface name has at most {IFNAMSIZ - 1} bytes, this one {size}"
    if name in (".", ".."):
        return "an interface is never called . or .."
    bad = sorted({ch for ch in name if ch in "/:\0" or ch in C_SPACE})
    if bad:
        return f"an interface name never holds {', '.join(repr(ch) for ch in bad)} (the kernel refuses them)"
    return None


def netns_name_problem(name: str) -> Optional[str]:
    """Why `ip netns` could never have a namespace `name` (None: it could)."""
    size = len(name.encode("utf-8", "surrogateescape"))
    if name in (".", "..") or "/" in name or "\0" in name or size > NAME_MAX:
        return "an `ip netns` name is a file name in /run/netns: no / or NUL, not . or .., at most 255 bytes"
    return None


def check_not_an_option(what: str, value: str, options: Iterable[str]) -> None:
    """`--netns --json`: the value is one of the command's own options, so the name is missing."""
    if value in set(options):
        raise BpftoolsError(f"{what} {shown(value)}: that is an option of this command; give the name first "
                            f"(a name that starts with '-' works when it is not one of the options)")


def check_ifname(what: str, name: str) -> str:
    problem = ifname_problem(name)
    if problem:
        raise BpftoolsError(f"{what} {shown(name)}: {problem}")
    return name


def check_netns_selector(selector: str) -> str:
    """Only a bare name is checked here; prefixed selectors (docker:, pod:, pid:…) are checked by
    namespaces.parse_selector, paths when opened."""
    if selector.startswith("/") or selector.partition(":")[0] in ("docker", "pod", "pid", "inode", "host"):
        return selector
    problem = netns_name_problem(selector)
    if problem:
        raise BpftoolsError(f"--netns {shown(selector)}: {problem}")
    return selector


def conf_sysctl(ifname: str, key: str, family: int = 4) -> str:
    """The sysctl(8) name of an interface's setting: sysctl reads dots as separators and `/` as a
    dot, so a dot in the interface's name is written `/` (`net.ipv4.conf.flannel/1.rp_filter`);
    `net.ipv4.conf.flannel.1.rp_filter` names no file."""
    return f"net.ipv{family}.conf.{ifname.replace('.', '/')}.{key}"
