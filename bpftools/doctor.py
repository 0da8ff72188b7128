"""What `bpftools doctor` reports: the kernel, its mounts and headers, and real feature probes."""
from __future__ import annotations

from typing import Dict

from . import __version__, cri, docker_engine
from .kernel import features
from .kernel.drop_reasons import kfree_skb_format
from .kernel.headers import build_dir, headers_version
from .kernel.mounts import ensure_all_mounted
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
    except OSError as exc:
        return {"reason_field": False, "count": 0, "detail": str(exc)}
    return {"reason_field": fmt.has_reason, "count": len(fmt.reasons)}


def collect_report() -> Dict:
    mounts = ensure_all_mounted()
    probes = features.probe_all()
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


def format_report(report: Dict) -> str:
    yes_no = {True: "yes", False: "NO"}
    lines = [
        f"bpftools {report['version']} on kernel {report['kernel']}",
        f"  lockdown:      {report['lockdown'] or 'unknown (no securityfs)'}",
        f"  BTF:           {yes_no[report['btf']['available']]}"
        + ("" if "offsets" in report["btf"] else f" ({report['btf'].get('detail', '')})"),
        f"  headers:       {report['headers']['version'] or 'MISSING'} at {report['headers']['path']}",
        f"  drop reasons:  {report['drop_reasons']['count']} names from skb:kfree_skb"
        + ("" if report["drop_reasons"]["reason_field"] else " (no reason field: reported as 'unknown')"),
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
    return "\n".join(lines)
