"""Find bpftools attachments everywhere, and remove leftovers.

bpf_link attachments (XDP links, tcx) belong to a running process and vanish with it;
netlink attachments (XDP via IFLA_XDP, clsact filters) survive `kill -9`, which is why
our programs are named with the `bpftools_` prefix.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Tuple

from . import bpfsys, namespaces
from .attach import PROG_NAME_PREFIX, TC_PARENTS, other_filters, attached_programs
from .errors import BpftoolsError, first_line, survive
from .netlink import NetnsHandle, all_netns, in_netns, ipr, list_interfaces, netns_inode, netns_label

log = logging.getLogger(__name__)

TRACING_TYPES = ("tracepoint", "raw_tracepoint", "kprobe", "perf_event", "tracing")


def _linked_prog_ids() -> Dict[int, int]:
    """prog id -> link id, for programs held by a bpf_link."""
    return {link.prog_id: link.id for link in bpfsys.links()}


def _ip_netns_name(ns: NetnsHandle) -> Optional[str]:
    if isinstance(ns, namespaces.Netns):
        return ns.label if ns.kind == "netns" else None
    return ns


def find_attachments(netns_names: Optional[List[NetnsHandle]] = None) -> List[dict]:
    """Our attachments in these namespaces (None: ours; default: every namespace)."""
    linked = _linked_prog_ids()
    found = []
    scope = netns_names if netns_names is not None else all_netns()
    for ns in scope:
        inode = netns_inode(ns)
        label = netns_label(inode)
        try:
            ifaces = list_interfaces(ns)
        except Exception as exc:  # the namespace went away while we looked
            log.debug("listing the interfaces of %s failed: %s", label, first_line(exc))
            continue
        for iface in ifaces:
            try:
                programs = attached_programs(iface)
            except (BpftoolsError, OSError):  # the interface went away while we looked (containers come and go)
                continue
            for prog in programs:
                if not prog["prog_name"].startswith(PROG_NAME_PREFIX):
                    continue
                found.append({
                    "netns": label, "netns_inode": inode, "netns_name": _ip_netns_name(ns),
                    "ifname": iface.ifname, "ifindex": iface.ifindex,
                    "hook": prog["hook"], "prog_id": prog["prog_id"], "prog_name": prog["prog_name"],
                    "held_by": "bpf_link" if prog["prog_id"] in linked else "netlink",
                    **{k: prog[k] for k in ("prio", "handle") if k in prog},
                })
    if netns_names is None:
        found += _loaded_tracing_programs()
    inodes = {netns_inode(n) for n in scope}
    found += [p for p in _pins() if netns_names is None or p["netns_inode"] in inodes]
    return found


def _loaded_tracing_programs() -> List[dict]:
    """bpftools tracepoint programs: alive only while the process that loaded them runs."""
    result = []
    for prog_id in bpfsys._next_id(bpfsys.PROG_GET_NEXT_ID):
        info = bpfsys.prog_info(prog_id)
        if info and info.name.startswith(PROG_NAME_PREFIX) and info.type in TRACING_TYPES:
            result.append({"netns": "-", "netns_inode": None, "netns_name": None, "ifname": "-", "ifindex": 0,
                           "hook": info.type,
                           "prog_id": info.id, "prog_name": info.name, "held_by": "process"})
    return result


PIN_ROOT = bpfsys.PIN_ROOT  # what our programs pin (the xdp-decap allow-list)


def _pins() -> List[dict]:
    """Objects pinned under PIN_ROOT; `stale` when no loaded program uses them any more
    (the process that pinned them was killed before it could unpin)."""
    paths = [os.path.join(d, f) for d, _dirs, files in os.walk(PIN_ROOT) for f in files]
    if not paths:
        return []
    in_use = {map_id for prog_id in bpfsys.prog_ids() for map_id in bpfsys.prog_map_ids(prog_id)}
    result = []
    for path in sorted(paths):
        try:
            fd = bpfsys.obj_get(path)
        except OSError:
            continue
        try:
            map_id = bpfsys.map_id_of_fd(fd)
        finally:
            os.close(fd)
        parts = os.path.relpath(path, PIN_ROOT).split(os.sep)  # capability/netns/ifname/map
        netns, ifname = (namespaces.label_from_path_component(parts[1]), parts[2]) if len(parts) == 4 else ("-", "-")
        # Matched to namespaces by what the label names now, not by text: labels of the same
        # namespace can differ between the process that pinned and this one.
        inode = namespaces.inode_of_label(netns) if netns != "-" else None
        result.append({"netns": netns, "netns_inode": inode, "netns_name": None, "ifname": ifname, "ifindex": 0, "hook": "pin",
                       "prog_id": None, "prog_name": path,
                       "held_by": "process" if map_id in in_use else "stale pin"})
    return result


def _remove(item: dict) -> None:
    hook = item["hook"]
    if hook == "pin":
        bpfsys.unpin(item["prog_name"])
        return
    ifindex = item["ifindex"]
    ns = None if item["netns_inode"] == namespaces.own_inode() else namespaces.find_inode(item["netns_inode"])
    if item["held_by"] == "bpf_link":
        link_id = _linked_prog_ids().get(item["prog_id"])
        if link_id is not None:
            bpfsys.detach_link(link_id)
        return
    with ipr(ns) as sock:
        if hook == "xdp":
            sock.link("set", index=ifindex, xdp_fd=-1)
        elif hook.startswith("tc/"):
            sock.tc("del-filter", "bpf", ifindex, item["handle"], parent=TC_PARENTS[hook[3:]], prio=item["prio"])
            if not other_filters(sock, ifindex):
                # An empty clsact does nothing; the process that made it for us died before removing it.
                with survive(log, "removing an empty clsact qdisc (ifindex %s)", ifindex):
                    sock.tc("del", "clsact", ifindex)


def remove_attachments(ifname: Optional[str], netns: NetnsHandle, force: bool) -> Tuple[List[dict], List[dict]]:
    """Remove bpftools attachments (all, or on one interface); (removed, kept because held by a link)."""
    scope = [netns] if ifname else None
    removed, kept = [], []
    for item in find_attachments(scope):
        if ifname and item["ifname"] != ifname:
            continue
        if item["hook"] in TRACING_TYPES:
            continue  # perf-event attachments of a running process: only it can undo them
        if item["held_by"] in ("bpf_link", "process") and not force:
            kept.append(item)
            continue
        with survive(log, "removing %s %s from %s (netns %s)", item["hook"], item["prog_name"], item["ifname"],
                     item["netns"], level=logging.WARNING), in_netns(None):
            _remove(item)
            removed.append(item)
    return removed, kept
