"""Do we have the capabilities to load and attach BPF programs?"""
from __future__ import annotations

from ..errors import BpftoolsError

CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39


def effective_capabilities() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def has_bpf_privileges(caps: int) -> bool:
    def has(cap: int) -> bool:
        return bool(caps & (1 << cap))

    bpf_ok = has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON))
    return bpf_ok and has(CAP_NET_ADMIN)


def require_privileges() -> None:
    if not has_bpf_privileges(effective_capabilities()):
        raise BpftoolsError(
            "bpftools needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN) to load and attach BPF programs"
        )
