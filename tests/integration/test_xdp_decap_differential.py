"""Differential test: bpftools_decap under BPF_PROG_TEST_RUN against tests/decap_model.py,
byte for byte, verdict and counters, one packet per run (repeat=1: the kernel reuses the
buffer across repetitions, so a second run would see the already decapsulated packet).

Packets: valid ipip and 6in4 (and IPv6-outer) tunnels, IPv4 options, outer fragments, nested
ipip, wrong versions and lengths, bad checksums, ECN combinations, senders in and out of the
allow-list, truncations at every length, random bytes. Hypothesis runs with a fixed seed so every
run checks the same packets.
"""
from __future__ import annotations

import collections
import errno
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from bpftools.bpfsys import prog_test_run
from bpftools.xdp_decap import COUNTERS, DecapConfig, DecapProgram
from decap_model import (ETH_IPV4, ETH_IPV6, ModelConfig, XDP_PASS, decap, ether, icmp_echo, ipv4, ipv6)

ALLOW = [ipaddress.ip_network("10.61.0.0/24"), ipaddress.ip_network("10.63.7.9/32"),
         ipaddress.ip_network("fd00:61::/64")]
LOCAL = [ipaddress.ip_address("10.60.0.2"), ipaddress.ip_address("fd00:60::2")]
SRC_MAC, DST_MAC = bytes.fromhex("02aabbccdd01"), bytes.fromhex("02aabbccdd02")

V4_SOURCES = ["10.61.0.1", "10.61.0.254", "10.63.7.9", "10.63.7.10", "10.62.0.1", "192.0.2.1"]
V4_DESTS = ["10.60.0.2", "10.60.0.2", "10.60.0.3", "198.51.100.7"]
V6_SOURCES = ["fd00:61::1", "fd00:61::ffff", "fd00:62::1", "2001:db8::1"]
V6_DESTS = ["fd00:60::2", "fd00:60::2", "fd00:60::3"]


class Harness:
    """One loaded program; runs a frame and reports what changed."""

    def __init__(self, program: DecapProgram, model: ModelConfig):
        self.program, self.model = program, model
        self.table = program.table("counters")
        self.checked = 0
        self.outcomes = collections.Counter()

    def counters(self):
        return [sum(self.table.getvalue(self.table.Key(i))) for i in range(len(COUNTERS))]

    def check(self, frame: bytes) -> None:
        before = self.counters()
        try:
            result = prog_test_run(self.program.fd, frame, repeat=1)
        except OSError as exc:  # the kernel refuses frames shorter than an Ethernet header
            assert exc.errno == errno.EINVAL and len(frame) < 14, exc
            return
        after = self.counters()
        got = collections.Counter({COUNTERS[i]: after[i] - before[i] for i in range(len(COUNTERS))
                                   if after[i] != before[i]})
        expected = decap(frame, self.model)
        assert (result.retval, got) == (expected.verdict, collections.Counter(expected.counters)), frame.hex()
        assert result.data == expected.data, frame.hex()
        self.checked += 1
        self.outcomes.update(expected.counters)


@pytest.fixture(scope="module")
def pass_program():
    with DecapProgram(DecapConfig(ALLOW, LOCAL)) as program:
        yield program


@pytest.fixture(scope="module")
def redirect_program():
    """--redirect with --dst-mac; slot 0 of the devmap is lo, so the verdict is XDP_REDIRECT."""
    config = DecapConfig(ALLOW, LOCAL, redirect=True, src_mac=int.from_bytes(SRC_MAC, "big"),
                         dst_mac=int.from_bytes(DST_MAC, "big"))
    with DecapProgram(config) as program:
        program.set_egress(0, 1)
        yield program


# The programs are compiled once per module; each test counts its own packets.
@pytest.fixture
def pass_harness(pass_program):
    return Harness(pass_program, ModelConfig(ALLOW, LOCAL))


@pytest.fixture
def redirect_harness(redirect_program):
    return Harness(redirect_program, ModelConfig(ALLOW, LOCAL, redirect=True, src_mac=SRC_MAC, dst_mac=DST_MAC))


# --- strategies -------------------------------------------------------------------------------

small_bytes = st.binary(min_size=0, max_size=48)


@st.composite
def inner_ipv4(draw, depth=0):
    proto = draw(st.sampled_from([1, 6, 17, 4, 41] if depth == 0 else [1, 17]))
    if proto == 4 and depth == 0:  # nested ipip: only the outer level is removed
        payload = draw(inner_ipv4(depth=1))
    elif proto == 1:
        payload = icmp_echo(seq=draw(st.integers(0, 0xFFFF)), data=draw(small_bytes))
    else:
        payload = draw(small_bytes)
    options = draw(st.sampled_from([b"", b"", b"\x01\x01\x01\x00", b"\x94\x04\0\0", bytes(36)]))
    packet = ipv4("10.70.0.1", draw(st.sampled_from(["10.70.0.2", "10.54.0.2"])), proto, payload,
                  tos=draw(st.integers(0, 255)), ttl=draw(st.sampled_from([0, 1, 2, 64, 255])), options=options,
                  frag=draw(st.sampled_from([0, 0, 0x4000, 0x2000, 0x0010])),
                  version=draw(st.sampled_from([4, 4, 4, 4, 6, 0])),
                  ihl=draw(st.sampled_from([None, None, None, 4, 15, 0])),
                  checksum=draw(st.sampled_from([None, None, None, 0, 0xFFFF])))
    return draw(perturb_length(packet, 2))


@st.composite
def inner_ipv6(draw):
    payload = draw(small_bytes)
    packet = ipv6("fd00:70::1", "fd00:70::2", draw(st.sampled_from([58, 17, 59, 4])), payload,
                  tclass=draw(st.integers(0, 255)), hop_limit=draw(st.sampled_from([0, 1, 2, 64])),
                  version=draw(st.sampled_from([6, 6, 6, 4])))
    return draw(perturb_length(packet, 4))


@st.composite
def perturb_length(draw, packet: bytes, length_offset: int):
    """Sometimes lie in the length field, append bytes, or cut the packet short."""
    choice = draw(st.sampled_from(["keep"] * 6 + ["field", "pad", "cut"]))
    if choice == "field":
        value = draw(st.integers(0, 0xFFFF))
        packet = packet[:length_offset] + value.to_bytes(2, "big") + packet[length_offset + 2:]
    elif choice == "pad":
        packet += draw(st.binary(min_size=1, max_size=16))
    elif choice == "cut":
        packet = packet[:draw(st.integers(0, len(packet)))]
    return packet


@st.composite
def outer_ipv4(draw):
    proto = draw(st.sampled_from([4, 4, 41, 41, 1, 17, 47]))
    inner = draw(inner_ipv6() if proto == 41 else inner_ipv4())
    options = draw(st.sampled_from([b"", b"", b"", b"\x01\x01\x01\x00", b"\x07\x07\x04" + bytes(5), bytes(40)]))
    packet = ipv4(draw(st.sampled_from(V4_SOURCES)), draw(st.sampled_from(V4_DESTS)), proto, inner,
                  tos=draw(st.integers(0, 255)), options=options,
                  frag=draw(st.sampled_from([0, 0, 0, 0x4000, 0x2000, 0x0001, 0x2010])),
                  version=draw(st.sampled_from([4] * 8 + [6, 5])),
                  ihl=draw(st.sampled_from([None] * 8 + [4, 0, 15, 6])),
                  checksum=draw(st.sampled_from([None] * 8 + [0, 0x1234])))
    return ether(draw(perturb_length(packet, 2)), ETH_IPV4)


@st.composite
def outer_ipv6(draw):
    nexthdr = draw(st.sampled_from([4, 41, 41, 44, 58, 0]))
    inner_proto = draw(st.sampled_from([4, 41])) if nexthdr == 44 else nexthdr
    inner = draw(inner_ipv6() if inner_proto == 41 else inner_ipv4())
    if nexthdr == 44:
        inner = bytes([inner_proto, 0, 0, 1, 0, 0, 0, 7]) + inner
    packet = ipv6(draw(st.sampled_from(V6_SOURCES)), draw(st.sampled_from(V6_DESTS)), nexthdr, inner,
                  tclass=draw(st.integers(0, 255)), version=draw(st.sampled_from([6] * 8 + [4])))
    return ether(draw(perturb_length(packet, 4)), ETH_IPV6)


@st.composite
def valid_tunnel(draw):
    """Tunnels that should be decapsulated (up to ECN and TTL): allowed sender, local destination."""
    family = draw(st.sampled_from([4, 4, 6]))
    inner_proto = draw(st.sampled_from([4, 41]))
    if inner_proto == 4:
        inner = ipv4("10.70.0.1", "10.70.0.2", draw(st.sampled_from([1, 17, 4])), draw(small_bytes),
                     tos=draw(st.integers(0, 255)), ttl=draw(st.sampled_from([1, 2, 64])),
                     options=draw(st.sampled_from([b"", b"\x01\x01\x01\x00"])),
                     frag=draw(st.sampled_from([0, 0x2000, 0x4000])))
    else:
        inner = ipv6("fd00:70::1", "fd00:70::2", 59, draw(small_bytes), tclass=draw(st.integers(0, 255)),
                     hop_limit=draw(st.sampled_from([1, 2, 64])))
    trailer = draw(st.sampled_from([b"", b"", bytes(6)]))
    tos = draw(st.integers(0, 255))
    if family == 4:
        outer = ipv4(draw(st.sampled_from(V4_SOURCES[:3])), "10.60.0.2", inner_proto, inner, tos=tos,
                     options=draw(st.sampled_from([b"", b"", b"\x01" * 4, bytes(40)])))
        return ether(outer + trailer, ETH_IPV4)
    return ether(ipv6(draw(st.sampled_from(V6_SOURCES[:2])), "fd00:60::2", inner_proto, inner, tclass=tos)
                 + trailer, ETH_IPV6)


random_frames = st.one_of(
    st.binary(min_size=14, max_size=120),
    st.builds(lambda body, t: ether(body, t), st.binary(max_size=100), st.sampled_from([ETH_IPV4, ETH_IPV6, 0x0806,
                                                                                         0x8100])),
)
frames = st.one_of(valid_tunnel(), outer_ipv4(), outer_ipv6(), random_frames)

PASS_EXAMPLES, REDIRECT_EXAMPLES = 9000, 2000


def check_generated(harness: Harness, examples: int, seed: int) -> None:
    """`examples` generated frames through the program and the model, the same ones every run."""
    @settings(max_examples=examples, database=None, deadline=None, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @hypothesis_seed(seed)
    @given(frame=frames)
    def check(frame):
        harness.check(frame)

    check()


def test_generated_frames_match_model(pass_harness, redirect_harness):
    """At least 10,000 generated packets (both modes) checked by this test alone, every path of
    the program exercised, whichever other tests run."""
    check_generated(pass_harness, PASS_EXAMPLES, seed=1)
    check_generated(redirect_harness, REDIRECT_EXAMPLES, seed=2)
    print(f"pass mode {pass_harness.checked} packets: {dict(pass_harness.outcomes)}; "
          f"redirect mode {redirect_harness.checked}: {dict(redirect_harness.outcomes)}")
    assert pass_harness.checked + redirect_harness.checked >= 10_000
    for name in COUNTERS:
        if name not in ("redirected", "redirect_failed"):
            assert pass_harness.outcomes[name] >= 100, (name, pass_harness.outcomes)
        assert redirect_harness.outcomes[name] >= 20, (name, redirect_harness.outcomes)


def valid_tunnels():
    inner4 = ipv4("10.70.0.1", "10.70.0.2", 1, icmp_echo(data=b"x" * 21), tos=2)
    inner6 = ipv6("fd00:70::1", "fd00:70::2", 59, b"y" * 13, tclass=1)
    return [
        ether(ipv4("10.61.0.1", "10.60.0.2", 4, inner4, tos=3), ETH_IPV4),
        ether(ipv4("10.61.0.1", "10.60.0.2", 4, inner4, options=b"\x01" * 8), ETH_IPV4),
        ether(ipv4("10.61.0.1", "10.60.0.2", 41, inner6, tos=3), ETH_IPV4),
        ether(ipv4("10.61.0.1", "10.60.0.2", 4, ipv4("10.70.0.1", "10.70.0.2", 4, inner4)), ETH_IPV4),
        ether(ipv6("fd00:61::1", "fd00:60::2", 4, inner4), ETH_IPV6),
        ether(ipv6("fd00:61::1", "fd00:60::2", 41, inner6, tclass=3), ETH_IPV6),
    ]


@pytest.mark.parametrize("index", range(6))
def test_every_truncation_of_valid_tunnels(pass_harness, redirect_harness, index):
    frame = valid_tunnels()[index]
    expected = decap(frame, pass_harness.model)
    assert expected.counters == ("decapsulated",) and expected.verdict == XDP_PASS  # the frame is valid
    for length in range(len(frame) + 1):
        pass_harness.check(frame[:length])
        redirect_harness.check(frame[:length])
