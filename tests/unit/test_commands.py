"""Every printed command gives back, pasted into bash, exactly the argv bpftools meant, whatever
names other people chose; text output lets no control byte reach the terminal (issue 20)."""
from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile_names import (as_bytes, bash_words, dns_labels, docker_names, ifnames, netns_names)
from bpftools.commands import Command, argv_of, in_ns, in_netns_of, quote_word, render, rendered, run_argv
from bpftools.names import check_netns_selector, ifname_problem
from bpftools.text import shown, terminal_safe

FIXTURES = Path(__file__).parent / "fixtures" / "diagnose"
PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LINK_UP = "ip link set dev {} up"


def control_free(data: bytes) -> bool:
    """No byte below 0x20 but the newline, no DEL, no C1 control (as UTF-8: c2 80..c2 9f)."""
    return not re.search(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]", data)


def expect(prefix, argv):
    return [as_bytes(w) for w in list(prefix) + list(argv)]


# -- one word at a time -------------------------------------------------------------------------------------

@PROPERTY
@given(st.one_of(ifnames(), netns_names(), st.text().filter(lambda t: "\0" not in t)))  # no argv holds NUL
def test_a_quoted_word_is_one_word_and_the_same_bytes(word):
    line = quote_word(word)
    assert control_free(line.encode("utf-8"))
    assert bash_words(line)[0] == [as_bytes(word)]
    if line.startswith("$'") is False:   # POSIX quoting: Python's shlex reads it back too
        assert shlex.split(line) == [word]


def test_plain_words_stay_as_they_are_and_control_bytes_use_ansi_c_quoting():
    assert quote_word("eth0") == "eth0"
    assert quote_word("a`id`") == "'a`id`'"
    assert quote_word("$(id)") == "'$(id)'"
    assert quote_word("a\x1b[31mX") == "$'a\\x1b[31mX'"
    assert quote_word("it's\x07") == "$'it\\'s\\x07'"
    assert quote_word("\udcff") == "$'\\xff'"


# -- every kind of printed command ---------------------------------------------------------------------------

@PROPERTY
@given(ifnames(), netns_names())
def test_ip_netns_commands_give_back_their_argv(ifname, ns):
    argv = argv_of(LINK_UP, ifname)
    line = render(in_ns(ns, argv))
    assert control_free(line.encode("utf-8"))
    assert bash_words(line) == (expect(["ip", "netns", "exec", ns], argv), [])
    if "$'" not in line:
        assert shlex.split(line) == ["ip", "netns", "exec", ns, *argv]


@PROPERTY
@given(ifnames(), docker_names())
def test_docker_commands_find_the_pid_at_run_time_with_the_name_quoted(ifname, name):
    argv = argv_of("sysctl -w net.ipv4.conf.{}.rp_filter=2", ifname)
    cmd = in_ns(f"docker:{name}", argv)
    assert cmd.needs_shell_substitution
    words, ran = bash_words(render(cmd))
    assert words == expect(["nsenter", "-n", "-t", "4242"], argv)
    assert ran == expect(["docker", "inspect", "-f", "{{.State.Pid}}", name], [])


@PROPERTY
@given(ifnames(), dns_labels(), dns_labels())
def test_pod_commands_find_the_sandbox_pid_at_run_time(ifname, namespace, pod):
    argv = argv_of(LINK_UP, ifname)
    words, ran = bash_words(render(in_ns(f"pod:{namespace}/{pod}", argv)))
    assert words == expect(["nsenter", "-n", "-t", "4243"], argv)
    assert ran == expect(["crictl", "pods", "-q", "--namespace", namespace, "--name", f"^{re.escape(pod)}$",
                          "crictl", "inspectp", "-o", "go-template", "--template", "{{.info.pid}}", "SANDBOX"], [])


@PROPERTY
@given(ifnames(), st.integers(1, 2 ** 22), st.text(max_size=15), st.text(min_size=1))
def test_pid_host_path_and_home_commands_give_back_their_argv(ifname, pid, comm, path_tail):
    argv = argv_of(LINK_UP, ifname)
    assert bash_words(render(in_ns(f"pid:{pid} ({comm})", argv)))[0] == expect(["nsenter", "-n", "-t", str(pid)],
                                                                                 argv)
    assert bash_words(render(in_ns("host", argv, home="docker:web")))[0] == expect(["nsenter", "-n", "-t", "1"],
                                                                                     argv)
    assert bash_words(render(in_ns("host", argv)))[0] == expect([], argv)
    path = "/run/x/" + path_tail.replace("\0", "")
    assert bash_words(render(Command(argv, "inode:7", path)))[0] == expect(["nsenter", f"--net={path}"], argv)


@PROPERTY
@given(ifnames(), netns_names())
def test_trace_drops_hints_quote_the_command_they_show(ifname, ns):
    from bpftools.drop_causes import DROP_CAUSES
    from bpftools.drop_events import DropEvent

    event = DropEvent(ts=0.0, netns=ns, netns_inode=1, netns_name=ns, ifname=ifname, ifindex=2, reason="XDP",
                      reason_code=0, location="x", family="ipv4", proto="icmp", src="10.0.0.1", dst="10.0.0.2",
                      sport=None, dport=None, icmp_type=8, icmp_code=0, len=84)
    hint = DROP_CAUSES["XDP"].explain(event, {})
    shown_commands = re.findall(r"`([^`]*)`", hint.replace("``", ""))
    fix = render(in_ns(ns, argv_of("ip link set dev {} xdp off", ifname)))
    assert fix in hint
    assert bash_words(fix)[0] == expect(["ip", "netns", "exec", ns], argv_of("ip link set dev {} xdp off", ifname))
    assert shown_commands   # the prose names the commands in backticks
    event.hint = hint
    assert control_free(_human_output(event.text(), _table([(ns, ifname, "XDP", 1)])))


def _table(rows):
    from bpftools.cli.output import table

    return table(["NETNS", "IFACE", "REASON", "COUNT"], rows)


def _human_output(*texts: str) -> bytes:
    """What `say` (every command's human output) writes to stdout."""
    from bpftools.cli.output import say

    @click.command()
    def show():
        for text in texts:
            say(text)

    return CliRunner().invoke(show, catch_exceptions=False).stdout_bytes


def test_argv_of_fills_each_hole_with_one_word():
    assert argv_of("ip addr del {}/{} dev {}", "10.0.0.1", 24, "a b") == ("ip", "addr", "del", "10.0.0.1/24",
                                                                         "dev", "a b")
    with pytest.raises(ValueError):
        argv_of("ip link set dev {} up")
    with pytest.raises(ValueError):
        argv_of("ip link", "extra")


def test_run_argv_needs_no_shell():
    argv = argv_of(LINK_UP, "a`id`")
    assert run_argv(in_ns("host", argv)) == list(argv)
    assert run_argv(in_ns("n s", argv)) == ["ip", "netns", "exec", "n s", *argv]
    assert run_argv(in_ns("pid:12 (x)", argv)) == ["nsenter", "-n", "-t", "12", *argv]
    assert run_argv(Command(argv, "docker:web", "/proc/12/ns/net")) == ["nsenter", "--net=/proc/12/ns/net", *argv]


def test_a_discovered_namespace_prints_by_label_and_runs_by_path():
    from bpftools.namespaces import Netns

    web = Netns(5, "docker:web", "docker", "/proc/12/ns/net", pid=12)
    cmd = in_netns_of(web, ("true",), own_inode=1)
    assert render(cmd).startswith('nsenter -n -t "$(docker inspect')
    assert run_argv(cmd) == ["nsenter", "--net=/proc/12/ns/net", "true"]
    assert in_netns_of(web, ("true",), own_inode=5) == Command(("true",))
    assert render(in_netns_of(Netns(6, "inode:6", "inode", "/run/a b"), ("true",))) == "nsenter '--net=/run/a b' true"


def test_json_carries_the_argv_exactly():
    cmd = in_ns("n", argv_of(LINK_UP, "\x1b\udcff"))
    data = json.loads(json.dumps(cmd.to_json()))
    assert Command.from_json(data) == cmd


# -- diagnose end to end on a recording, with hostile names --------------------------------------------------

def _renamed(data, old: str, new: str):
    """The recording with a name replaced wherever it stands: as a value, a key, or a sysctl's part."""
    if isinstance(data, dict):
        return {_renamed(k, old, new): _renamed(v, old, new) for k, v in data.items()}
    if isinstance(data, list):
        return [_renamed(v, old, new) for v in data]
    if isinstance(data, str):
        if data == old:
            return new
        return data.replace(f".{old}.", f".{new}.").replace(f"/{old}/", f"/{new}/")
    return data


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ifnames(), netns_names())
def test_diagnose_prints_a_fix_for_a_hostile_interface_that_gives_back_its_argv(ifname, ns):
    from bpftools.diagnose import replay
    from bpftools.diagnose.verdict import build_causes, story, verdict

    recording = json.loads((FIXTURES / "veth-link_down.json").read_text())
    recording["namespaces"]["bpftlab-veth-ns1"] = _renamed(recording["namespaces"]["bpftlab-veth-ns1"], "eth0",
                                                           ifname)
    recording = _renamed(recording, "bpftlab-veth-ns1", ns)
    walk = replay(copy.deepcopy(recording))
    causes = build_causes(walk.findings, [])
    assert causes[0].cause == "link_down"
    assert causes[0].to_json()["fix_argv"] == [{"netns": ns, "argv": ["ip", "link", "set", "dev", ifname, "up"]}]
    assert bash_words(rendered(causes[0].fix)[0])[0] == expect(["ip", "netns", "exec", ns], argv_of(LINK_UP, ifname))

    result = verdict("10.70.0.2", "bpftlab-veth-host", walk, 3, 0, [])

    out = _human_output(story(result))
    assert control_free(out)
    assert rendered(causes[0].fix)[0].encode("utf-8") in out   # the fix is printed as rendered: still pasteable
    emitted = subprocess.run([sys.executable, "-c", "import json, sys; from bpftools.cli.output import emit_json; "
                              "emit_json(json.loads(sys.stdin.read()))"],
                             input=json.dumps(causes[0].to_json()).encode(),
                             capture_output=True, check=True).stdout
    assert json.loads(emitted)["ifname"] == ifname   # JSON keeps the exact name


# -- text output ------------------------------------------------------------------------------------------------

@PROPERTY
@given(st.text(alphabet=st.one_of(st.characters(), st.sampled_from(["\udcff", "\udc80", "\x1b", "\x9b", "\x7f"]))))
def test_no_control_byte_reaches_the_terminal(text):
    safe = terminal_safe(text)
    assert control_free(safe.encode("utf-8"))   # strict UTF-8: no lone surrogate left either
    assert safe.count("\n") == text.count("\n")
    assert "\n" not in shown(text)


def test_escapes_read_like_ip_and_git():
    assert terminal_safe("a\x1b[31mX\tb\n") == "a\\x1b[31mX\\x09b\n"
    assert shown("v\udcffZ") == "v\\xffZ"
    assert shown("é\u202e") == "é\\u202e"


def test_log_lines_escape_names():
    import io
    import logging

    from bpftools.logs import setup_logging

    stream = io.StringIO()
    setup_logging("warning", stream=stream)
    logging.getLogger("bpftools.test").warning("a\x1b[2J\udcff")
    setup_logging("warning")
    assert control_free(stream.getvalue().encode("utf-8"))


def test_pcap_comments_and_metric_labels_escape_names():
    from prometheus_client import CollectorRegistry, generate_latest

    from bpftools.drop_events import DropEvent
    from bpftools.drop_pcap import drop_comments
    from bpftools.metrics import BpftoolsCollector, Sample

    name = "a\x1b[2J\udcff"
    event = DropEvent(ts=0.0, netns="n\x07", netns_inode=1, netns_name="n\x07", ifname=name, ifindex=2,
                      reason="XDP", reason_code=0, location="x", family="ipv4", proto="icmp", src="10.0.0.1",
                      dst="10.0.0.2", sport=None, dport=None, icmp_type=8, icmp_code=0, len=84)
    comments = [c.encode() for c in drop_comments(event)]   # strict UTF-8
    assert all(control_free(c) for c in comments) and b"a\\x1b[2J\\xff" in comments[0]

    class Source:
        name = "drops"

        def samples(self):
            yield Sample("bpftools_drops_total", ("n\x07", name, "XDP"), 1.0)

    collector = BpftoolsCollector()
    collector.set_source("drops", Source())
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry)
    assert control_free(text) and b'a\\\\x1b[2J\\\\xff' in text


# -- names that cannot be selected --------------------------------------------------------------------------

@PROPERTY
@given(ifnames())
def test_every_name_the_kernel_accepts_can_be_selected(name):
    assert ifname_problem(name) is None


@pytest.mark.parametrize("name", ["", "a/b", "a:b", "a b", "a\tb", "0123456789abcdef", ".", ".."])
def test_names_the_kernel_refuses_are_refused(name):
    assert ifname_problem(name)


def _bpftools(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bpftools", *args], capture_output=True, timeout=60)


@pytest.mark.parametrize("args", [
    ("trace-drops", "--netns", "--json"),                # the name was forgotten
    ("trace-drops", "--", "a/b\x1b[2J"),                 # no interface has a / (and ESC is escaped)
    ("xdp-decap", "eth0", "--redirect", "--force"),
    ("encap-stats", "--", "0123456789abcdef"),
    ("detach", "--", "a:b"),
    ("trace-drops", "--netns", "../x\x1b]0;t\x07"),
])
def test_unselectable_names_are_refused_in_one_line(args):
    proc = _bpftools(*args)
    assert proc.returncode == 1, proc
    assert proc.stdout == b"" and proc.stderr.count(b"\n") == 1 and proc.stderr.startswith(b"bpftools: error: ")
    assert control_free(proc.stderr)


def test_diagnose_refuses_an_impossible_interface_with_its_usage_status():
    proc = _bpftools("diagnose", "ping", "10.0.0.1", "-I", "a:b")
    assert proc.returncode == 3 and proc.stderr.count(b"\n") == 1


def test_a_name_with_a_leading_dash_is_a_name():
    assert ifname_problem("-x") is None and check_netns_selector("-x") == "-x"
    proc = _bpftools("trace-drops", "--netns", "-no-such-ns-bt", "--duration", "1")
    assert b"that is an option" not in proc.stderr and proc.stderr.count(b"\n") == 1
