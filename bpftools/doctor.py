"""What `bpftools doctor` reports: the kernel, its mounts and headers, and real feature probes.

It changes nothing on the host: missing mounts are reported (`fix=True` mounts them, as
`bpftools mount` does), and a tunnel probe that would load a kernel module runs only with
`load_modules=True`. Each change it makes is listed in the report's `changes`."""
from __future__ import annotations

import contextlib
from typing import Dict, List

from . import __version__, cri, docker_engine
from .errors import BpftoolsError
from .kernel import features
from .kernel.drop_reasons import kfree_skb_format
from .kernel.headers import build_dir, headers_version
from .kernel.mounts import ensure_all_mounted, mount_status, reporting_only
from .kernel.offsets import kernel_offsets
from .kernel.system import has_btf, kernel_release, lockdown_mode


def _btf_report() -> Dict:
    if not has_btf():
        return {"available": False, "detail": "no /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF=n)"}
    try:
        offsets = kernel_offsets()
    except Exception as exc:
        return {"available": True, "detail": str(exc)}
    return {"available": True, "offsets": {k: v[0] for k, v in offsets.items()}}


def _drop_reasons_report() -> Dict:
    try:
        fmt = kfree_skb_format()
    except (OSError, BpftoolsError) as exc:
        return {"reason_field": False, "count": 0, "detail": str(exc)}
    return {"reason_field": fmt.has_reason, "count": len(fmt.reasons)}


def _changes(mounts: Dict[str, str], probes: List[features.Probe]) -> List[str]:
    """What this run of doctor changed on the host, one sentence each."""
    changes = [f"mounted {point}" for point, state in mounts.items() if state == "mounted now"]
    changes += [f"loaded module {p.loaded_module} (to probe {p.name})" for p in probes if p.loaded_module]
    return changes


def collect_report(fix: bool = False, load_modules: bool = False) -> Dict:
    """`fix`: mount what is missing and load tunnel modules to probe them; otherwise changes nothing."""
    load_modules = load_modules or fix
    with contextlib.ExitStack() as stack:
        if fix:
            mounts = ensure_all_mounted()
        else:
            mounts = mount_status()
            stack.enter_context(reporting_only())
        probes = features.probe_all(load_modules=load_modules)
        report = _report(mounts, probes)
    report["changes"] = _changes(mounts, probes)
    return report


def _report(mounts: Dict[str, str], probes: List[features.Probe]) -> Dict:
    available = features.probe_dict(probes)
    return {
        "version": __version__,
        "kernel": kernel_release(),
        "lockdown": lockdown_mode(),
        "btf": _btf_report(),
        "mounts": mounts,
        "headers": {"path": build_dir(), "version": headers_version()},
        "drop_reasons": _drop_reasons_report(),
        "features": features.as_json(probes),
        "capabilities": {name: features.needs_met(needs, available)
                         for name, needs in features.CAPABILITY_NEEDS.items()},
        "docker": docker_engine.availability(),
        "cri": cri.availability(),
    }


def _drop_reasons_line(drop_reasons: Dict) -> str:
    if "detail" in drop_reasons:
        return f"unknown ({drop_reasons['detail']})"
    return f"{drop_reasons['count']} names from skb:kfree_skb" + (
        "" if drop_reasons["reason_field"] else " (no reason field: reported as 'unknown')")


def format_report(report: Dict) -> str:
    yes_no = {True: "yes", False: "NO"}
    lines = [
        f"bpftools {report['version']} on kernel {report['kernel']}",
        f"  lockdown:      {report['lockdown'] or 'unknown (no securityfs)'}",
        f"  BTF:           {yes_no[report['btf']['available']]}"
        + ("" if "offsets" in report["btf"] else f" ({report['btf'].get('detail', '')})"),
        f"  headers:       {report['headers']['version'] or 'MISSING'} at {report['headers']['path']}",
        f"  drop reasons:  {_drop_reasons_line(report['drop_reasons'])}",
        "  mounts:",
    ]
    lines += [f"    {point:22} {state}" for point, state in report["mounts"].items()]
    lines.append("  features (probed):")
    for name, probe in report["features"].items():
        lines.append(f"    {name:22} {'yes' if probe['ok'] else 'no ':3}  {probe['detail']}")
    lines.append("  capabilities:")
    for name, ok in report["capabilities"].items():
        needs = " and ".join(n.replace("|", " or ") for n in features.CAPABILITY_NEEDS[name])
        lines.append(f"    {name:22} {'ready' if ok else 'UNAVAILABLE'}  (needs {needs})")
    docker = report["docker"]
    state = f"yes (Engine {docker['version']})" if docker["api"] else "no"
    lines.append(f"  docker:        {state}: {docker['detail']} [{docker['socket']}]")
    runtime = report["cri"]
    state = f"yes ({runtime['runtime']} {runtime['version']})" if runtime["api"] else "no"
    lines.append(f"  cri:           {state}: {runtime['detail']} [{runtime['endpoint'] or 'no socket'}]")
    lines.append("  changed:       " + ("; ".join(report["changes"]) or "nothing"))
    return "\n".join(lines)
