"""One logging setup for every command: time and level on each line, logfmt or JSON."""
import io
import json
import logging
import re

import pytest

from bpftools.logs import setup_logging


def lines(level="info", fmt="logfmt"):
    out = io.StringIO()
    setup_logging(level, fmt, stream=out)
    log = logging.getLogger("bpftools.serve")
    log.debug("hidden unless debug")
    log.info("encap attached to %s", "va (netns ns1)")
    log.warning('a "quoted" value=x')
    try:
        raise OSError("map gone")
    except OSError:
        log.error("reading drops failed", exc_info=True)
    return out.getvalue().splitlines()


def test_logfmt_lines_have_time_level_logger_and_quoted_message():
    out = lines()
    assert re.fullmatch(r'time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=info logger=bpftools\.serve '
                        r'msg="encap attached to va \(netns ns1\)"', out[0])
    assert out[1].endswith(r'level=warning logger=bpftools.serve msg="a \"quoted\" value=x"')
    assert 'level=error logger=bpftools.serve msg="reading drops failed" error="Traceback' in out[2]
    assert len(out) == 3  # one line per event, the traceback escaped into it; debug hidden at info


def test_json_lines_and_debug_level():
    out = [json.loads(line) for line in lines("debug", "json")]
    assert [o["level"] for o in out] == ["debug", "info", "warning", "error"]
    assert out[1]["msg"] == "encap attached to va (netns ns1)" and out[1]["logger"] == "bpftools.serve"
    assert "OSError: map gone" in out[3]["error"]


def test_setup_twice_does_not_duplicate_lines():
    setup_logging("info", stream=io.StringIO())
    out = io.StringIO()
    setup_logging("info", stream=out)
    logging.getLogger("bpftools.x").info("once")
    assert out.getvalue().count("once") == 1


def test_unknown_level_is_refused():
    with pytest.raises(ValueError):
        setup_logging("verbose")
