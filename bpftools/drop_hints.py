"""trace-drops' hint for a drop: the reason's entry in drop_causes.DROP_CAUSES, with facts
read from the drop's namespace at that moment through facts.namespace.NamespaceInspector
(cached per namespace and throttled, so a flood of drops does not fork a process per packet)."""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional

from . import namespaces
from .drop_causes import DROP_CAUSES, drop_cause
from .errors import survive
from .facts.namespace import NamespaceInspector

log = logging.getLogger(__name__)


def explain(event, facts: dict) -> Optional[str]:
    """The hint line for a drop given the facts; None for reasons without an explanation."""
    entry = drop_cause(event.reason)
    return entry.explain(event, facts) if entry else None


class HintEngine:
    """event -> hint text, reading facts from the event's namespace (cached, throttled)."""

    def __init__(self):
        self._inspectors: Dict[Optional[str], NamespaceInspector] = {}
        self._own_inode: Optional[int] = None

    def inspector(self, event) -> Optional[NamespaceInspector]:
        if self._own_inode is None:
            self._own_inode = os.stat("/proc/thread-self/ns/net").st_ino
        if event.netns_inode == self._own_inode:
            ns = None
        elif event.netns_name:
            ns = event.netns_name
        else:
            ns = namespaces.find_inode(event.netns_inode)  # a container's, a process's
            if ns is None or not ns.path:
                return None
        if ns not in self._inspectors:
            self._inspectors[ns] = NamespaceInspector(ns)
        return self._inspectors[ns]

    def prime(self, flt, names) -> None:
        """Baseline netfilter snapshots for the namespaces in scope (not for --all-netns)."""
        if flt.all_netns:
            return
        inodes = {i.netns_inode for i in flt.ifaces} | set(flt.netns_inodes)
        for inode in list(inodes)[:8]:
            ok, ns = names.netns_reachable(inode)
            if not ok:
                continue
            inspector = self._inspectors.setdefault(ns, NamespaceInspector(ns))
            for family in ("ipv4", "ipv6"):
                with survive(log, "reading the %s rulesets of netns %s", family, ns):
                    inspector.prime_netfilter(family)

    def facts(self, event, ns: NamespaceInspector) -> dict:
        entry = drop_cause(event.reason)
        return entry.facts(event, ns) if entry else {}

    def hint(self, event) -> Optional[str]:
        if drop_cause(event.reason) is None:
            return None
        ns = self.inspector(event)
        facts = {}
        if ns is not None:
            try:
                facts = self.facts(event, ns)
            except Exception as exc:  # the hint is still given, without the facts
                log.debug("facts for %s in %s: %s", event.reason, event.netns, exc)
        return explain(event, facts)


__all__ = ["DROP_CAUSES", "HintEngine", "explain"]
