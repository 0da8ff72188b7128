"""The bpf(2) commands bcc does not wrap: bpf_link create, program/link queries, test runs.

Raw syscalls through ctypes keep us independent of the libbpf version the distribution
ships (Debian 12 has libbpf 1.1, older than tcx); BPF_PROG_TEST_RUN goes through
libbpf.so.1's bpf_prog_test_run_opts.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import struct
from dataclasses import dataclass
from typing import Iterator, List, Optional

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long

# bpf commands
PROG_TEST_RUN, PROG_GET_NEXT_ID, PROG_GET_FD_BY_ID = 10, 11, 13
OBJ_GET_INFO_BY_FD, PROG_QUERY = 15, 16
LINK_CREATE, LINK_GET_FD_BY_ID, LINK_GET_NEXT_ID, LINK_DETACH = 28, 30, 31, 34

# attach types (enum bpf_attach_type)
ATTACH_XDP, ATTACH_TCX_INGRESS, ATTACH_TCX_EGRESS = 37, 46, 47

# program types (enum bpf_prog_type)
PROG_TYPE_NAMES = {1: "socket_filter", 2: "kprobe", 3: "sched_cls", 4: "sched_act", 5: "tracepoint",
                   6: "xdp", 7: "perf_event", 17: "raw_tracepoint", 26: "tracing"}
# link types (enum bpf_link_type)
LINK_TYPE_XDP, LINK_TYPE_TCX = 6, 11

XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 1 << 1, 1 << 2

_ATTR_SIZE = 144


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise OSError(errno.ENOSYS, f"bpf() syscall number unknown for {platform.machine()}")
    ret = _libc.syscall(nr, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _attr(fmt: str, *values) -> ctypes.Array:
    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(fmt, buf, 0, *values)
    return buf


def link_create(prog_fd: int, target_ifindex: int, attach_type: int, flags: int = 0) -> int:
    """A bpf_link fd: the attachment lives exactly as long as this fd (and its copies)."""
    return _bpf(LINK_CREATE, _attr("<IIII", prog_fd, target_ifindex, attach_type, flags))


def detach_link(link_id: int) -> None:
    """Detach a bpf_link someone else holds (the holder keeps a defunct fd)."""
    fd = _bpf(LINK_GET_FD_BY_ID, _attr("<I", link_id))
    try:
        _bpf(LINK_DETACH, _attr("<I", fd))
    finally:
        os.close(fd)


def prog_fd_by_id(prog_id: int) -> int:
    return _bpf(PROG_GET_FD_BY_ID, _attr("<I", prog_id))


def _next_id(cmd: int) -> Iterator[int]:
    current = 0
    while True:
        attr = _attr("<I", current)
        try:
            _bpf(cmd, attr)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return
            raise
        current = struct.unpack_from("<I", attr, 4)[0]
        yield current


def _info(fd: int, size: int) -> bytes:
    info = ctypes.create_string_buffer(size)
    _bpf(OBJ_GET_INFO_BY_FD, _attr("<IIQ", fd, size, ctypes.addressof(info)))
    return info.raw


@dataclass(frozen=True)
class ProgInfo:
    id: int
    type: str
    name: str
    tag: str


def prog_info(prog_id: int) -> Optional[ProgInfo]:
    try:
        fd = prog_fd_by_id(prog_id)
    except OSError:
        return None  # gone meanwhile
    try:
        raw = _info(fd, 232)
    finally:
        os.close(fd)
    ptype, pid = struct.unpack_from("<II", raw, 0)
    name = raw[64:80].split(b"\0", 1)[0].decode(errors="replace")
    return ProgInfo(pid, PROG_TYPE_NAMES.get(ptype, str(ptype)), name, raw[8:16].hex())


OBJ_GET = 7
PIN_ROOT = "/sys/fs/bpf/bpftools"  # everything bpftools pins lives below this


def unpin(path: str) -> None:
    """Remove a pin, then the directories below PIN_ROOT it leaves empty."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path)
    while directory.startswith(PIN_ROOT + os.sep):
        try:
            os.rmdir(directory)  # only empty directories go
        except OSError:
            break
        directory = os.path.dirname(directory)


def obj_get(path: str) -> int:
    """fd of a pinned BPF object."""
    name = ctypes.create_string_buffer(path.encode())
    return _bpf(OBJ_GET, _attr("<QII", ctypes.addressof(name), 0, 0))


def map_id_of_fd(map_fd: int) -> int:
    return struct.unpack_from("<I", _info(map_fd, 96), 4)[0]


def prog_ids() -> List[int]:
    return list(_next_id(PROG_GET_NEXT_ID))


def prog_map_ids(prog_id: int) -> List[int]:
    """Ids of the maps a loaded program uses."""
    try:
        fd = prog_fd_by_id(prog_id)
    except OSError:
        return []
    try:
        count = struct.unpack_from("<I", _info(fd, 232), 52)[0]
        if not count:
            return []
        ids = (ctypes.c_uint32 * count)()
        info = ctypes.create_string_buffer(232)
        struct.pack_into("<IQ", info, 52, count, ctypes.addressof(ids))
        _bpf(OBJ_GET_INFO_BY_FD, _attr("<IIQ", fd, 232, ctypes.addressof(info)))
        return list(ids)
    finally:
        os.close(fd)


def prog_id_of_fd(prog_fd: int) -> int:
    return struct.unpack_from("<I", _info(prog_fd, 232), 4)[0]


@dataclass(frozen=True)
class LinkInfo:
    id: int
    type: int
    prog_id: int
    ifindex: int  # for xdp/tcx links; 0 otherwise


def links() -> List[LinkInfo]:
    """Every bpf_link in the system (needs CAP_SYS_ADMIN)."""
    result = []
    for link_id in _next_id(LINK_GET_NEXT_ID):
        try:
            fd = _bpf(LINK_GET_FD_BY_ID, _attr("<I", link_id))
        except OSError:
            continue
        try:
            raw = _info(fd, 64)
        finally:
            os.close(fd)
        ltype, lid, prog_id = struct.unpack_from("<III", raw, 0)
        ifindex = struct.unpack_from("<I", raw, 16)[0] if ltype in (LINK_TYPE_XDP, LINK_TYPE_TCX) else 0
        result.append(LinkInfo(lid, ltype, prog_id, ifindex))
    return result


def tcx_prog_ids(ifindex: int, attach_type: int) -> List[int]:
    """Programs attached with tcx on an interface of the current network namespace."""
    ids = (ctypes.c_uint32 * 64)()
    attr = _attr("<IIIIQI", ifindex, attach_type, 0, 0, ctypes.addressof(ids), 64)
    try:
        _bpf(PROG_QUERY, attr)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT, errno.EOPNOTSUPP):
            return []  # no tcx on this kernel, or nothing attached
        raise
    count = struct.unpack_from("<I", attr, 24)[0]
    return list(ids[:count])


class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32),
    ]


_libbpf = None


def _libbpf_handle():
    global _libbpf
    if _libbpf is None:
        _libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
        _libbpf.bpf_prog_test_run_opts.argtypes = [ctypes.c_int, ctypes.POINTER(_TestRunOpts)]
    return _libbpf


@dataclass(frozen=True)
class TestRunResult:
    retval: int
    data: bytes
    duration_ns: int  # average per repetition, as measured by the kernel


def prog_test_run(prog_fd: int, packet: bytes, repeat: int = 1, out_size: int = 4096) -> TestRunResult:
    """Run a program on `packet` in the kernel (BPF_PROG_TEST_RUN) and return verdict and output."""
    data_in = ctypes.create_string_buffer(packet, len(packet))
    data_out = ctypes.create_string_buffer(max(out_size, len(packet) + 256))
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.addressof(data_in),
                        data_out=ctypes.addressof(data_out), data_size_in=len(packet),
                        data_size_out=len(data_out), repeat=repeat)
    ret = _libbpf_handle().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
    if ret < 0:
        err = -ret if ret != -1 else ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return TestRunResult(opts.retval, data_out.raw[: opts.data_size_out], opts.duration)


_ENOTSUPP = 524  # kernel-internal errno some attach paths return


def means_unsupported(exc: OSError) -> bool:
    """True if a link_create failure means 'this kernel has no such attach type' (so fall back)."""
    return exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, _ENOTSUPP)
