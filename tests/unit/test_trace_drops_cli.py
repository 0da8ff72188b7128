"""trace-drops and demo CLI behaviour that needs neither root nor bcc."""
from click.testing import CliRunner

from bpftools.cli.main import cli, register_commands

register_commands()


def test_help_lists_trace_drops_and_demo():
    result = CliRunner().invoke(cli, ["--help"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "trace-drops" in result.output and "demo" in result.output


def test_trace_drops_help_shows_every_option():
    result = CliRunner().invoke(cli, ["trace-drops", "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    for option in ("--netns", "--all-netns", "--src", "--dst", "--proto", "--reason", "--json", "--summary",
                   "--duration", "--count", "--no-hints"):
        assert option in result.output, option


def test_count_makes_no_sense_with_summary():
    result = CliRunner().invoke(cli, ["trace-drops", "--summary", "--count", "3"])
    assert result.exit_code == 2
    assert "--count counts shown drops" in result.output
