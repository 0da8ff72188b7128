"""The lab's building blocks: faults, topologies and the builder that names their namespaces
`<prefix>-<topology>-<role>` (`bpftools.lab` assembles the topologies; `lab_routers` and other
topology modules build on these without importing the lab itself)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .commands import Command
from .errors import BpftoolsError
from .topology import Topology, run

PREFIX = "bpftlab"
STATE_DIR = "/run/bpftools-lab"
PREFIX_ENV = "BPFTOOLS_LAB_PREFIX"   # tests use bpftlab-<unique> so parallel runs never meet


def prefix() -> str:
    value = os.environ.get(PREFIX_ENV) or PREFIX
    if not re.fullmatch(r"bpftlab(-[a-z0-9]{1,12})?", value):
        raise BpftoolsError(f"{PREFIX_ENV} must be `bpftlab` or `bpftlab-<up to 12 of a-z0-9>`, not {value!r}")
    return value

Step = Tuple[str, Sequence[str]]   # (role, command run inside that role's namespace)


@dataclass
class Fault:
    name: str          # the `diagnose` cause it produces
    summary: str
    steps: List[Step]
    undo: List[Step]
    ping_from: Optional[str] = None   # role; default: the topology's
    ping_to: Optional[str] = None     # address; default: the topology's
    program: Optional[Tuple[str, str, str]] = None   # (role, ifname, "xdp"|"tc"): a BPF program that drops ICMP
    size: Optional[int] = None        # ping payload (ping -s) that shows the fault; default 56
    ipv6: Optional["Fault"] = None    # the IPv6 counterpart (same name; its own steps, ping_to, size)
    printed_fix: bool = True          # False: no command can be derived (diagnose says what to start); `lab fix` repairs
    at: Optional[str] = None          # role whose namespace the cause must be located in (None: not asserted)

    @property
    def families(self) -> Tuple[int, ...]:
        return (4, 6) if self.ipv6 else (4,)


def six(steps: Optional[List[Step]] = None, undo: Optional[List[Step]] = None, **kw) -> dict:
    """`Fault(..., **six(...))`: an IPv6 counterpart; without steps, the IPv4 steps serve both
    (a link down, an XDP program: nothing family-specific)."""
    return {"ipv6": Fault("", "", steps, undo, **kw)}


def fault_label(name: str, family: int = 4) -> str:
    """How `lab list` / `lab fix` name an injected fault: `mtu`, `mtu/ipv6`."""
    return name if family == 4 else f"{name}/ipv6"


def parse_fault_label(label: str) -> Tuple[str, int]:
    name, _, family = label.partition("/")
    return name, 6 if family == "ipv6" else 4


@dataclass
class LabTopology:
    name: str
    summary: str
    build: Callable[["LabBuilder"], None]
    ping_from: str
    ping_to: str
    faults: Dict[str, Fault] = field(default_factory=dict)
    requires: Optional[str] = None    # kernel feature (doctor probe name)
    ping_to6: Optional[str] = None    # the IPv6 address of the healthy ping (None: IPv4 only)
    ping_device: Optional[str] = None  # the ping is `ping -I <device>`
    starts_broken: Optional[str] = None   # the setup as usually built has this fault: `lab fix` repairs it

    def ns(self, role: str) -> str:
        return f"{prefix()}-{self.name}-{role}"

    @property
    def families(self) -> Tuple[int, ...]:
        return (4, 6) if self.ping_to6 else (4,)

    def fault(self, name: str, family: int = 4) -> Fault:
        """The fault as injected in `family`: the IPv6 counterpart's steps, or the fault's own."""
        if name not in self.faults:
            raise BpftoolsError(f"lab {self.name} has no fault {name!r} (choose from: {', '.join(self.faults)})")
        f = self.faults[name]
        if family == 4:
            return f
        if f.ipv6 is None or family not in self.families:
            raise BpftoolsError(f"lab {self.name}: fault {name} has no IPv6 counterpart")
        return Fault(f.name, f.summary, f.ipv6.steps if f.ipv6.steps is not None else f.steps,
                     f.ipv6.undo if f.ipv6.undo is not None else f.undo, f.ipv6.ping_from or f.ping_from,
                     f.ipv6.ping_to, f.program, f.ipv6.size, printed_fix=f.printed_fix, at=f.ipv6.at or f.at)

    def ping(self, fault: Optional[str] = None, family: int = 4) -> Tuple[str, str]:
        """(namespace, address) of the ping that shows the fault (or the healthy ping)."""
        f = self.fault(fault, family) if fault else None
        default = self.ping_to6 if family == 6 else self.ping_to
        return self.ns((f and f.ping_from) or self.ping_from), (f and f.ping_to) or default

    def ping_size(self, fault: Optional[str] = None, family: int = 4) -> int:
        f = self.fault(fault, family) if fault else None
        return (f and f.size) or 56

    def ping_args(self) -> List[str]:
        """ping's options besides the address (and `diagnose ping`'s: the same -I)."""
        return ["-I", self.ping_device] if self.ping_device else []

    def ping_command(self, fault: Optional[str] = None, family: int = 4) -> str:
        ns, dst = self.ping(fault, family)
        return Command(("ping", *self.ping_args(), dst), ns).render()

    def diagnose_command(self, fault: Optional[str] = None, family: int = 4) -> str:
        """`bpftools diagnose ping` of the ping that shows the fault, from the host."""
        ns, dst = self.ping(fault, family)
        size = self.ping_size(fault, family)
        return Command(("bpftools", "diagnose", "ping", *self.ping_args(), dst, "--netns", ns)
                       + (("--size", str(size)) if size != 56 else ())).render()


class LabBuilder(Topology):
    """A Topology whose namespaces have fixed, recognisable names and outlive the process."""

    def __init__(self, topo: LabTopology):
        super().__init__(prefix())
        self.topo = topo

    def netns(self, role: str = "") -> str:
        name = self.topo.ns(role)
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        # No duplicate address detection: lab addresses (link-local ones too) are usable at once,
        # instead of "tentative" for a second; and static IPv6 addresses survive `ip link set down`
        # (by default the kernel flushes them), so `link up` repairs a link_down fault in both
        # families. Devices moved into the namespace get its defaults.
        for conf in ("all", "default"):
            for key in ("accept_dad=0", "keep_addr_on_down=1"):
                run("sysctl", "-qw", f"net.ipv6.conf.{conf}.{key}", netns=name, check=False)
        run("ip", "link", "set", "lo", "up", netns=name)
        return name

    def run(self, role: str, *cmd: str) -> None:
        run(*cmd, netns=self.topo.ns(role))

    def addr6(self, role: str, ifname: str, cidr: str) -> None:
        self.run(role, "ip", "-6", "addr", "add", cidr, "dev", ifname, "nodad")
