"""Reading one namespace's live state: commands run inside it, /proc/sys values, its netfilter
ruleset (iptables-save of either backend, nft -j), and `NamespaceInspector`, the cached,
throttled view trace-drops' hints use. diagnose's full capture (diagnose/capture.py) reads
the firewall and sysctls through the same functions."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
from typing import Callable, Dict, List, Optional, Tuple

from ..commands import in_netns_of, run_argv
from ..netlink import NetnsHandle, in_netns, interface_addresses, ipr, list_interfaces
from .netfilter import (IPV4, IPV6, IptablesRuleset, NfCounter, likely_culprits, native_nft_counters, netfilter_culprits,
                        nft_counters, parse_iptables_save)
from .rtnl import IFF_LOWER_UP, neigh_state, route_type
from .tun import holders_of

log = logging.getLogger(__name__)

FACT_TTL = 1.0          # seconds a namespace fact is reused
NETFILTER_MIN_GAP = 0.5  # at most one ruleset read per namespace and family per this many seconds


def netns_output(ns: NetnsHandle, *cmd: str, timeout: float = 5) -> Optional[str]:
    """stdout of a command run inside `ns` (an `ip netns` name, a Netns; None: our namespace),
    None on failure."""
    full = run_argv(in_netns_of(ns, cmd))
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("%s: %s", " ".join(full), exc)
        return None
    if proc.returncode != 0:
        log.debug("%s: exit %s: %s", " ".join(full), proc.returncode, proc.stderr.strip()[:200])
        return None
    return proc.stdout


def read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def forwarding_sysctl(family: Optional[str]) -> str:
    """The /proc/sys path of the switch that lets a namespace forward packets of `family`."""
    return "net/ipv6/conf/all/forwarding" if family == IPV6 else "net/ipv4/ip_forward"


# -- netfilter -------------------------------------------------------------------------------------

def iptables_is_nft() -> bool:
    """Is `iptables` the nf_tables backend (iptables-nft)?"""
    try:
        out = subprocess.run(["iptables", "--version"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "nf_tables" in out


def iptables_save(ns: Optional[str], family: str = IPV4, legacy: bool = False) -> str:
    """`iptables-save -c` (ip6tables-save for IPv6; the -legacy tool when asked) inside `ns`."""
    tool = ("ip6tables" if family == IPV6 else "iptables") + ("-legacy" if legacy else "") + "-save"
    return netns_output(ns, tool, "-c") or ""


def nft_ruleset(ns: Optional[str]) -> dict:
    """`nft -j list ruleset` inside `ns` ({} without nft or rules)."""
    text = netns_output(ns, "nft", "-j", "list", "ruleset")
    try:
        return json.loads(text) if text and text.strip() else {}
    except ValueError:
        log.debug("nft -j list ruleset in %s: not JSON", ns)
        return {}


def legacy_tables_loaded(ns: Optional[str], family: str = IPV4) -> bool:
    """Does the legacy x_tables backend hold tables in `ns` (beside nf_tables)?"""
    name = "ip6_tables_names" if family == IPV6 else "ip_tables_names"
    with contextlib.suppress(OSError), in_netns(ns), open(f"/proc/thread-self/net/{name}") as f:
        return bool(f.read().strip())
    return False


def netfilter_counters(ns: Optional[str], family: str, nft_backend: bool) -> List[NfCounter]:
    """Every rule and policy counter that can count a packet of `family` in `ns`, each once."""
    counters: List[NfCounter] = []
    save = iptables_save(ns, family)
    main: Optional[IptablesRuleset] = None
    if save:
        main = parse_iptables_save(save, "iptables-nft" if nft_backend else "iptables-legacy", family)
        counters += main.counters()
    if nft_backend and legacy_tables_loaded(ns, family):
        text = iptables_save(ns, family, legacy=True)
        if text:
            counters += parse_iptables_save(text, "iptables-legacy", family).counters()
    ruleset = nft_ruleset(ns)
    if ruleset:
        counters += native_nft_counters(nft_counters(ruleset), family, main if nft_backend else None)
    return counters


# -- the cached view -------------------------------------------------------------------------------

class NamespaceInspector:
    """Facts of one namespace (`ip netns` name, None for ours), each cached for FACT_TTL."""

    def __init__(self, ns: Optional[str], clock: Callable[[], float] = time.monotonic):
        self.ns = ns
        self.clock = clock
        self._cache: Dict[tuple, Tuple[float, object]] = {}
        self._nf_snapshot: Dict[str, List[NfCounter]] = {}
        self._nf_read_at: Dict[str, float] = {}
        self._nf_last: Dict[str, List[Tuple[NfCounter, int]]] = {}

    def _cached(self, key: tuple, compute: Callable[[], object]):
        now = self.clock()
        hit = self._cache.get(key)
        if hit and now - hit[0] < FACT_TTL:
            return hit[1]
        value = None
        try:
            value = compute()
        except Exception as exc:  # a fact we cannot read is missing from the hint, not fatal
            log.debug("namespace %s: reading %s failed: %s", self.ns, key, exc)
        self._cache[key] = (now, value)
        return value

    def sysctl(self, path: str) -> Optional[int]:
        """An integer under /proc/sys (e.g. net/ipv4/ip_forward) as seen inside the namespace."""
        def read():
            with in_netns(self.ns):
                return read_int(os.path.join("/proc/sys", path))
        return self._cached(("sysctl", path), read)

    def proc_net(self, name: str) -> Optional[str]:
        def read():
            with in_netns(self.ns), open(f"/proc/thread-self/net/{name}") as f:
                return f.read()
        return self._cached(("proc_net", name), read)

    def route(self, dst: str) -> Optional[dict]:
        """`ip route get DST` there: {type, dev, gateway, mtu} or {error}."""
        return self._cached(("route", dst), lambda: self._route_get(dst))

    def _route_get(self, dst: str) -> dict:
        with ipr(self.ns) as sock:
            try:
                msg = sock.route("get", dst=dst)[0]
            except Exception as exc:  # pyroute2's NetlinkError carries the errno as .code
                code = getattr(exc, "code", None) or getattr(exc, "errno", None)
                return {"error": os.strerror(code) if code else str(exc)}
            oif = msg.get_attr("RTA_OIF")
            links = {m["index"]: m for m in sock.get_links(oif)} if oif else {}
            link = links.get(oif)
            return {"type": route_type(msg["type"]), "dev": link.get_attr("IFLA_IFNAME") if link else None,
                    "gateway": msg.get_attr("RTA_GATEWAY"), "mtu": link.get_attr("IFLA_MTU") if link else None}

    def link(self, ifname: Optional[str]) -> Optional[dict]:
        def read():
            with ipr(self.ns) as sock:
                msg = sock.get_links(ifname=ifname)[0]
                xdp = msg.get_attr("IFLA_XDP")
                info = msg.get_attr("IFLA_LINKINFO")
                kind = (info.get_attr("IFLA_INFO_KIND") if info else "") or ""
                carrier = bool(msg["flags"] & IFF_LOWER_UP)
                return {"mac": msg.get_attr("IFLA_ADDRESS"), "mtu": msg.get_attr("IFLA_MTU"),
                        "txqlen": msg.get_attr("IFLA_TXQLEN"), "qdisc": msg.get_attr("IFLA_QDISC"),
                        "xdp_prog_id": xdp.get_attr("IFLA_XDP_PROG_ID") if xdp else None,
                        "kind": kind, "carrier": carrier,
                        # a tun/tap device without carrier has no holder; with one, its holders by name
                        "tun_holders": [h.describe() for h in holders_of(ifname, 0)] if kind == "tun" and carrier
                        else []}
        return self._cached(("link", ifname), read) if ifname else None

    def local_addresses(self) -> List[str]:
        """Every address of the namespace's interfaces: the local end on point-to-point links
        (IFA_LOCAL), not the peer, as interface_addresses() reads them."""
        def read():
            return [addr for iface in list_interfaces(self.ns) for addr in interface_addresses(iface)]
        return self._cached(("addrs",), read) or []

    def neigh_state(self, addr: str) -> Optional[str]:
        def read():
            with ipr(self.ns) as sock:
                for msg in sock.get_neighbours(dst=addr):
                    return neigh_state(msg["state"]).upper()
            return None
        return self._cached(("neigh", addr), read)

    def listening(self, proto: Optional[str], family: Optional[str], port: Optional[int]) -> Optional[bool]:
        """Is a socket bound to `port` now (from /proc/net/{tcp,udp}[6] inside the namespace)?"""
        if proto not in ("tcp", "udp") or port is None:
            return None
        found = False
        for name in (proto, proto + "6"):
            text = self.proc_net(name)
            if text is None:
                continue
            for line in text.splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and int(fields[1].rsplit(":", 1)[1], 16) == port and \
                        (proto == "udp" or fields[3] == "0A"):  # 0A: TCP_LISTEN
                    found = True
        return found

    # netfilter -----------------------------------------------------------------

    def netfilter_counters(self, family: str) -> List[NfCounter]:
        return netfilter_counters(self.ns, family, self._iptables_is_nft())

    def _iptables_is_nft(self) -> bool:
        return bool(self._cached(("iptables-nft",), iptables_is_nft))

    def prime_netfilter(self, family: str) -> None:
        """Take the baseline snapshot that later drops are diffed against."""
        self._nf_snapshot[family] = self.netfilter_counters(family)
        self._nf_read_at[family] = self.clock()

    def netfilter_attribution(self, family: str) -> Tuple[List[Tuple[NfCounter, int]], bool, List[NfCounter]]:
        """(culprits, exact, counters): the drop rules whose counters grew since the last look.
        At most one read per NETFILTER_MIN_GAP; in between the last answer stands."""
        now = self.clock()
        last_read = self._nf_read_at.get(family)
        if last_read is not None and now - last_read < NETFILTER_MIN_GAP and family in self._nf_last:
            return self._nf_last[family], True, self._nf_snapshot.get(family, [])
        after = self.netfilter_counters(family)
        before = self._nf_snapshot.get(family)
        if before is None:
            culprits, exact = likely_culprits(after), False
        else:
            culprits, exact = netfilter_culprits(before, after), True
            if not culprits and family in self._nf_last:
                culprits = self._nf_last[family]  # drops counted by an earlier read
        self._nf_snapshot[family], self._nf_read_at[family] = after, now
        self._nf_last[family] = culprits
        return culprits, exact, after
