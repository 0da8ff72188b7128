"""Minimal reader of the kernel's BTF (/sys/kernel/btf/vmlinux).

Only what we need: find a struct by name and resolve member offsets, descending into
anonymous unions/structs and following dotted paths (``net_device.nd_net.net``).
Header layouts differ between kernel versions, so offsets of kernel-internal structs
always come from here, never from the headers bcc compiles against.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..errors import BpftoolsError

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

BTF_MAGIC = 0xEB9F
# kinds (include/uapi/linux/btf.h)
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19
_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int


@dataclass
class BtfType:
    kind: int
    name: str
    size_or_type: int
    vlen: int
    kind_flag: bool
    members: Tuple[Member, ...] = ()
    array_elem: int = 0
    array_len: int = 0


class Btf:
    """Parsed BTF blob. Parses lazily: one linear pass records every type."""

    def __init__(self, data: bytes):
        if len(data) < 24:
            raise BpftoolsError("BTF blob is truncated")
        magic, version, flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BpftoolsError("not a little-endian BTF blob (bad magic)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._types_data = data[hdr_len + type_off: hdr_len + type_off + type_len]
        self._strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
        self.types: List[Optional[BtfType]] = [None]  # type id 0 is void
        self._by_name: Dict[Tuple[int, str], int] = {}
        self._parse()

    @classmethod
    def from_file(cls, path: str = VMLINUX_BTF) -> "Btf":
        try:
            with open(path, "rb") as f:
                return cls(f.read())
        except FileNotFoundError:
            raise BpftoolsError(
                f"kernel BTF not found at {path}: this kernel was built without "
                "CONFIG_DEBUG_INFO_BTF, which bpftools needs for sk_buff/net_device offsets"
            ) from None

    def _str(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def _parse(self) -> None:
        data, pos, n = self._types_data, 0, len(self._types_data)
        unpack = struct.unpack_from
        while pos < n:
            name_off, info, size_or_type = unpack("<III", data, pos)
            pos += 12
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            kind_flag = bool(info >> 31)
            t = BtfType(kind, "", size_or_type, vlen, kind_flag)
            if kind in (KIND_STRUCT, KIND_UNION):
                members = []
                for i in range(vlen):
                    m_name, m_type, m_off = unpack("<III", data, pos + 12 * i)
                    if kind_flag:
                        members.append(Member(self._str(m_name), m_type, m_off & 0xFFFFFF, m_off >> 24))
                    else:
                        members.append(Member(self._str(m_name), m_type, m_off, 0))
                t.members = tuple(members)
                pos += 12 * vlen
            elif kind == KIND_ARRAY:
                t.array_elem, _idx, t.array_len = unpack("<III", data, pos)
                pos += 12
            elif kind == KIND_INT:
                pos += 4
            elif kind in (KIND_ENUM,):
                pos += 8 * vlen
            elif kind == KIND_ENUM64:
                pos += 12 * vlen
            elif kind == KIND_FUNC_PROTO:
                pos += 8 * vlen
            elif kind == KIND_VAR:
                pos += 4
            elif kind == KIND_DATASEC:
                pos += 12 * vlen
            elif kind == KIND_DECL_TAG:
                pos += 4
            type_id = len(self.types)
            self.types.append(t)
            if kind in (KIND_STRUCT, KIND_UNION) and name_off:
                t.name = self._str(name_off)
                self._by_name.setdefault((kind, t.name), type_id)

    def struct_id(self, name: str) -> int:
        for kind in (KIND_STRUCT, KIND_UNION):
            tid = self._by_name.get((kind, name))
            if tid is not None:
                return tid
        raise BpftoolsError(f"struct {name} not found in kernel BTF")

    def resolve(self, type_id: int) -> int:
        """Strip typedefs and qualifiers."""
        while type_id and self.types[type_id].kind in _MODIFIERS:
            type_id = self.types[type_id].size_or_type
        return type_id

    def size_of(self, type_id: int) -> int:
        type_id = self.resolve(type_id)
        t = self.types[type_id]
        if t.kind == KIND_PTR:
            return 8
        if t.kind == KIND_ARRAY:
            return self.size_of(t.array_elem) * t.array_len
        return t.size_or_type

    def _find_member(self, type_id: int, name: str) -> Optional[Tuple[int, Member]]:
        """Bit offset and member `name` in struct/union `type_id`, searching anonymous members."""
        t = self.types[self.resolve(type_id)]
        for m in t.members:
            if m.name == name:
                return m.bit_offset, m
        for m in t.members:
            if not m.name:
                inner = self.types[self.resolve(m.type_id)]
                if inner.kind in (KIND_STRUCT, KIND_UNION):
                    found = self._find_member(m.type_id, name)
                    if found:
                        return m.bit_offset + found[0], found[1]
        return None

    def member(self, struct_name: str, path: str) -> Tuple[int, int]:
        """(byte offset, byte size) of a dotted member path inside `struct struct_name`."""
        type_id = self.struct_id(struct_name)
        bit_offset = 0
        member = None
        for part in path.split("."):
            found = self._find_member(type_id, part)
            if found is None:
                raise BpftoolsError(f"struct {struct_name} has no member {path} in kernel BTF")
            bit_offset += found[0]
            member = found[1]
            type_id = member.type_id
        if member.bitfield_size or bit_offset % 8:
            raise BpftoolsError(f"{struct_name}.{path} is a bitfield; not supported")
        return bit_offset // 8, self.size_of(member.type_id)
