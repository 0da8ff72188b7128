"""`bpftools status` and `bpftools detach`: find and remove bpftools attachments."""
from __future__ import annotations

from typing import Optional

import click

from ..kernel.privileges import require_privileges
from ..netlink import select_netns
from ..status import find_attachments, remove_attachments
from .output import checked_ifnames, emit_json, netns_option, say, table


@click.command()
@netns_option("Only this namespace (its attachments and pins)")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per attachment.")
def status(netns: Optional[str], as_json: bool) -> None:
    """List every bpftools attachment in every network namespace."""
    require_privileges()
    found = find_attachments() if netns is None else find_attachments([select_netns(netns)])
    if as_json:
        for item in found:
            emit_json({"type": "attachment", **item})
        return
    if not found:
        say("no bpftools programs attached")
        return
    say(table(["NETNS", "IFACE", "HOOK", "PROG", "ID", "HELD BY"],
                     [(a["netns"], a["ifname"], a["hook"], a["prog_name"],
                       "-" if a["prog_id"] is None else a["prog_id"], a["held_by"])
                      for a in found]))


@click.command()
@click.argument("iface", required=False, callback=checked_ifnames)
@netns_option()
@click.option("--all", "all_", is_flag=True, help="Every bpftools leftover in every namespace.")
@click.option("--force", is_flag=True, help="Also detach bpf_links held by running bpftools processes.")
def detach(iface: Optional[str], netns: Optional[str], all_: bool, force: bool) -> None:
    """Remove leftover bpftools attachments (netlink XDP, tc clsact filters, stale pins)."""
    require_privileges()
    if not iface and not all_:
        raise click.UsageError("name an interface or give --all")
    removed, kept = remove_attachments(iface, select_netns(netns), force)
    for item in removed:
        if item["hook"] == "pin":
            say(f"removed stale pin {item['prog_name']}")
        else:
            say(f"detached {item['hook']} {item['prog_name']} from {item['ifname']} (netns {item['netns']})")
    for item in kept:
        say(f"kept {item['hook']} {item['prog_name']} on {item['ifname']} (netns {item['netns']}): "
                   "held by a running bpftools process (stop it, or use --force)")
    if not removed and not kept:
        say("nothing to detach")


def register(cli: click.Group) -> None:
    cli.add_command(status)
    cli.add_command(detach)
