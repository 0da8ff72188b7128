"""Drop-reason names, read from the running kernel's skb:kfree_skb tracepoint format.

The numbering of `enum skb_drop_reason` changes between kernels (and backports), so there
is no table in this code: the kernel's own `__print_symbolic` list is the source.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .mounts import tracefs_path

UNKNOWN = "unknown"
_FIELD_RE = re.compile(r"field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);")
_SYMBOLIC_RE = re.compile(r"__print_symbolic\(REC->reason,(?P<body>.*)\)")
_ENTRY_RE = re.compile(r'\{\s*([^,{}]+?)\s*,\s*"([^"]*)"\s*\}')


@dataclass
class TracepointFormat:
    fields: Dict[str, int] = field(default_factory=dict)  # name -> byte offset
    reasons: Dict[int, str] = field(default_factory=dict)  # code -> name without prefix

    @property
    def has_reason(self) -> bool:
        return "reason" in self.fields

    def reason_name(self, code: Optional[int]) -> str:
        if code is None or not self.has_reason:
            return UNKNOWN
        return self.reasons.get(code, f"REASON_{code}")

    def reason_code(self, name: str) -> Optional[int]:
        wanted = name.upper().removeprefix("SKB_DROP_REASON_")
        for code, reason in self.reasons.items():
            if reason == wanted:
                return code
        return None


def parse_format(text: str) -> TracepointFormat:
    fmt = TracepointFormat()
    for match in _FIELD_RE.finditer(text):
        name = match.group("decl").split()[-1].split("[")[0]
        fmt.fields[name] = int(match.group("offset"))
    symbolic = _SYMBOLIC_RE.search(text)
    if symbolic and fmt.has_reason:
        entries: List = _ENTRY_RE.findall(symbolic.group("body"))
        for position, (value, name) in enumerate(entries):
            # Kernels resolve the enum to numbers in the format file; where one did not,
            # the list follows enum order, so the position is the value.
            code = int(value, 0) if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", value) else position
            fmt.reasons[code] = name.removeprefix("SKB_DROP_REASON_")
    return fmt


def kfree_skb_format() -> TracepointFormat:
    with open(tracefs_path("events", "skb", "kfree_skb", "format")) as f:
        return parse_format(f.read())
