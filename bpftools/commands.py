"""Every command bpftools prints or runs: data until it is shown.

A `Command` is the namespace it runs in (a label, as `namespaces` names them) and its argv.
It becomes text in one place, `render()`, and argv to run in another, `run_argv()`: nothing
bpftools runs goes through a shell, and the guard that refuses fixes deleting what the path
uses reads `argv`, never a string.

Names inside a command are other people's (interfaces renamed inside a container, namespace
and container names), so `render()` quotes every word for POSIX shells (`shlex.quote`). A word
with a control or non-printable character (ESC, a byte that is not UTF-8) is written in bash's
ANSI-C quoting instead, `$'a\\x1b[31m'`: the printed line then has no byte a terminal acts on
and still gives back the exact argv when pasted into bash (or zsh, ksh; not dash).

How a printed command enters a namespace, by the namespace's label:
  (ours, or the one diagnose runs from)  nothing
  host                                   nsenter -n -t 1
  an `ip netns` name                     ip netns exec NAME
  docker:NAME                            nsenter -n -t "$(docker inspect -f '{{.State.Pid}}' NAME)"
  pod:NS/NAME                            nsenter --net=PATH, the sandbox's namespace file as the node's
                                         CRI runtime reports it (it lives as long as the pod); where no
                                         runtime answers: nsenter -n -t "$(crictl inspectp -o go-template
                                         --template '{{.info.pid}}' "$(crictl pods -q --namespace NS
                                         --name '^NAME$')")"
  pid:N (comm)                           nsenter -n -t N
  inode:N, or a path                     nsenter --net=PATH
The Docker form finds the container's process when the command runs, so a printed fix
outlives a restart; their `$(…)` is ours, the names inside it are quoted.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

from .text import char_escape, is_shown_raw

HOST_LABEL = "host"
DOCKER_PID = "{{.State.Pid}}"
POD_PID = "{{.info.pid}}"

Argv = Tuple[str, ...]


def argv_of(template: str, *values) -> Argv:
    """argv from a template of words: each `{}` takes one value, inside its word and never
    splitting it. `argv_of("ip link set dev {} up", name)` is 5 words whatever `name` holds."""
    words, rest = [], list(values)
    for word in template.split():
        holes = word.count("{}")
        if holes > len(rest):
            raise ValueError(f"argv_of({template!r}): fewer values than {{}}")
        words.append(word.format(*(str(v) for v in rest[:holes])) if holes else word)
        rest = rest[holes:]
    if rest:
        raise ValueError(f"argv_of({template!r}): more values than {{}}")
    return tuple(words)


@dataclass(frozen=True)
class Command:
    argv: Argv
    netns: Optional[str] = None   # label of the namespace it runs in; None: where bpftools runs
    nspath: Optional[str] = None  # nsfs path of a discovered namespace: what running enters; printed
    #                               only where the label names no command (inode:N)

    @property
    def needs_shell_substitution(self) -> bool:
        """Printed, it finds a container's process with `$(…)` when run (docker:, pod:)."""
        return _kind(self.netns) in ("docker", "pod")

    def render(self) -> str:
        return render(self)

    def to_json(self) -> dict:
        return {"netns": self.netns, "argv": list(self.argv)}

    @classmethod
    def from_json(cls, data: dict) -> "Command":
        return cls(tuple(data["argv"]), data.get("netns"), data.get("nspath"))


def in_ns(netns: Optional[str], argv: Sequence[str], home: Optional[str] = HOST_LABEL) -> Command:
    """`argv` to run inside the namespace labelled `netns`; `home`, where the user runs the
    printed command (bpftools' own namespace), needs no prefix."""
    return Command(tuple(argv), None if netns is None or netns == home else netns)


def in_netns_of(ns, argv: Sequence[str], own_inode: Optional[int] = None) -> Command:
    """`argv` inside a namespace handle (netlink.NetnsHandle): None or ours, no prefix; an `ip
    netns` name; a `namespaces.Netns`, whose path is what running enters (the label is what
    printing shows: a container's survives its restart)."""
    if ns is None:
        return Command(tuple(argv))
    if isinstance(ns, str):
        return Command(tuple(argv), ns)
    if ns.inode == own_inode:
        return Command(tuple(argv))
    return Command(tuple(argv), ns.label, None if ns.kind == "netns" else ns.path)


def _kind(label: Optional[str]) -> Optional[str]:
    """Which prefix a label takes: None, host, docker, pod, pid, inode, path or netns."""
    if label is None:
        return None
    if label == HOST_LABEL:
        return "host"
    if label.startswith("/"):
        return "path"
    prefix, sep, _ = label.partition(":")
    if sep and prefix in ("docker", "pod", "pid", "inode"):
        return prefix
    return "netns"


def _pid_of_label(label: str) -> str:
    """`pid:1234 (nginx)` -> 1234."""
    return label[len("pid:"):].split()[0]


def _nsfs_path(cmd: Command) -> Optional[str]:
    return cmd.nspath or (cmd.netns if _kind(cmd.netns) == "path" else None)


# -- text -------------------------------------------------------------------------------------------

def quote_word(word: str) -> str:
    """One word for a POSIX shell: as is when plain, in '…' otherwise, in bash's $'…' when it
    holds a character a terminal must not see (escaped as \\xNN: the bytes of the name)."""
    if all(is_shown_raw(ch) for ch in word):
        return shlex.quote(word)
    out = []
    for ch in word:
        if ch in "\\'":
            out.append("\\" + ch)
        elif is_shown_raw(ch):
            out.append(ch)
        elif ord(ch) < 0x80 or "\udc80" <= ch <= "\udcff":
            out.append(char_escape(ch))
        else:  # a non-printable code point: its UTF-8 bytes, which bash puts back together
            out.append("".join(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass")))
    return "$'" + "".join(out) + "'"


def join(words: Iterable[str]) -> str:
    return " ".join(quote_word(w) for w in words)


def _substitution(argv: Sequence[str]) -> str:
    """`"$(…)"`: a command of ours whose output is one word of the printed command."""
    return '"$(' + join(argv) + ')"'


def _pod_netns_path(label: str) -> Optional[str]:
    """The namespace file of a pod's sandbox, from the node's CRI runtime (None: not found)."""
    from .errors import BpftoolsError
    from .namespaces import resolve

    try:
        return resolve(label, hold=False).path
    except BpftoolsError:
        return None


def _shown_prefix(cmd: Command) -> str:
    kind, label = _kind(cmd.netns), cmd.netns
    if kind is None:
        return ""
    if kind == "host":
        return "nsenter -n -t 1 "
    if kind == "pid":
        return f"nsenter -n -t {quote_word(_pid_of_label(label))} "
    if kind == "docker":
        name = label[len("docker:"):]
        return f"nsenter -n -t {_substitution(['docker', 'inspect', '-f', DOCKER_PID, name])} "
    if kind == "pod":
        path = cmd.nspath or _pod_netns_path(label)
        if path:  # the sandbox's namespace file (CNI's /var/run/netns/cni-…): lives as long as the pod
            return f"{join(['nsenter', '--net=' + path])} "
        namespace, _, name = label[len("pod:"):].partition("/")
        sandbox = '"$(' + join(["crictl", "pods", "-q", "--namespace", namespace, "--name",
                                f"^{re.escape(name)}$"]) + ')"'
        return f"nsenter -n -t \"$({join(['crictl', 'inspectp', '-o', 'go-template', '--template', POD_PID])} " \
               f"{sandbox})\" "
    path = _nsfs_path(cmd)
    if kind in ("inode", "path"):
        return f"{join(['nsenter', '--net=' + path])} " if path else ""
    return f"{join(['ip', 'netns', 'exec', label])} "


def render(cmd: Command) -> str:
    """The command as a user pastes it into a shell (see the module's doc)."""
    return _shown_prefix(cmd) + join(cmd.argv)


def rendered(commands: Iterable[Command]) -> List[str]:
    return [render(c) for c in commands]


# -- running ----------------------------------------------------------------------------------------

def run_prefix(cmd: Command) -> List[str]:
    """argv that enters the command's namespace, with no shell: a container's process is found
    now (through namespaces.resolve), as the printed form finds it when pasted."""
    kind, label = _kind(cmd.netns), cmd.netns
    if kind is None:
        return []
    if _nsfs_path(cmd):
        return ["nsenter", f"--net={_nsfs_path(cmd)}"]
    if kind == "host":
        return ["nsenter", "-n", "-t", "1"]
    if kind == "pid":
        return ["nsenter", "-n", "-t", _pid_of_label(label)]
    if kind == "netns":
        return ["ip", "netns", "exec", label]
    from .namespaces import resolve  # docker:, pod:, inode: — resolved when run

    return ["nsenter", f"--net={resolve(label, hold=False).path}"]


def run_argv(cmd: Command) -> List[str]:
    return run_prefix(cmd) + list(cmd.argv)
