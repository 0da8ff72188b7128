"""`bpftools serve`: the Prometheus exporter."""
from __future__ import annotations

from typing import Optional, Tuple

import click

from ..attach import terminate_gracefully
from ..kernel.privileges import require_privileges
from ..logs import log_options, setup_logging
from ..serve import Exporter, log, reload_on_sighup
from ..serve_config import DEFAULT_LISTEN, build_config, read_config_file
from .output import announce_ready, netns_option


@click.command()
@click.option("--listen", default=None, metavar="HOST:PORT", help=f"Where to serve /metrics [default: {DEFAULT_LISTEN}].")
@click.option("--drops", is_flag=True, help="Export drops by reason (skb:kfree_skb).")
@netns_option("Namespace for --drops and for interfaces without NETNS/")
@click.option("--all-netns", is_flag=True, help="--drops in every network namespace.")
@click.option("--encap", multiple=True, metavar="[NETNS/]IFACE", help="Count tunnel traffic on IFACE; repeatable.")
@click.option("--ingress-hook", type=click.Choice(["tc", "xdp"]), default=None, help="Ingress hook for --encap.")
@click.option("--udp-port", multiple=True, metavar="TYPE=PORT", help="Extra UDP port for a tunnel type (--encap).")
@click.option("--decap", multiple=True, metavar="[NETNS/]IFACE", help="Run the XDP ipip decapsulator on IFACE.")
@click.option("--allow-remote", multiple=True, metavar="CIDR", help="Tunnel senders --decap accepts.")
@click.option("--allow-any", is_flag=True, help="--decap accepts any sender (unsafe, CVE-2020-10136).")
@click.option("--local", multiple=True, metavar="ADDR", help="Tunnel endpoint addresses for --decap.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML or YAML file with the same keys; re-read on SIGHUP and when it changes.")
@click.option("--web.config.file", "web_config_file", type=click.Path(dir_okay=False), default=None,
              help="TLS and basic auth, in the Prometheus exporter-toolkit format; reloaded with --config.")
@log_options
def serve(listen: Optional[str], drops: bool, netns: Optional[str], all_netns: bool, encap: Tuple[str, ...],
          ingress_hook: Optional[str], udp_port: Tuple[str, ...], decap: Tuple[str, ...],
          allow_remote: Tuple[str, ...], allow_any: bool, local: Tuple[str, ...], config_file: Optional[str],
          web_config_file: Optional[str], log_level: str, log_format: str) -> None:
    """Export drops, tunnel counters and decap results to Prometheus.

    SIGHUP, or a change of --config FILE, re-reads it and attaches or detaches only what changed; SIGINT/SIGTERM
    detach everything and exit."""
    app = click.get_current_context().obj
    setup_logging("debug" if getattr(app, "debug", False) else log_level, log_format)
    flags = dict(listen=listen, drops=drops, netns=netns, all_netns=all_netns, encap=encap,
                 ingress_hook=ingress_hook, udp_port=udp_port, decap=decap, allow_remote=allow_remote,
                 allow_any=allow_any, local=local, web_config_file=web_config_file)

    def load():
        return build_config(read_config_file(config_file) if config_file else {}, flags)

    config = load()  # bad input is reported before missing privileges
    require_privileges()
    reloadable = config_file or web_config_file  # SIGHUP re-reads them
    exporter = Exporter(config, reload_config=load if reloadable else None, config_file=config_file)
    with terminate_gracefully(), reload_on_sighup(exporter), exporter:
        log.info("serving metrics on %s", exporter.url)
        announce_ready(f"serving metrics on {exporter.url}")
        exporter.run()


def register(cli: click.Group) -> None:
    cli.add_command(serve)
