"""encap-stats pure functions: the type list shared with the C, ports, counter layout, decoding."""
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from bpftools import encap_stats as es
from bpftools.cli.main import cli, register_commands
from bpftools.errors import BpftoolsError

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "include" / "encap.h"


def header_enum(name: str) -> dict:
    body = re.search(r"enum %s \{(.*?)\};" % name, HEADER.read_text(), re.S).group(1)
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"(\w+) = (\d+)", body)}


def test_python_type_list_mirrors_the_c_enum():
    enum = header_enum("encap_type")
    assert enum.pop("ENCAP_TYPE_COUNT") == len(es.ENCAP_TYPES)
    assert enum == {f"ENCAP_{name.upper()}": value for value, name in enumerate(es.ENCAP_TYPES)}


def test_directions_and_max_ifaces_mirror_the_header():
    enum = header_enum("encap_direction")
    assert enum.pop("ENCAP_DIR_COUNT") == len(es.DIRECTIONS)
    assert enum == {f"ENCAP_DIR_{name.upper()}": value for value, name in enumerate(es.DIRECTIONS)}
    assert f"#define ENCAP_MAX_IFACES {es.MAX_IFACES}" in HEADER.read_text()


@pytest.mark.parametrize("spec, expected", [
    ("vxlan=8472", ("vxlan", 8472)),
    ("GENEVE=6082", ("geneve", 6082)),
    ("fou=5555", ("fou", 5555)),
    ("gue=1", ("gue", 1)),
    ("gue=65535", ("gue", 65535)),
])
def test_parse_udp_port(spec, expected):
    assert es.parse_udp_port(spec) == expected


@pytest.mark.parametrize("spec", ["vxlan", "ipip=4", "vxlan=0", "vxlan=65536", "vxlan=abc", "=4789", "gre=47"])
def test_parse_udp_port_rejects(spec):
    with pytest.raises(BpftoolsError, match="--udp-port"):
        es.parse_udp_port(spec)


def test_udp_port_table_defaults_and_overrides():
    assert es.udp_port_table() == {4789: "vxlan", 6081: "geneve"}
    assert es.udp_port_table([("vxlan", 8472), ("fou", 5555)]) == {4789: "vxlan", 6081: "geneve", 8472: "vxlan",
                                                                   5555: "fou"}
    assert es.udp_port_table([("gue", 6081)])[6081] == "gue"  # the user's word beats a default
    with pytest.raises(BpftoolsError, match="both fou and gue"):
        es.udp_port_table([("fou", 7000), ("gue", 7000)])


def test_udp_port_words_pack_a_type_per_port():
    words = es.udp_port_words({4789: "vxlan", 4790: "gue", 6081: "geneve", 0: "fou"})
    assert words == {4789 // 16: (7 << 4 * (4789 % 16)) | (10 << 4 * (4790 % 16)),
                     6081 // 16: 8 << 4 * (6081 % 16), 0: 9}
    assert all(0 < w < 2 ** 64 for w in words.values())
    assert len(es.ENCAP_TYPES) <= 2 ** es.UDP_PORT_TYPE_BITS
    text = HEADER.read_text()
    assert f"#define UDP_PORT_TYPE_BITS {es.UDP_PORT_TYPE_BITS}" in text
    assert f"#define UDP_PORTS_PER_WORD {es.UDP_PORTS_PER_WORD}" in text


@pytest.mark.parametrize("slot, direction, encap", [(0, 0, 0), (0, 1, 10), (3, 0, 7), (7, 1, 10)])
def test_counter_index_round_trips(slot, direction, encap):
    index = es.counter_index(slot, direction, encap)
    assert es.counter_key(index) == (slot, direction, encap)


def test_counter_indexes_fill_the_map_exactly():
    indexes = {es.counter_index(s, d, t) for s in range(es.MAX_IFACES) for d in range(len(es.DIRECTIONS))
               for t in range(len(es.ENCAP_TYPES))}
    assert indexes == set(range(es.MAX_IFACES * len(es.DIRECTIONS) * len(es.ENCAP_TYPES)))


def test_classifier_defines():
    assert es.classifier_defines([3, 7, 9], [False, True, True]) == {
        "IFINDEX_0": 3, "IFINDEX_1": 7, "IFINDEX_2": 9, "L3_SLOTS": 0b110}
    assert es.classifier_defines([3], [False], top=True)["TOP_PAIRS"] == es.TOP_PAIRS_SIZE
    with pytest.raises(BpftoolsError, match="1 to 8 interfaces"):
        es.classifier_defines(list(range(1, 10)), [False] * 9)


@pytest.mark.parametrize("family, raw, text", [
    (4, bytes([10, 1, 2, 3]) + bytes(12), "10.1.2.3"),
    (6, bytes.fromhex("20010db8000000000000000000000001"), "2001:db8::1"),
])
def test_format_address(family, raw, text):
    assert es.format_address(family, raw) == text


def test_busiest_pairs_ranks_per_type_and_bounds():
    pairs = [es.PairRow("vxlan", "10.0.0.1", "10.0.0.2", 5, 500), es.PairRow("vxlan", "10.0.0.3", "10.0.0.4", 9, 90),
             es.PairRow("vxlan", "10.0.0.5", "10.0.0.6", 1, 10), es.PairRow("ipip", "10.0.0.7", "10.0.0.8", 2, 200)]
    assert [(p.encap, p.src) for p in es.busiest_pairs(pairs, 2)] == [
        ("ipip", "10.0.0.7"), ("vxlan", "10.0.0.3"), ("vxlan", "10.0.0.1")]


def test_json_rows_have_the_documented_fields():
    row = es.counter_json(es.CounterRow("vb", "ingress", "vxlan", 3, 300), 1.5, "ns1", 4026532281, (1.5, 1200.0))
    assert row == {"type": "encap", "ts": 1.5, "netns": "ns1", "netns_inode": 4026532281, "ifname": "vb", "direction": "ingress",
                   "encap": "vxlan", "packets": 3, "bytes": 300, "packets_per_second": 1.5, "bits_per_second": 1200.0}
    top = es.pair_json(es.PairRow("gre", "10.0.0.1", "10.0.0.2", 4, 40), 1, 1.5, "ns1", 4026532281)
    assert top == {"type": "top", "ts": 1.5, "netns": "ns1", "netns_inode": 4026532281, "encap": "gre", "rank": 1, "src": "10.0.0.1",
                   "dst": "10.0.0.2", "packets": 4, "bytes": 40, "packets_per_second": 0.0, "bits_per_second": 0.0}


def test_encap_stats_rejects_a_bad_hook():
    with pytest.raises(BpftoolsError, match="unknown ingress hook"):
        es.EncapStats([], ingress_hook="qdisc")


def test_cli_help_and_usage():
    register_commands()
    result = CliRunner().invoke(cli, ["encap-stats", "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    for option in ("--netns", "--ingress-hook", "--udp-port", "--top", "--interval", "--duration", "--json"):
        assert option in result.output
    assert CliRunner().invoke(cli, ["encap-stats"]).exit_code == 2  # an interface is required
    assert CliRunner().invoke(cli, ["encap-stats", "x", "--ingress-hook", "foo"]).exit_code == 2


def test_cli_bad_udp_port_is_one_line(monkeypatch):
    monkeypatch.setattr("bpftools.cli.encap_stats.require_privileges", lambda: None)
    register_commands()
    result = CliRunner().invoke(cli, ["encap-stats", "vb", "--udp-port", "vxlan=99999"])
    assert isinstance(result.exception, BpftoolsError)
    assert "port must be a number" in str(result.exception)


def test_the_table_names_the_namespace_by_its_label(capsys):
    from bpftools.cli.encap_stats import _print_table

    _print_table([{"type": "encap", "netns": "docker:web", "netns_inode": 1, "ifname": "eth0",
                   "direction": "ingress", "encap": "vxlan", "packets": 2, "bytes": 100,
                   "packets_per_second": 1250.0, "bits_per_second": 12_345_678.0}])
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split() == ["NETNS", "IFACE", "DIR", "ENCAP", "PACKETS", "BYTES", "PKT/S", "BIT/S"]
    assert row.split() == ["docker:web", "eth0", "ingress", "vxlan", "2", "100", "1.25k", "12.3M"]
