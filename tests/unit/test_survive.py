"""Errors bpftools survives are logged, never silently dropped; --debug shows them."""
import io
import logging

import pytest
from click.testing import CliRunner

from bpftools.errors import first_line, survive
from bpftools.logs import setup_logging


def test_survive_carries_on_and_logs_what_failed():
    stream = io.StringIO()
    setup_logging("debug", stream=stream)
    with survive(logging.getLogger("bpftools.test"), "reading %s in netns %s", "rp_filter", "ns1"):
        raise OSError("No such file or directory\nsecond line")
    out = stream.getvalue()
    assert "level=debug" in out and 'msg="reading rp_filter in netns ns1 failed: No such file or directory"' in out
    assert "Traceback" in out  # with debug logging on, the traceback too


def test_survive_at_a_chosen_level_without_traceback_unless_debugging():
    stream = io.StringIO()
    setup_logging("warning", stream=stream)
    with survive(logging.getLogger("bpftools.status"), "removing %s", "xdp", level=logging.WARNING):
        raise RuntimeError("busy")
    out = stream.getvalue()
    assert "level=warning" in out and 'msg="removing xdp failed: busy"' in out and "Traceback" not in out


def test_survive_never_swallows_ctrl_c():
    with pytest.raises(KeyboardInterrupt):
        with survive(logging.getLogger("bpftools.test"), "anything"):
            raise KeyboardInterrupt


def test_first_line_of_an_empty_error_is_its_type():
    assert first_line(ValueError()) == "ValueError"
    assert first_line(ValueError(" a\nb ")) == "a"


def test_debug_flag_turns_on_debug_logging():
    from bpftools.cli.main import cli, register_commands

    register_commands()
    result = CliRunner().invoke(cli, ["--debug", "doctor", "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    assert logging.getLogger("bpftools").getEffectiveLevel() == logging.DEBUG
    CliRunner().invoke(cli, ["doctor", "--help"], catch_exceptions=False)
    assert logging.getLogger("bpftools").getEffectiveLevel() == logging.WARNING
