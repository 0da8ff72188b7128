"""`bpftools demo`: why does this ping fail? A throwaway network shows it, then goes away.

    client 10.88.1.2 --- (10.88.1.1) router (10.88.2.1) --- 10.88.2.2 server

Two classic failures, each traced live with trace-drops' own machinery (DropTracer, hints):
1. Docker's bridge story: the router's iptables FORWARD policy is DROP, so the client's
   ping to the server vanishes (NETFILTER_DROP, and which chain/policy did it).
2. Strict reverse-path filtering with an asymmetric route: the client pings from a second
   address whose return route on the router points the other way (IP_RPFILTER, with the
   effective rp_filter value and the reverse route that failed).
Each is fixed afterwards to show the ping working. Everything lives in namespaces created
here and is removed at the end, also on errors or Ctrl-C.
"""
from __future__ import annotations

import time
from typing import Callable, List

from .drop_hints import HintEngine
from .kernel.drop_reasons import kfree_skb_format
from .netlink import netns_inode
from .topology import Topology, run
from .drop_events import CountRow, Names, bcc_ksym, decode_event, summarize, wall_clock_offset_ns
from .trace_drops import DropFilter, DropTracer
from .traffic import resolve_neighbour

CLIENT, ROUTER_LEFT, ROUTER_RIGHT, SERVER = "10.88.1.2", "10.88.1.1", "10.88.2.1", "10.88.2.2"
SECOND_ADDR = "10.88.9.2"  # the client's second address, for the asymmetric route
Echo = Callable[[str], None]


class Demo:
    def __init__(self, topo: Topology, echo: Echo):
        self.topo, self.echo = topo, echo
        self.client = self.router = self.server = ""

    def build(self) -> None:
        t = self.topo
        self.client, self.router, self.server = t.netns("client"), t.netns("router"), t.netns("server")
        t.veth(self.client, "eth0", self.router, "r-client", f"{CLIENT}/24", f"{ROUTER_LEFT}/24")
        t.veth(self.server, "eth0", self.router, "r-server", f"{SERVER}/24", f"{ROUTER_RIGHT}/24")
        t.sysctl(self.router, "net.ipv4.ip_forward", 1)
        run("ip", "route", "add", "default", "via", ROUTER_LEFT, netns=self.client)
        run("ip", "route", "add", "default", "via", ROUTER_RIGHT, netns=self.server)
        for ns in (self.client, self.router, self.server):  # keep IPv6 chatter out of the picture
            t.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", 1)
        resolve_neighbour(self.client, SERVER)
        resolve_neighbour(self.server, CLIENT)
        self.echo(f"network: {self.client} {CLIENT} --- router {self.router} --- {SERVER} {self.server}")

    def ping(self, src: str = "") -> bool:
        args = ["ping", "-c", "2", "-i", "0.2", "-W", "1", *(["-I", src] if src else []), SERVER]
        self.echo(f"$ ip netns exec {self.client} {' '.join(args)}")
        ok = run(*args, netns=self.client, check=False).returncode == 0
        self.echo("  ping works" if ok else "  ping FAILS: 100% packet loss")
        return ok

    def sh(self, ns: str, *args: str) -> None:
        self.echo(f"$ ip netns exec {ns} {' '.join(args)}")
        run(*args, netns=ns)


def run_demo(echo: Echo) -> List[CountRow]:
    """Build, break, trace, fix, tear down; the per-(netns, interface, reason) drop counts."""
    fmt = kfree_skb_format()
    with Topology("demo") as topo:
        demo = Demo(topo, echo)
        demo.build()
        # The router is where the failures happen; the client would also show harmless NO_SOCKET
        # drops of echo replies (iputils ping reads them from a raw socket).
        flt = DropFilter(netns_inodes={netns_inode(demo.router)})
        with DropTracer(flt, summary=False, fmt=fmt) as tracer:
            names = Names(fmt, ksym=bcc_ksym)
            hints = HintEngine()
            hints.prime(flt, names)
            clock = wall_clock_offset_ns()

            def show_drops() -> None:
                time.sleep(0.1)
                for _ in range(3):
                    for raw in tracer.poll(50):
                        event = decode_event(raw, names, clock)
                        event.hint = hints.hint(event)
                        echo(event.text())

            echo(f"\n== 1. the router's FORWARD policy is DROP (Docker's bridge story), via {tracer.method}")
            demo.sh(demo.router, "iptables", "-P", "FORWARD", "DROP")
            demo.ping()
            show_drops()
            echo("fix: accept the forwarded traffic")
            demo.sh(demo.router, "iptables", "-P", "FORWARD", "ACCEPT")
            demo.ping()
            show_drops()

            echo("\n== 2. strict rp_filter on the router and an asymmetric route")
            demo.sh(demo.client, "ip", "addr", "add", f"{SECOND_ADDR}/32", "dev", "eth0")
            demo.sh(demo.router, "ip", "route", "add", f"{SECOND_ADDR}/32", "via", SERVER)
            demo.sh(demo.router, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
            demo.ping(src=SECOND_ADDR)
            show_drops()
            echo("fix: route the replies back where the requests come from")
            demo.sh(demo.router, "ip", "route", "replace", f"{SECOND_ADDR}/32", "via", CLIENT)
            demo.ping(src=SECOND_ADDR)
            show_drops()
            return summarize(tracer.counts(), names)
