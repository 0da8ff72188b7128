"""Offsets of kernel-internal struct members, from BTF, handed to BPF C as -D defines."""
from __future__ import annotations

import functools
import json
import os
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
    "SKB_TAIL": ("sk_buff", "tail"),  # end of the linear data (offset from head on 64-bit)
    "SKB_PROTOCOL": ("sk_buff", "protocol"),
    "SKB_IIF": ("sk_buff", "skb_iif"),
    "DEV_IFINDEX": ("net_device", "ifindex"),
    "DEV_NAME": ("net_device", "name"),
    "DEV_ND_NET": ("net_device", "nd_net"),
    "NET_NS_INUM": ("net", "ns.inum"),
    # Where a drop happened when skb->dev is NULL (trace-drops): the route's device, the socket's netns.
    "SKB_REFDST": ("sk_buff", "_skb_refdst"),
    "SKB_SK": ("sk_buff", "sk"),
    "DST_DEV": ("dst_entry", "dev"),
    "SK_NET": ("sock", "__sk_common.skc_net.net"),
}


# Offsets cannot change while the kernel runs: cache them in tmpfs (cleared at reboot).
CACHE_DIR = "/run/bpftools"


def _cache_path(btf_path: str) -> str:
    st = os.stat(btf_path)
    release = os.uname().release
    return os.path.join(CACHE_DIR, f"offsets-{release}-{st.st_size}-{int(st.st_mtime)}.json")


@functools.lru_cache(maxsize=1)
def kernel_offsets(btf_path: str = VMLINUX_BTF) -> Dict[str, Tuple[int, int]]:
    """define name -> (offset, size) in the running kernel."""
    cache = None
    try:
        cache = _cache_path(btf_path)
        with open(cache) as f:
            cached = {name: tuple(value) for name, value in json.load(f).items()}
        if set(cached) == set(KERNEL_FIELDS):
            return cached
    except (OSError, ValueError):
        pass
    btf = Btf.from_file(btf_path)
    offsets = {name: btf.member(struct, path) for name, (struct, path) in KERNEL_FIELDS.items()}
    if cache:
        try:
            os.makedirs(CACHE_DIR, exist_ok=True)
            with open(cache, "w") as f:
                json.dump(offsets, f)
        except OSError:
            pass  # read-only /run: parse again next time
    return offsets


def offset_cflags(offsets: Dict[str, Tuple[int, int]]) -> List[str]:
    flags = []
    for name, (offset, size) in sorted(offsets.items()):
        flags.append(f"-DOFF_{name}={offset}")
        flags.append(f"-DSIZE_{name}={size}")
    return flags
