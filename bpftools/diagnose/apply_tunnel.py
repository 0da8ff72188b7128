"""Tunnel devices on the model, as the kernel changes them: `ip link add NAME type vxlan|geneve …`,
`ip link set NAME type vxlan …` and `bridge fdb add|append|replace|del … dev VXLAN`.

What the kernel does, checked on a 6.18 kernel: a `remote` (or `group`) makes the all-zeros
default FDB entry; changing `remote` moves that entry's first remote and keeps the others; the VNI
and the port cannot change ("Cannot change VNI" / "Cannot change port", even to the same port); two
VXLAN devices of a namespace cannot share VNI and port; the MTU defaults to the underlay device's
minus the overhead (1500 without `dev`), an `ip link add … mtu` above that is lowered to it and an
`ip link set … mtu` above it is refused. `bridge fdb add` of a MAC that has an entry fails (File
exists), `append` adds a remote to the all-zeros or a multicast entry and leaves a unicast one
alone, `replace` moves a unicast entry's remote (EOPNOTSUPP on the all-zeros one), `del … dst`
removes one remote (a remote that is not there: nothing), `del` without `dst` the whole entry.
`Link.fdb` holds the entries, `Link.vxlan_fdb` their remotes (kept in step)."""
from __future__ import annotations

import ipaddress
from typing import List, Optional

from .apply_errors import Refused, Unmodelled, link_named
from .state import FdbEntry, Link, NetnsState
from .tunnel_fixes import ZERO_MAC, underlay_ceiling

VXLAN_DEFAULT_PORT = 8472   # the kernel's, when iproute2 is given none (`dstport 0`)
GENEVE_DEFAULT_PORT = 6081
VXLAN_WORDS = ("id", "vni", "dstport", "local", "remote", "group", "dev", "ttl")
GENEVE_WORDS = ("id", "vni", "dstport", "remote", "ttl")
LEARNING_WORDS = ("learning", "nolearning")


def _words(words: List[str], valued, flags=()) -> dict:
    found: dict = {}
    i = 0
    while i < len(words):
        if words[i] in flags:
            found[words[i]] = True
            i += 1
        elif words[i] in valued and i + 1 < len(words):
            found[words[i]] = words[i + 1]
            i += 2
        else:
            raise Unmodelled(f"tunnel option {words[i]}")
    return found


def _number(text: str, what: str) -> int:
    if not text.isdigit():
        raise Unmodelled(f"{what} {text}")
    return int(text)


def _address(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise Unmodelled(f"{what} {text}") from None


def add_tunnel(state: NetnsState, name: str, kind: str, words: List[str], mac: Optional[str],
               mtu: Optional[int]) -> Link:
    """`ip link add NAME [address MAC] [mtu N] type vxlan|geneve WORDS`: the new device, down."""
    if kind == "vxlan":
        opts = _words(words, VXLAN_WORDS, LEARNING_WORDS)
    elif kind == "geneve":
        opts = _words(words, GENEVE_WORDS)
        if "remote" not in opts:
            raise Unmodelled("geneve without remote")   # external (metadata) mode is not modelled
    else:
        raise Unmodelled(f"ip link add type {kind}")
    if "id" not in opts and "vni" not in opts:
        raise Refused(f"{kind}: missing VNI")
    vni = _number(opts.get("id", opts.get("vni", "")), "id")
    default_port = VXLAN_DEFAULT_PORT if kind == "vxlan" else GENEVE_DEFAULT_PORT
    dstport = (_number(opts["dstport"], "dstport") or default_port) if "dstport" in opts else default_port
    remote = _address(opts["remote"], "remote") if "remote" in opts else None
    group = _address(opts["group"], "group") if "group" in opts else None
    if remote and group:
        raise Refused("vxlan: both group and remote cannot be specified")
    if group and "dev" not in opts:
        raise Refused("vxlan: 'group' requires 'dev' to be specified")
    lower = link_named(state, opts["dev"]) if "dev" in opts else None
    same = next((l for l in state.links if l.kind == kind and l.vni == vni and l.dstport == dstport
                 and (kind == "vxlan" or l.tunnel_remote == remote)), None)
    if same is not None:
        raise Refused(f"A {kind.upper()} device with the specified VNI already exists ({same.ifname})")
    ifindex = max((l.ifindex for l in state.links), default=0) + 1
    link = Link(ifindex, name, kind, admin_up=False, mac=(mac or made_mac(ifindex)).lower(), vni=vni,
                dstport=dstport, tunnel_remote=remote, tunnel_group=group,
                tunnel_local=_address(opts["local"], "local") if "local" in opts else None,
                tunnel_dev=lower.ifindex if lower else None, learning="nolearning" not in opts)
    ceiling = underlay_ceiling(state, link) if kind == "vxlan" else None   # the kernel bounds VXLAN by its `dev`
    link.mtu = min(mtu or ceiling or 1500, ceiling or 65535)
    if kind == "vxlan" and (remote or group):     # geneve has no FDB: it sends everything to its remote
        set_fdb(link, [FdbEntry(ZERO_MAC, remote or group)])
    state.links.append(link)
    return link


def made_mac(ifindex: int) -> str:
    """A MAC for a device the model makes (the kernel picks a random one): unique per ifindex."""
    return f"02:00:00:{ifindex >> 16 & 0xff:02x}:{ifindex >> 8 & 0xff:02x}:{ifindex & 0xff:02x}"


def change_vxlan(link: Link, words: List[str]) -> None:
    """`ip link set NAME type vxlan [remote IP] [local IP] [learning|nolearning] [ttl N]`; the VNI
    and the port cannot change."""
    if link.kind != "vxlan":
        raise Unmodelled(f"ip link set {link.ifname} type vxlan on a {link.kind or 'plain'} device")
    opts = _words(words, VXLAN_WORDS, LEARNING_WORDS)
    if "dstport" in opts:
        raise Refused("Cannot change port")
    if "id" in opts and _number(opts["id"], "id") != link.vni:
        raise Refused("Cannot change VNI")
    if "group" in opts or "dev" in opts:
        raise Unmodelled("changing a vxlan device's group or dev")
    if "remote" in opts:
        remote = _address(opts["remote"], "remote")
        if ipaddress.ip_address(remote).is_unspecified:
            raise Unmodelled("vxlan remote 0.0.0.0")
        old = link.tunnel_remote
        entries = [e for e in link.fdb if not (e.mac == ZERO_MAC and e.dst == old and e.port is None
                                                and e.vni is None)]
        if not any(e.mac == ZERO_MAC and e.dst == remote for e in entries):
            entries.append(FdbEntry(ZERO_MAC, remote))
        link.tunnel_remote = remote
        set_fdb(link, entries)
    if "local" in opts:
        link.tunnel_local = _address(opts["local"], "local")
    if "learning" in opts or "nolearning" in opts:
        link.learning = "learning" in opts


def set_fdb(link: Link, entries: List[FdbEntry]) -> None:
    """The device's FDB, and the remotes the older recordings list (`vxlan_fdb`), in step."""
    link.fdb = entries
    link.vxlan_fdb = list(dict.fromkeys(e.dst for e in entries if e.dst))


FDB_VERBS = ("add", "append", "replace", "del", "delete")


def bridge(state: NetnsState, words: List[str]) -> None:
    """`bridge fdb add|append|replace|del MAC dev DEV [dst IP] [port P] [vni N] [self]
    [permanent|static|dynamic]` on a VXLAN device's own FDB. A bridge's FDB (`master`, or a device
    that is not VXLAN) is not modelled."""
    if len(words) < 4 or words[0] != "fdb" or words[1] not in FDB_VERBS:
        raise Unmodelled(f"bridge {' '.join(words)}")
    verb, mac = words[1], words[2].lower()
    opts = _words(words[3:], ("dev", "dst", "port", "dstport", "vni"), ("self", "permanent", "static", "dynamic"))
    link = link_named(state, opts.get("dev", ""))
    if link.kind != "vxlan":
        raise Unmodelled(f"bridge fdb on {link.ifname} ({link.kind or 'a plain device'}): only a VXLAN device's "
                         "own FDB is modelled")
    port = _number(opts.get("port", opts.get("dstport", "0")), "port") or None
    vni = _number(opts["vni"], "vni") if "vni" in opts else None
    entry = FdbEntry(mac, _address(opts["dst"], "dst") if "dst" in opts else None,
                     None if port == link.dstport else port, None if vni == link.vni else vni,
                     permanent="dynamic" not in opts)
    mine = [e for e in link.fdb if e.mac == mac]
    if verb in ("del", "delete"):
        if not mine:
            raise Refused(f"no FDB entry for {mac} on {link.ifname} (No such file or directory)")
        gone = mine if entry.dst is None else [e for e in mine if _same_remote(e, entry)]
        set_fdb(link, [e for e in link.fdb if e not in gone])
        return
    if entry.dst is None:
        raise Refused(f"bridge fdb {verb} {mac} dev {link.ifname} without dst (Invalid argument)")
    set_fdb(link, _updated(link, mac, mine, entry, verb))


def _updated(link: Link, mac: str, mine: List[FdbEntry], entry: FdbEntry, verb: str) -> List[FdbEntry]:
    if not mine:
        return link.fdb + [entry]
    if verb == "add":
        raise Refused(f"an FDB entry for {mac} exists on {link.ifname} (File exists)")
    multi = mac == ZERO_MAC or int(mac.split(":")[0], 16) & 1
    if verb == "append":
        if not multi or any(_same_remote(e, entry) for e in mine):
            return link.fdb        # a unicast entry keeps its remote; a remote it has stays one
        return link.fdb + [entry]
    if multi:
        raise Refused(f"bridge fdb replace {mac}: only unicast entries are replaced (Operation not supported)")
    return [entry if e is mine[0] else e for e in link.fdb]


def _same_remote(a: FdbEntry, b: FdbEntry) -> bool:
    return a.dst == b.dst and a.port == b.port and a.vni == b.vni
