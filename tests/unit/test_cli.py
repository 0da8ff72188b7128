"""CLI behaviour that needs neither root nor bcc."""
import subprocess
import sys

from click.testing import CliRunner

from bpftools.cli.main import cli, register_commands

register_commands()


def test_help_lists_the_foundation_commands():
    result = CliRunner().invoke(cli, ["--help"], catch_exceptions=False)
    assert result.exit_code == 0
    for command in ("doctor", "status", "detach", "mount"):
        assert command in result.output


def test_detach_needs_an_interface_or_all(monkeypatch):
    monkeypatch.setattr("bpftools.cli.status.require_privileges", lambda: None)
    result = CliRunner().invoke(cli, ["detach"])
    assert result.exit_code == 2
    assert "name an interface or give --all" in result.output


def test_missing_privileges_is_one_line_and_nonzero(monkeypatch):
    proc = subprocess.run(
        [sys.executable, "-c",
         "import bpftools.kernel.privileges as p; p.effective_capabilities = lambda: 0;"
         "from bpftools.cli.main import main; main(['doctor'])"],
        capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "bpftools: error: bpftools needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN) to load and attach BPF programs"]
    assert "Traceback" not in proc.stderr


def test_missing_bcc_says_what_to_install_in_one_line():
    proc = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.modules['bcc'] = None\n"
         "import bpftools.cli.main as m\n"
         "@m.cli.command()\n"
         "def needs_bcc():\n"
         "    import bcc\n"
         "m.main(['needs-bcc'])"],
        capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bpftools: error: bcc's Python module is not installed")
    assert "python3-bpfcc" in lines[0] and "--system-site-packages" in lines[0]


def test_status_shows_a_dash_for_a_pin_without_a_program(monkeypatch):
    monkeypatch.setattr("bpftools.cli.status.require_privileges", lambda: None)
    monkeypatch.setattr("bpftools.cli.status.find_attachments", lambda: [
        {"netns": "ns1", "netns_inode": 1, "netns_name": None, "ifname": "vb", "ifindex": 0, "hook": "pin",
         "prog_id": None, "prog_name": "/sys/fs/bpf/bpftools/xdp_decap/ns1/vb/decap_allow", "held_by": "stale pin"}])
    result = CliRunner().invoke(cli, ["status"], catch_exceptions=False)
    header, row = result.output.splitlines()
    assert header.split() == ["NETNS", "IFACE", "HOOK", "PROG", "ID", "HELD", "BY"]
    assert row.split()[4] == "-" and "None" not in result.output


def test_a_bad_listen_address_is_the_error_shown_first():
    """Before "nothing to export" and before missing privileges."""
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                           sys.executable, "-m", "bpftools", "serve", "--listen", "127.0.0.1:99999"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "bpftools: error: --listen '127.0.0.1:99999': expected HOST:PORT, e.g. 127.0.0.1:9654"]


def test_missing_optional_modules_name_their_extra():
    from bpftools.cli.main import missing_module_hint

    assert "bpftools[pcap]" in missing_module_hint(ModuleNotFoundError("no scapy", name="scapy.utils"))
    assert "bpftools[docker]" in missing_module_hint(ModuleNotFoundError("no docker", name="docker"))
    assert missing_module_hint(ModuleNotFoundError("other", name="yaml")) is None
