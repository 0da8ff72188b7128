"""xdp-decap pieces that need neither root nor bcc: map keys, option parsing, the model's
checksum arithmetic, and the CLI refusing to run open."""
import ipaddress
import struct
import sys

import pytest
from click.testing import CliRunner

from bpftools.cli.main import cli, register_commands
from bpftools.cli.xdp_decap import counters_line
from bpftools.errors import BpftoolsError
from bpftools.xdp_decap import (COUNTERS, DecapConfig, addr_key, decode_lpm_key, local_defines, lpm_key,
                                parse_addresses, parse_mac, parse_networks, pin_dir)
from decap_model import (ETH_IPV4, ModelConfig, XDP_PASS, csum_replace2, decap, ether, icmp_echo, ipv4,
                         ipv4_checksum, ones_complement_sum)

register_commands()


@pytest.mark.parametrize("address, expected", [
    ("10.1.2.3", "00000004" + "0a010203" + "00" * 12),
    ("fd00::1", "00000006" + "fd00" + "00" * 13 + "01"),
])
def test_addr_key_layout(address, expected):
    assert addr_key(ipaddress.ip_address(address)).hex() == expected


@pytest.mark.parametrize("network, prefixlen", [("10.61.0.0/24", 56), ("0.0.0.0/0", 32), ("fd00::/64", 96),
                                                ("10.1.1.1/32", 64)])
def test_lpm_key_counts_family_bits_and_round_trips(network, prefixlen):
    raw = lpm_key(ipaddress.ip_network(network))
    assert len(raw) == 24 and struct.unpack_from("=I", raw)[0] == prefixlen
    assert decode_lpm_key(raw) == ipaddress.ip_network(network)


def test_allow_list_is_required():
    with pytest.raises(BpftoolsError, match="refusing to decapsulate from anyone.*--allow-remote.*--allow-any"):
        parse_networks([], False)


@pytest.mark.parametrize("values, allow_any, expected", [
    (["10.0.0.1"], False, ["10.0.0.1/32"]),
    (["10.0.0.7/24", "fd00::/8"], False, ["10.0.0.0/24", "fd00::/8"]),
    ([], True, ["0.0.0.0/0", "::/0"]),
])
def test_parse_networks(values, allow_any, expected):
    assert [str(n) for n in parse_networks(values, allow_any)] == expected


@pytest.mark.parametrize("values, allow_any, message", [
    (["10.0.0.0/33"], False, "is not an address or CIDR"),
    (["10.0.0.0/8"], True, "not both"),
])
def test_parse_networks_errors(values, allow_any, message):
    with pytest.raises(BpftoolsError, match=message):
        parse_networks(values, allow_any)


def test_parse_addresses_and_macs():
    assert [str(a) for a in parse_addresses(["10.0.0.1", "fd00::2/64"])] == ["10.0.0.1", "fd00::2"]
    with pytest.raises(BpftoolsError, match="--local 'x' is not an IP address"):
        parse_addresses(["x"])
    assert parse_mac("02:00:00:00:00:0a") == 0x02000000000A
    assert parse_mac("02-00-00-00-00-0A") == 0x02000000000A
    with pytest.raises(BpftoolsError, match="not a MAC address"):
        parse_mac("02:00:00")


@pytest.mark.parametrize("config, expected", [
    (DecapConfig([], []), {"REDIRECT": False, "ROUTE": False}),
    (DecapConfig([], [], route=True), {"REDIRECT": False, "ROUTE": True}),
    (DecapConfig([], [], redirect=True, src_mac=0x0201), {"REDIRECT": True, "ROUTE": False,
                                                          "REDIRECT_SRC_MAC": "0x201ULL"}),
    (DecapConfig([], [], redirect=True, src_mac=1, dst_mac=2), {"REDIRECT": True, "ROUTE": False,
                                                                "REDIRECT_SRC_MAC": "0x1ULL",
                                                                "REDIRECT_DST_MAC": "0x2ULL"}),
])
def test_defines(config, expected):
    assert config.defines() == expected


def test_local_defines_are_words_in_packet_order():
    addresses = parse_addresses(["10.51.0.2", "fd00::1", "10.51.0.2", "10.0.0.1"])
    defines = local_defines(addresses)
    v4 = [int(w, 16).to_bytes(4, sys.byteorder) for w in defines["LOCAL_V4"].split(",")]
    assert v4 == [bytes([10, 51, 0, 2]), bytes([10, 0, 0, 1])]  # as the host loads them
    assert len(defines["LOCAL_V6"].split(",")) == 4
    assert local_defines([]) == {}
    assert DecapConfig([], addresses[:1]).defines()["LOCAL_V4"] == defines["LOCAL_V4"].split(",")[0]


def test_counters_line_and_pin_dir():
    counters = dict.fromkeys(COUNTERS, 0)
    counters["decapsulated"] = 3
    assert counters_line(counters).startswith("decapsulated=3 redirected=0 passed_not_tunnel=0")
    assert pin_dir("ns1", "eth0") == "/sys/fs/bpf/bpftools/xdp-decap/ns1/eth0"


@pytest.mark.parametrize("tos", range(0, 256, 7))
def test_incremental_checksum_matches_recomputation(tos):
    header = ipv4("10.0.0.1", "10.0.0.2", 1, b"", tos=tos, ttl=17)
    new = bytearray(header)
    new[1] |= 3
    old_word, new_word = struct.unpack_from("<H", header)[0], struct.unpack_from("<H", new)[0]
    check = csum_replace2(struct.unpack_from("<H", header, 10)[0], old_word, new_word)
    struct.pack_into("<H", new, 10, check)
    assert ones_complement_sum(bytes(new)) == 0xFFFF
    assert check == struct.unpack("<H", struct.pack("!H", ipv4_checksum(bytes(new))))[0] or tos & 3 == 3


def test_model_decapsulates_and_marks_ce():
    inner = ipv4("10.70.0.1", "10.70.0.2", 1, icmp_echo(), tos=1)  # ECT(1)
    frame = ether(ipv4("10.61.0.1", "10.60.0.2", 4, inner, tos=3, options=b"\x01" * 4), ETH_IPV4)
    config = ModelConfig([ipaddress.ip_network("10.61.0.0/24")], [ipaddress.ip_address("10.60.0.2")])
    outcome = decap(frame, config)
    assert (outcome.verdict, outcome.counters) == (XDP_PASS, ("decapsulated",))
    assert outcome.data[:14] == frame[:14] and outcome.data[15] == 3  # CE
    assert ones_complement_sum(outcome.data[14:34]) == 0xFFFF


@pytest.mark.parametrize("args, message", [
    (["xdp-decap", "eth0"], "refusing to decapsulate from anyone"),
    (["xdp-decap", "eth0", "--allow-any", "--allow-remote", "10.0.0.0/8"], "not both"),
    (["xdp-decap", "eth0", "--allow-any", "--redirect", "x", "--route"], "exclude each other"),
    (["xdp-decap", "eth0", "--allow-any", "--dst-mac", "nope"], "not a MAC address"),
])
def test_cli_refuses_before_touching_the_kernel(args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert message in (result.output + str(result.exception))


def test_cli_help_lists_xdp_decap():
    result = CliRunner().invoke(cli, ["xdp-decap", "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    for option in ("--allow-remote", "--allow-any", "--local", "--redirect", "--route", "--mode", "--force",
                   "--json", "--duration"):
        assert option in result.output


def test_counters_line_names_the_namespace_by_its_label():
    line = counters_line({"decapsulated": 1}, "pid:12 (sh)", "tb")
    assert line == "netns='pid:12 (sh)' iface=tb decapsulated=1"
