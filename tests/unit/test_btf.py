"""The BTF reader on a hand-built blob: anonymous unions, nested structs, typedefs."""
import struct

import pytest

from bpftools.errors import BpftoolsError
from bpftools.kernel.btf import KIND_INT, KIND_PTR, KIND_STRUCT, KIND_TYPEDEF, KIND_UNION, Btf


class BlobBuilder:
    def __init__(self):
        self.strings = b"\0"
        self.types = b""
        self.count = 0

    def name(self, text: str) -> int:
        if not text:
            return 0
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def add(self, kind: int, name: str, size_or_type: int, members=(), extra=b"", kind_flag=0) -> int:
        info = (kind_flag << 31) | (kind << 24) | len(members)
        self.types += struct.pack("<III", self.name(name), info, size_or_type) + extra
        for m_name, m_type, bit_off in members:
            self.types += struct.pack("<III", self.name(m_name), m_type, bit_off)
        self.count += 1
        return self.count

    def int_(self, name: str, size: int) -> int:
        return self.add(KIND_INT, name, size, extra=struct.pack("<I", size * 8))

    def blob(self) -> bytes:
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings))
        return hdr + self.types + self.strings


@pytest.fixture
def btf():
    b = BlobBuilder()
    u16 = b.int_("u16", 2)
    u32 = b.int_("u32", 4)
    u32_t = b.add(KIND_TYPEDEF, "__u32", u32)
    ptr = b.add(KIND_PTR, "", 0)
    inner = b.add(KIND_STRUCT, "", 16, [("next", ptr, 0), ("dev", ptr, 64)])
    anon_union = b.add(KIND_UNION, "", 16, [("", inner, 0), ("rbnode", ptr, 0)])
    possible = b.add(KIND_STRUCT, "possible_net_t", 8, [("net", ptr, 0)])
    b.add(KIND_STRUCT, "sk_buff", 64, [("", anon_union, 0), ("len", u32_t, 128), ("protocol", u16, 176),
                                       ("nd_net", possible, 256)])
    return Btf(b.blob())


def test_member_inside_anonymous_union_and_struct(btf):
    assert btf.member("sk_buff", "dev") == (8, 8)


def test_typedef_is_resolved_for_size(btf):
    assert btf.member("sk_buff", "len") == (16, 4)


def test_dotted_path_into_nested_struct(btf):
    assert btf.member("sk_buff", "nd_net.net") == (32, 8)
    assert btf.member("sk_buff", "protocol") == (22, 2)


def test_missing_member_and_struct_are_clear_errors(btf):
    with pytest.raises(BpftoolsError, match="no member nope"):
        btf.member("sk_buff", "nope")
    with pytest.raises(BpftoolsError, match="struct net_device not found"):
        btf.member("net_device", "ifindex")


def test_bad_magic_is_rejected():
    with pytest.raises(BpftoolsError, match="magic"):
        Btf(b"\0" * 64)


def test_missing_btf_file_names_the_kernel_option(tmp_path):
    with pytest.raises(BpftoolsError, match="CONFIG_DEBUG_INFO_BTF"):
        Btf.from_file(str(tmp_path / "vmlinux"))
