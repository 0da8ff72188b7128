"""The `bpftools` command: a thin click layer. Commands parse options, call a capability
module, print. User errors leave through `abort()` as one line on stderr."""
from __future__ import annotations

import sys
import traceback

import click

from .. import __version__
from ..errors import BpftoolsError
from ..logs import setup_logging
from .output import EscapingStream, say


class App:
    def __init__(self, debug: bool):
        self.debug = debug


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True,
              help="Log every error bpftools survives, at debug level, and show tracebacks of unexpected ones.")
@click.option("--cri-endpoint", metavar="unix:///PATH", envvar="CONTAINER_RUNTIME_ENDPOINT",
              help="The CRI runtime's socket that names pods (default: containerd's, else CRI-O's; "
                   "also $CONTAINER_RUNTIME_ENDPOINT).")
@click.version_option(__version__, prog_name="bpftools")
@click.pass_context
def cli(ctx: click.Context, debug: bool, cri_endpoint) -> None:
    """Why does this ping fail? eBPF drop tracing, tunnel counters, XDP decap, Prometheus export."""
    ctx.obj = App(debug)
    setup_logging("debug" if debug else "warning")
    from .. import cri

    cri.configure(cri_endpoint)


def register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(cli)


# Each module under bpftools/cli/ registers its commands on the group.
COMMAND_MODULES = ("doctor", "status", "encap_stats", "trace_drops", "xdp_decap", "serve", "diagnose", "lab", "demo")


# Python modules that come from elsewhere than bpftools' own requirements: what to install instead
# of a traceback (bcc is the distribution's; the others are extras, see pyproject.toml).
MISSING_MODULE_HINTS = {
    "bcc": "bcc's Python module is not installed: install the distribution's package (Debian/Ubuntu: "
           "apt install python3-bpfcc; Fedora: dnf install python3-bcc) and install bpftools with "
           "`pipx install --system-site-packages` (the PyPI package named bcc is unrelated)",
    "scapy": "this needs scapy: pipx inject bpftools scapy (or pip install 'bpftools[pcap]')",
    "docker": "this needs the Docker SDK: pipx inject bpftools docker (or pip install 'bpftools[docker]')",
}


def missing_module_hint(exc: ModuleNotFoundError):
    return MISSING_MODULE_HINTS.get((exc.name or "").split(".")[0])


def main(argv=None) -> None:
    from .. import runtimes

    runtimes.install()  # pods and Docker containers name namespaces
    register_commands()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="bpftools", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show(file=EscapingStream(sys.stderr))
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BpftoolsError as exc:
        say(f"bpftools: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except ModuleNotFoundError as exc:
        hint = missing_module_hint(exc)
        if hint is None:
            _internal_error(exc, debug)
        say(f"bpftools: error: {hint}", err=True)
        sys.exit(1)
    except Exception as exc:  # never a traceback for users unless they ask
        _internal_error(exc, debug)


def _internal_error(exc: Exception, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    say(f"bpftools: internal error: {type(exc).__name__}: {exc} (re-run with --debug for details)", err=True)
    sys.exit(70)
