"""Offsets of kernel-internal struct members, from BTF, handed to BPF C as -D defines."""
from __future__ import annotations

import functools
from typing import Dict, List, Tuple

from .btf import VMLINUX_BTF, Btf

# define name -> (struct, member path). The BPF C reads these through bpf_probe_read_kernel.
KERNEL_FIELDS: Dict[str, Tuple[str, str]] = {
    "SKB_DEV": ("sk_buff", "dev"),
    "SKB_HEAD": ("sk_buff", "head"),
    "SKB_LEN": ("sk_buff", "len"),
    "SKB_NETWORK_HEADER": ("sk_buff", "network_header"),
    "SKB_TRANSPORT_HEADER": ("sk_buff", "transport_header"),
    "SKB_MAC_HEADER": ("sk_buff", "mac_header"),
    "SKB_PROTOCOL": ("sk_buff", "protocol"),
    "SKB_IIF": ("sk_buff", "skb_iif"),
    "DEV_IFINDEX": ("net_device", "ifindex"),
    "DEV_NAME": ("net_device", "name"),
    "DEV_ND_NET": ("net_device", "nd_net"),
    "NET_NS_INUM": ("net", "ns.inum"),
}


@functools.lru_cache(maxsize=1)
def kernel_offsets(btf_path: str = VMLINUX_BTF) -> Dict[str, Tuple[int, int]]:
    """define name -> (offset, size) in the running kernel."""
    btf = Btf.from_file(btf_path)
    return {name: btf.member(struct, path) for name, (struct, path) in KERNEL_FIELDS.items()}


def offset_cflags(offsets: Dict[str, Tuple[int, int]]) -> List[str]:
    flags = []
    for name, (offset, size) in sorted(offsets.items()):
        flags.append(f"-DOFF_{name}={offset}")
        flags.append(f"-DSIZE_{name}={size}")
    return flags
