"""Names other people choose, as the kernel, `ip netns` and Docker accept them, for property
tests; and `bash_words`, which runs a printed command's words through bash the way a user who
pastes it does, without running the command."""
from __future__ import annotations

import os
import subprocess
import tempfile
from typing import List, Tuple

from hypothesis import strategies as st

C_SPACE = b" \t\n\v\f\r"
# Pieces a tenant would use: shell syntax, quoting, globbing, an option, terminal escapes
# (colour, window title, clear screen), bytes that are not UTF-8, bidi override.
FRAGMENTS = ["$(id)", "`id`", ";", "&&", "|", "'", '"', "\\", "*", "?", "-", "--", "$'", "!", "~", "#",
             "{a,b}", "=", "\x1b[31m", "\x1b]0;t\x07", "\x1b[2J", "\x7f", "\x9b", "\r", "\udcff", "\udc80",
             "é", "\u202e", "a", "0"]
IFNAME_FORBIDDEN = set(b"/:\0" + C_SPACE)


def as_bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _ifname_ok(name: str) -> bool:
    raw = as_bytes(name)
    return 0 < len(raw) <= 15 and not set(raw) & IFNAME_FORBIDDEN and raw not in (b".", b"..")


def _decoded(raw: bytes) -> str:
    """As Python gets a name from the kernel (os, pyroute2): not UTF-8 bytes as lone surrogates."""
    return raw.decode("utf-8", "surrogateescape")


def ifnames() -> st.SearchStrategy[str]:
    """Interface names the kernel accepts (dev_valid_name): 1..15 bytes, no / : white space NUL."""
    allowed = sorted(set(range(256)) - IFNAME_FORBIDDEN)
    raw = st.lists(st.sampled_from(allowed), min_size=1, max_size=15).map(bytes).map(_decoded)
    built = st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=5).map("".join)
    return st.one_of(built, raw).filter(_ifname_ok)


def _netns_ok(name: str) -> bool:
    raw = as_bytes(name)
    prefix = name.partition(":")[0]
    # bpftools' labels: an ip netns name that reads like another label (host, docker:x) is out of scope
    return 0 < len(raw) <= 64 and b"/" not in raw and b"\0" not in raw and raw not in (b".", b"..") \
        and name != "host" and not (":" in name and prefix in ("docker", "pod", "pid", "inode"))


def netns_names() -> st.SearchStrategy[str]:
    """`ip netns` names: file names in /run/netns (white space, quotes and ESC included)."""
    raw = st.lists(st.integers(1, 255).filter(lambda b: b != ord("/")), min_size=1, max_size=30).map(bytes).map(
        _decoded)
    built = st.lists(st.sampled_from(FRAGMENTS + [" ", "\n", "\t"]), min_size=1, max_size=6).map("".join)
    return st.one_of(built, raw).filter(_netns_ok)


def docker_names() -> st.SearchStrategy[str]:
    """Container names as Docker accepts them, and hostile ones (bpftools quotes whatever it got)."""
    return st.one_of(st.from_regex(r"\A[a-zA-Z0-9][a-zA-Z0-9_.-]{0,20}\Z"),
                     st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=4).map("".join))


def dns_labels() -> st.SearchStrategy[str]:
    return st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?\Z")


BASH_STUBS = r"""
docker() { printf '%s\0' docker "$@" >&3; printf 4242; }
crictl() { printf '%s\0' crictl "$@" >&3; if [ "$1" = pods ]; then printf SANDBOX; else printf 4243; fi; }
"""


def bash_words(line: str) -> Tuple[List[bytes], List[bytes]]:
    """(the words of the printed command `line`, the words of the commands its `$(…)` ran) as bash
    makes them when the line is pasted: the command itself only prints its words (printf), and
    docker and crictl are stubs that print theirs and answer a PID (4242, 4243)."""
    with tempfile.TemporaryDirectory() as tmp:
        inner = os.path.join(tmp, "inner")
        script = BASH_STUBS + f'exec 3>"{inner}"\n' + "printf '%s\\0' " + line + "\n"
        done = subprocess.run(["bash", "-c", script.encode("utf-8")], capture_output=True,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}, timeout=10)
        assert done.returncode == 0, (line, done.stderr)
        with open(inner, "rb") as f:
            ran = f.read()
    return done.stdout.split(b"\0")[:-1], ran.split(b"\0")[:-1]
