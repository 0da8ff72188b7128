"""A fix command applied to the model: what the kernel state of a namespace (`NetnsState`)
becomes once a printed fix's argv has run there. The subset of `ip`, `sysctl`, `iptables`,
`ip6tables`, `nft`, `tc` and `bridge fdb` that bpftools' fixes use (tunnel devices and their FDB:
apply_tunnel.py); any other command (or option) raises
`Unmodelled`, so a fix is never taken as proven on a guess; a command the kernel would refuse on
that state (File exists, no such route, device or rule) raises `Refused`.

Pure: `applied(snapshot, commands, home)` returns a new `Snapshot` whose changed namespaces are
deep copies; the original is untouched."""
from __future__ import annotations

import copy
import ipaddress
import shlex
from typing import Callable, Dict, List, Optional, Sequence

from ..commands import Command
from ..facts.netfilter import nft_objects
from .apply_errors import Refused, Unmodelled, link_named
from .apply_tunnel import add_tunnel, bridge, change_vxlan, made_mac
from .firewall import nft_match_exprs
from .macvlan import UPPER_KINDS
from .state import (RT_TABLE_LOCAL, RT_TABLE_MAIN, Addr, Link, Neighbour, NetnsState, Route, Snapshot, family_of,
                    local_routes)
from .tunnel_fixes import underlay_ceiling

MACVLAN_MODES = ("private", "vepa", "bridge", "passthru", "source")

ROUTE_TYPES = ("unicast", "local", "broadcast", "blackhole", "unreachable", "prohibit", "throw")
SCOPE_LINK = 253


def applied(snapshot: Snapshot, commands: Sequence[Command], home: str) -> Snapshot:
    """The snapshot as it is once `commands` ran, in order (each in its `netns`; None: `home`)."""
    changed: Dict[str, NetnsState] = {}
    for command in commands:
        label = command.netns or home
        if label not in changed:
            changed[label] = copy.deepcopy(snapshot.ns(label))
        apply_argv(changed[label], list(command.argv))
    return Snapshot(changed, source=snapshot.ns_source())


def apply_argv(state: NetnsState, argv: List[str]) -> None:
    """Change `state` as running argv there would; Unmodelled when it cannot say."""
    if not argv:
        raise Unmodelled("an empty command")
    handler = _TOOLS.get(argv[0])
    if handler is None:
        raise Unmodelled(f"{argv[0]} is not modelled")
    handler(state, argv[1:])


# -- sysctl -----------------------------------------------------------------------------------------

def _sysctl(state: NetnsState, words: List[str]) -> None:
    settings = [w for w in words if not w.startswith("-")]
    if not settings or any(w not in ("-w", "-q", "-qw", "-wq") for w in words if w.startswith("-")):
        raise Unmodelled(f"sysctl {' '.join(words)}")
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not value.lstrip("-").isdigit():
            raise Unmodelled(f"sysctl {setting}")
        _set_sysctl(state, _sysctl_key(state, key), int(value))


def _sysctl_key(state: NetnsState, key: str) -> str:
    """The model's key (`net.ipv4.conf.IFNAME.KEY`, IFNAME as is) for what sysctl(8) writes: it
    reads `a.b.c` with `/` standing for a dot inside a name (`net.ipv4.conf.flannel/1.rp_filter`),
    or `a/b/c` as a path. `net.ipv4.conf.flannel.1.rp_filter` is no file: refused."""
    first = next((ch for ch in key if ch in "./"), ".")
    parts = key.split("/") if first == "/" else [p.replace("/", ".") for p in key.split(".")]
    if parts[:1] == ["net"] and parts[2:3] == ["conf"] and len(parts) > 3:
        if len(parts) != 5 or (parts[3] not in ("all", "default") and state.link_by_name(parts[3]) is None):
            raise Refused(f"sysctl: cannot stat /proc/sys/{'/'.join(parts)}: No such file or directory")
    return ".".join(parts)


def _set_sysctl(state: NetnsState, key: str, value: int) -> None:
    """As the kernel does: `ip_forward` and `conf.all.forwarding` set every interface's forwarding
    (IPv4 inet_forward_change, IPv6 addrconf_fixup_forwarding) and the default's."""
    state.sysctls[key] = value
    family = {"net.ipv4.ip_forward": "ipv4", "net.ipv4.conf.all.forwarding": "ipv4",
              "net.ipv6.conf.all.forwarding": "ipv6"}.get(key)
    if family is None:
        return
    if family == "ipv4":
        state.sysctls["net.ipv4.ip_forward"] = value
    for name in ["all", "default"] + [l.ifname for l in state.links]:
        state.sysctls[f"net.{family}.conf.{name}.forwarding"] = value


# -- ip ---------------------------------------------------------------------------------------------

def _ip(state: NetnsState, words: List[str]) -> None:
    family = None
    while words and words[0] in ("-4", "-6"):
        family = int(words[0][1])
        words = words[1:]
    if not words:
        raise Unmodelled("ip without an object")
    handler = _IP_OBJECTS.get(words[0])
    if handler is None:
        raise Unmodelled(f"ip {words[0]}")
    handler(state, words[1:], family)


def _ip_link(state: NetnsState, words: List[str], family) -> None:
    if words and words[0] == "add":
        return _ip_link_add(state, words[1:])
    if words and words[0] in ("del", "delete"):
        names = [w for w in words[1:] if w != "dev"]
        if len(names) != 1:
            raise Unmodelled(f"ip link {' '.join(words)}")
        return delete_link(state, link_named(state, names[0]))
    if not words or words[0] != "set":
        raise Unmodelled(f"ip link {' '.join(words)}")
    words = words[1:]
    if words and words[0] == "dev":
        words = words[1:]
    if not words:
        raise Unmodelled("ip link set without a device")
    link, words = link_named(state, words[0]), words[1:]
    if words[:2] == ["type", "vxlan"]:
        return change_vxlan(link, words[2:])
    while words:
        word = words.pop(0)
        if word in ("up", "down"):
            link.admin_up = word == "up"
            if link.admin_up:
                _address_routes_back(state, link)
        elif word == "mtu" and words and words[0].isdigit():
            mtu, ceiling = int(words.pop(0)), underlay_ceiling(state, link) if link.kind == "vxlan" else None
            if ceiling is not None and mtu > ceiling:
                raise Refused(f"{link.ifname} cannot take MTU {mtu}: its underlay carries {ceiling} (Invalid argument)")
            link.mtu = mtu
        elif word == "arp" and words and words[0] in ("on", "off"):
            link.noarp = words.pop(0) == "off"
        elif word == "address" and words and _is_mac(words[0]):
            link.mac = words.pop(0).lower()
        elif word == "master" and words:
            bridge = link_named(state, words.pop(0))
            if bridge.kind != "bridge":
                raise Unmodelled(f"{bridge.ifname} ({bridge.kind or 'a plain device'}) as a master")
            link.master = bridge.ifindex
        elif word == "nomaster":
            link.master = None
        elif word == "type" and link.kind in UPPER_KINDS and words[:1] == [link.kind] and words[1:2] == ["mode"] \
                and len(words) > 2 and words[2] in MACVLAN_MODES:
            link.mode = words[2]
            del words[:3]
        elif word in ("xdp", "xdpgeneric", "xdpdrv") and words and words[0] == "off":
            words.pop(0)
            link.xdp_prog_id = 0
        else:
            raise Unmodelled(f"ip link set {link.ifname} {word}")


def _is_mac(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts)


def _ip_link_add(state: NetnsState, words: List[str]) -> None:
    """`ip link add NAME [address MAC] [mtu N] [link PARENT] type KIND …`: a macvlan/macvtap child
    of PARENT (`mode MODE`), or a VXLAN/GENEVE device (apply_tunnel.add_tunnel); new links are down."""
    if "type" not in words or not words or words[0] in ("type", "link", "address", "mtu"):
        raise Unmodelled(f"ip link add {' '.join(words)}")
    name, at = words[0], words.index("type")
    head = _options(words[1:at], ("address", "mtu", "link"), ())
    kind, rest = (words[at + 1], words[at + 2:]) if at + 1 < len(words) else ("", [])
    if head["_"] or ("address" in head and not _is_mac(head["address"])) or not head.get("mtu", "0").isdigit():
        raise Unmodelled(f"ip link add {' '.join(words)}")
    if state.link_by_name(name) is not None:
        raise Refused(f"{name} exists in {state.name} (File exists)")
    mtu = int(head["mtu"]) if "mtu" in head else None
    if kind in ("vxlan", "geneve") and "link" not in head:
        add_tunnel(state, name, kind, rest, head.get("address"), mtu)
        _conf_from_default(state, name)
        return
    if kind not in ("macvlan", "macvtap") or "link" not in head or len(rest) != 2 or rest[0] != "mode" \
            or rest[1] not in MACVLAN_MODES:
        raise Unmodelled(f"ip link add {' '.join(words)}")
    parent = link_named(state, head["link"])
    ifindex = max(l.ifindex for l in state.links) + 1
    state.links.append(Link(ifindex, name, kind, admin_up=False, mtu=mtu or parent.mtu,
                            mac=head.get("address") or made_mac(ifindex),
                            lower_netns=state.name, lower_ifindex=parent.ifindex, mode=rest[1]))
    _conf_from_default(state, name)


def _conf_from_default(state: NetnsState, name: str) -> None:
    """A new device's conf/NAME/* settings start as conf/default/* (the kernel copies them)."""
    for family in ("ipv4", "ipv6"):
        default = f"net.{family}.conf.default."
        for key, value in list(state.sysctls.items()):
            if key.startswith(default):
                state.sysctls[f"net.{family}.conf.{name}.{key[len(default):]}"] = value


def delete_link(state: NetnsState, link: Link) -> None:
    """`ip link del NAME`, as the kernel unregisters a device: its addresses, the routes through it,
    its neighbour and proxy entries go; its bridge ports leave the bridge; a veth takes its peer
    along (one in another namespace is not modelled), and the VXLAN devices bound to it (`dev`) and
    its macvlan/ipvlan children go with it."""
    if link.kind in ("", "loopback") and link.ifname == "lo":
        raise Refused("lo cannot be deleted (Operation not supported)")
    gone = [link]
    if link.kind == "veth" and link.peer_ifindex is not None:
        if link.peer_netns != state.name:
            raise Unmodelled(f"deleting {link.ifname} also deletes its peer in {link.peer_netns or 'a namespace not known'}")
        gone += [l for l in state.links if l.ifindex == link.peer_ifindex]
    gone += [l for l in state.links if (l.kind == "vxlan" and l.tunnel_dev == link.ifindex)
             or (l.kind in UPPER_KINDS and l.lower_netns == state.name and l.lower_ifindex == link.ifindex)]
    indexes = {l.ifindex for l in gone}
    state.links = [l for l in state.links if l.ifindex not in indexes]
    state.addrs = [a for a in state.addrs if a.ifindex not in indexes]
    state.routes = [r for r in state.routes if r.oif not in indexes]
    state.neighbours = [n for n in state.neighbours if n.ifindex not in indexes]
    state.ndp_proxies = [n for n in state.ndp_proxies if n.ifindex not in indexes]
    for other in state.links:
        if other.master in indexes:
            other.master = None
    names = tuple(f"net.{family}.conf.{l.ifname}." for l in gone for family in ("ipv4", "ipv6"))
    state.sysctls = {k: v for k, v in state.sysctls.items() if not k.startswith(names)}


def _address_routes_back(state: NetnsState, link) -> None:
    """A link coming up gets the local and prefix routes of its addresses back (the kernel removed
    them when it went down; routes via gateways on it stay gone, as in the kernel)."""
    for addr in state.addrs_on(link.ifindex):
        for route in _address_routes(addr):
            if not any(_same_route(r, route.network, route.table, route.type, None, route.oif) for r in state.routes):
                state.routes.append(route)


def _address_routes(addr: Addr) -> List[Route]:
    """The routes the kernel adds with an address: its local route, and its prefix route (IPv4:
    unless it is a /32 without a peer; IPv6: always, scope universe, metric 256)."""
    routes = local_routes([addr])
    net, six = addr.network, addr.family == 6
    if six or addr.peer or addr.prefixlen < 32:
        routes.append(Route(str(net.network_address), net.prefixlen, RT_TABLE_MAIN, oif=addr.ifindex,
                            prefsrc=None if six else addr.address, scope=0 if six else SCOPE_LINK,
                            priority=256 if six else 0))
    return routes


def _prefix(text: str, family: Optional[int]) -> ipaddress._BaseNetwork:
    if text == "default":
        return ipaddress.ip_network("::/0" if family == 6 else "0.0.0.0/0")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise Unmodelled(f"not a prefix: {text}") from None


def _ip_addr(state: NetnsState, words: List[str], family) -> None:
    if not words or words[0] not in ("add", "del", "replace", "change"):
        raise Unmodelled(f"ip addr {' '.join(words)}")
    verb, words = words[0], words[1:]
    options = _options(words, ("dev", "peer", "scope", "label", "broadcast", "brd", "valid_lft", "preferred_lft"),
                       ("nodad", "noprefixroute"))
    address, _, length = options["_"][0].partition("/") if options["_"] else ("", "", "")
    link = link_named(state, options.get("dev", ""))
    fam = family_of(address)
    length = int(length) if length else (32 if fam == 4 else 128)
    peer = options.get("peer", "").split("/")[0] or None
    mine = [a for a in state.addrs if a.address == address and a.ifindex == link.ifindex]
    if verb == "del":
        if not mine:
            raise Refused(f"{address} is not on {link.ifname}")
        state.addrs = [a for a in state.addrs if a not in mine]
        state.routes = [r for r in state.routes if not _derived_from(r, mine[0])]
        return
    if mine and verb == "add":
        raise Refused(f"{address} is already on {link.ifname} (RTNETLINK answers: File exists)")
    state.addrs = [a for a in state.addrs if a not in mine]
    addr = Addr(link.ifindex, address, length, peer=peer)
    state.addrs.append(addr)
    routes = _address_routes(addr)
    state.routes += routes[:1] if "noprefixroute" in options["_flags"] else routes


def _derived_from(route: Route, addr: Addr) -> bool:
    """The local route of an address, and its prefix route when no other address keeps it."""
    if route.table == RT_TABLE_LOCAL and route.type == "local" and route.dst == addr.address:
        return True
    net = addr.network
    return (route.table == RT_TABLE_MAIN and route.oif == addr.ifindex and route.gateway is None
            and route.type == "unicast" and ipaddress.ip_address(route.dst) == net.network_address
            and route.dst_len == net.prefixlen)


def _options(words: List[str], valued: Sequence[str], flags: Sequence[str]) -> dict:
    """Keyword options of an `ip` command; the words that are neither go under "_"."""
    found: dict = {"_": [], "_flags": set()}
    i = 0
    while i < len(words):
        word = words[i]
        if word in valued:
            if i + 1 >= len(words):
                raise Unmodelled(f"{word} without a value")
            found[word] = words[i + 1]
            i += 2
            continue
        if word in flags:
            found["_flags"].add(word)
        else:
            found["_"].append(word)
        i += 1
    return found


ROUTE_OPTIONS = ("via", "dev", "table", "metric", "priority", "preference", "src", "proto", "scope", "tos", "mtu")


def _ip_route(state: NetnsState, words: List[str], family) -> None:
    if not words or words[0] not in ("add", "replace", "del", "delete", "append", "change"):
        raise Unmodelled(f"ip route {' '.join(words)}")
    verb, words = words[0], words[1:]
    options = _options(words, ROUTE_OPTIONS, ("onlink",))
    rest = options["_"]
    typed = bool(rest) and rest[0] in ROUTE_TYPES
    kind = rest.pop(0) if typed else "unicast"
    if len(rest) != 1:
        raise Unmodelled(f"ip route {verb} {' '.join(words)}")
    gateway = options.get("via")
    family = family or (family_of(gateway) if gateway else None) or \
        (family_of(rest[0].split("/")[0]) if rest[0] != "default" else 4)
    net = _prefix(rest[0], family)
    table = _table(options.get("table", "main"))
    metric = int(options.get("metric", options.get("priority", options.get("preference", "0"))))
    if family == 6 and "metric" not in options and kind == "unicast":
        metric = 1024
    oif = link_named(state, options["dev"]).ifindex if "dev" in options else None
    if verb in ("del", "delete"):
        gone = [r for r in state.routes if _same_route(r, net, table, kind if typed else None, gateway, oif)]
        if not gone:
            raise Refused(f"no route {net} in table {table} to delete")
        state.routes.remove(gone[0])
        return
    if oif is None and kind == "unicast":
        oif = _gateway_device(state, gateway, "onlink" in options["_flags"]) if gateway else None
        if oif is None:
            raise Refused(f"ip route {verb} {rest[0]}: no device")
    if gateway and "onlink" not in options["_flags"] and not _reachable_gateway(state, gateway, oif):
        raise Refused(f"gateway {gateway} is not on-link on {state.ifname(oif)} (Nexthop has invalid gateway)")
    route = Route(str(net.network_address), net.prefixlen, table, kind, oif, gateway, options.get("src"), metric,
                  SCOPE_LINK if kind == "unicast" and gateway is None else 0)
    if verb in ("replace", "change"):
        state.routes = [r for r in state.routes if not (_same_route(r, net, table) and r.priority == metric)]
    elif verb == "add" and any(_same_route(r, net, table) and r.priority == metric for r in state.routes):
        raise Refused(f"route {net} exists (RTNETLINK answers: File exists)")
    state.routes.append(route)


def _same_route(route: Route, net, table: int, kind: Optional[str] = None, gateway: Optional[str] = None,
                oif: Optional[int] = None) -> bool:
    return (route.table == table and route.family == net.version and route.dst_len == net.prefixlen
            and ipaddress.ip_address(route.dst) == net.network_address and (kind is None or route.type == kind)
            and (gateway is None or route.gateway == gateway) and (oif is None or route.oif == oif))


def _table(name: str) -> int:
    named = {"main": RT_TABLE_MAIN, "local": RT_TABLE_LOCAL, "default": 253}
    if name in named:
        return named[name]
    if not name.isdigit():
        raise Unmodelled(f"table {name}")
    return int(name)


def _gateway_device(state: NetnsState, gateway: str, onlink: bool) -> Optional[int]:
    """The device a gateway is reached by: the connected route that covers it."""
    from .routing import fib_lookup

    route = fib_lookup(state, gateway).route
    return route.oif if route is not None and route.type == "unicast" and route.gateway is None else None


def _reachable_gateway(state: NetnsState, gateway: str, oif: Optional[int]) -> bool:
    """The kernel takes `via GW dev IF` (without onlink) only when GW is on a link route of IF,
    or (IPv6) link-local."""
    if family_of(gateway) == 6 and ipaddress.ip_address(gateway).is_link_local:
        return True
    address = ipaddress.ip_address(gateway)
    return any(r.oif == oif and r.gateway is None and r.type == "unicast" and address in r.network
               for r in state.routes if r.family == address.version)


def _ip_rule(state: NetnsState, words: List[str], family) -> None:
    if words[:2] not in (["del", "priority"], ["del", "pref"], ["delete", "priority"]) or len(words) != 3 \
            or not words[2].isdigit():
        raise Unmodelled(f"ip rule {' '.join(words)}")
    priority, fam = int(words[2]), family or 4
    gone = [r for r in state.rules if r.priority == priority and r.family == fam]
    if not gone:
        raise Refused(f"no IPv{fam} rule {priority}")
    state.rules.remove(gone[0])


def _ip_neigh(state: NetnsState, words: List[str], family) -> None:
    if not words:
        raise Unmodelled("ip neigh")
    verb, rest = words[0], words[1:]
    options = _options(rest, ("dev", "lladdr", "nud", "to"), ("proxy",))
    link = link_named(state, options.get("dev", ""))
    if verb in ("del", "delete", "flush"):
        address = options.get("to") or (options["_"][0] if options["_"] else None)
        if "proxy" in options["_flags"]:
            state.ndp_proxies = [n for n in state.ndp_proxies if not (n.ifindex == link.ifindex and n.dst == address)]
            return
        kept = [n for n in state.neighbours if not (n.ifindex == link.ifindex and address in (None, n.dst))]
        if verb != "flush" and len(kept) == len(state.neighbours):
            raise Refused(f"no neighbour {address} on {link.ifname} (No such file or directory)")
        state.neighbours = kept
        return
    if verb in ("add", "replace") and options["_"]:
        address = options["_"][0]
        if "proxy" in options["_flags"]:
            state.ndp_proxies.append(Neighbour(link.ifindex, address, "proxy"))
            return
        if verb == "add" and state.neighbour(link.ifindex, address) is not None:
            raise Refused(f"a neighbour entry for {address} exists on {link.ifname} (File exists)")
        state.neighbours = [n for n in state.neighbours if not (n.ifindex == link.ifindex and n.dst == address)]
        state.neighbours.append(Neighbour(link.ifindex, address, options.get("nud", "permanent"),
                                          options.get("lladdr")))
        return
    raise Unmodelled(f"ip neigh {' '.join(words)}")


# -- firewalls --------------------------------------------------------------------------------------

def _iptables(attribute: str) -> Callable[[NetnsState, List[str]], None]:
    def apply(state: NetnsState, words: List[str]) -> None:
        setattr(state, attribute, edit_iptables_save(getattr(state, attribute), words))
    return apply


def edit_iptables_save(text: str, words: List[str]) -> str:
    """`iptables [-t T] -D|-I|-A CHAIN rule…` and `-P CHAIN POLICY` on iptables-save text."""
    table = "filter"
    if len(words) >= 2 and words[0] == "-t":
        table, words = words[1], words[2:]
    if len(words) < 2 or words[0] not in ("-D", "-I", "-A", "-P"):
        raise Unmodelled(f"iptables {' '.join(words)}")
    verb, chain, rule = words[0], words[1], words[2:]
    if verb == "-I" and rule and rule[0].isdigit():
        if rule[0] != "1":
            raise Unmodelled("iptables -I at a position other than 1")
        rule = rule[1:]
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"*{table}"), None)
    if start is None:
        if verb == "-D":
            raise Refused(f"no table {table} to delete from")
        lines += [f"*{table}", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", "COMMIT"]
        start = len(lines) - 5
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "COMMIT")
    if verb == "-P":
        policy = [i for i in range(start, end) if lines[i].startswith(f":{chain} ")]
        if not policy or len(rule) != 1:
            raise Unmodelled(f"iptables -P {chain}")
        lines[policy[0]] = f":{chain} {rule[0]} [0:0]"
        return "\n".join(lines) + "\n"
    if not any(lines[i].startswith(f":{chain} ") for i in range(start, end)):
        raise Refused(f"no chain {chain} in table {table}")
    if verb == "-D":
        for i in range(start, end):
            if _rule_words(lines[i]) == ["-A", chain] + rule:
                del lines[i]
                return "\n".join(lines) + "\n"
        raise Refused(f"no rule -A {chain} {' '.join(rule)} to delete")
    line = shlex.join(["-A", chain] + rule)
    first = next((i for i in range(start, end) if _rule_words(lines[i])[:2] == ["-A", chain]), None)
    if verb == "-I" and first is not None:
        lines.insert(first, line)
    else:
        last = [i for i in range(start, end) if _rule_words(lines[i])[:2] == ["-A", chain]]
        lines.insert(last[-1] + 1 if last else end, line)
    return "\n".join(lines) + "\n"


def _rule_words(line: str) -> List[str]:
    """A rule line of iptables-save (with `-c`, a `[packets:bytes]` counter first) as words."""
    words = shlex.split(line) if line.lstrip().startswith(("-A ", "[")) else []
    return words[1:] if words and words[0].startswith("[") else words


def _nft(state: NetnsState, words: List[str]) -> None:
    """`nft delete rule F T C handle H` and `nft insert rule F T C <match> accept` (the matches
    firewall.nft_match_exprs reads)."""
    items = state.nft_ruleset.setdefault("nftables", [])
    if words[:2] == ["delete", "rule"] and len(words) == 7 and words[5] == "handle" and words[6].isdigit():
        family, table, chain, handle = words[2], words[3], words[4], int(words[6])
        for i, item in enumerate(items):
            rule = item.get("rule")
            if rule and (rule.get("family"), rule.get("table"), rule.get("chain"), rule.get("handle")) == \
                    (family, table, chain, handle):
                del items[i]
                return
        raise Refused(f"no nft rule with handle {handle}")
    matches = nft_match_exprs(words[5:-1]) if words[:2] == ["insert", "rule"] and words[-1:] == ["accept"] else None
    if matches is not None:
        family, table, chain = words[2], words[3], words[4]
        if not any(c.get("family") == family and c.get("table") == table and c.get("name") == chain
                   for c in nft_objects(state.nft_ruleset, "chain")):
            raise Refused(f"no nft chain {family} {table} {chain}")
        rule = {"family": family, "table": table, "chain": chain, "handle": _free_handle(items),
                "expr": matches + [{"accept": None}]}
        first = next((i for i, item in enumerate(items) if item.get("rule") and
                      (item["rule"]["family"], item["rule"]["table"], item["rule"]["chain"]) == (family, table, chain)),
                     len(items))
        items.insert(first, {"rule": rule})
        return
    raise Unmodelled(f"nft {' '.join(words)}")


def _free_handle(items: List[dict]) -> int:
    return 1 + max((i["rule"].get("handle", 0) for i in items if "rule" in i), default=0)


def _tc(state: NetnsState, words: List[str]) -> None:
    """`tc filter del dev X ingress|egress`: no filter left that may drop (the qdisc stays, but the
    model only knows filters can be there)."""
    if words[:3] != ["filter", "del", "dev"] or len(words) != 5 or words[4] not in ("ingress", "egress"):
        raise Unmodelled(f"tc {' '.join(words)}")
    link_named(state, words[3]).tc_qdisc = ""


_IP_OBJECTS = {"link": _ip_link, "l": _ip_link, "addr": _ip_addr, "address": _ip_addr, "a": _ip_addr,
               "route": _ip_route, "r": _ip_route, "ro": _ip_route, "rule": _ip_rule, "ru": _ip_rule,
               "neigh": _ip_neigh, "neighbour": _ip_neigh, "neighbor": _ip_neigh, "n": _ip_neigh}
_TOOLS = {"sysctl": _sysctl, "ip": _ip, "bridge": bridge, "iptables": _iptables("iptables_save"),
          "ip6tables": _iptables("ip6tables_save"), "nft": _nft, "tc": _tc}
