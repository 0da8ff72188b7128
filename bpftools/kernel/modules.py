"""Whether a kernel module is there, read without loading it: /proc/modules and /sys/module
(loaded), modules.builtin and the kernel config (built in), `modinfo` (loadable).

doctor asks this before a probe that would make the kernel load a module (creating an ipip
device loads `ipip`, whose fallback device `tunl0` then appears in every namespace)."""
from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Optional

PROC_MODULES = "/proc/modules"
SYS_MODULE = "/sys/module"
PROC_CONFIG = "/proc/config.gz"

# Where a module is, or was never built.
LOADED, BUILTIN, LOADABLE, ABSENT = "loaded", "builtin", "loadable", "absent"


@dataclass(frozen=True)
class ModuleState:
    module: str
    state: str  # LOADED, BUILTIN, LOADABLE or ABSENT
    detail: str

    @property
    def present(self) -> bool:
        """Its code is in the running kernel: using it loads nothing."""
        return self.state in (LOADED, BUILTIN)


def loaded_modules(text: str) -> set:
    """Module names in /proc/modules' text."""
    return {line.split()[0] for line in text.splitlines() if line.strip()}


def builtin_modules(text: str) -> set:
    """Module names in modules.builtin's text (`kernel/net/ipv4/ipip.ko` -> `ipip`); the kernel
    writes `-` and `_` alike in module names."""
    return {os.path.basename(line.strip())[: -len(".ko")].replace("-", "_")
            for line in text.splitlines() if line.strip().endswith(".ko")}


def config_value(text: str, symbol: str) -> Optional[str]:
    """`y`, `m` or a value of CONFIG_SYMBOL in a kernel config; "n" where it says `is not set`."""
    match = re.search(rf"^{symbol}=(\S+)$", text, re.M)
    if match:
        return match.group(1)
    return "n" if re.search(rf"^# {symbol} is not set$", text, re.M) else None


def _read(path: str, opener=open) -> Optional[str]:
    try:
        with opener(path, "rt") as f:
            return f.read()
    except OSError:
        return None


def kernel_config(release: str) -> Optional[str]:
    return _read(PROC_CONFIG, gzip.open) or _read(f"/boot/config-{release}")


def _modinfo(module: str) -> Optional[str]:
    """The module's file according to modinfo (reads modules.dep; loads nothing), None if unknown."""
    if shutil.which("modinfo") is None:
        return None
    proc = subprocess.run(["modinfo", "-F", "filename", module], capture_output=True, text=True)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def module_state(module: str, kconfig_symbol: str, release: Optional[str] = None) -> ModuleState:
    release = release or os.uname().release
    loaded = _read(PROC_MODULES)
    if (loaded is not None and module in loaded_modules(loaded)) or os.path.isdir(os.path.join(SYS_MODULE, module)):
        return ModuleState(module, LOADED, f"module {module} is loaded")
    builtin = _read(f"/lib/modules/{release}/modules.builtin")
    if builtin is not None and module in builtin_modules(builtin):
        return ModuleState(module, BUILTIN, f"{module} is built into the kernel")
    config = kernel_config(release)
    value = config_value(config, kconfig_symbol) if config is not None else None
    if value == "y":
        return ModuleState(module, BUILTIN, f"{module} is built into the kernel ({kconfig_symbol}=y)")
    filename = _modinfo(module) if loaded is not None else None  # no /proc/modules: no loadable modules
    if filename and filename != "(builtin)":
        return ModuleState(module, LOADABLE, f"module {module} is not loaded ({filename})")
    if filename == "(builtin)":
        return ModuleState(module, BUILTIN, f"{module} is built into the kernel")
    if value == "n":
        why = f"{kconfig_symbol} is not set"
    elif loaded is None:
        why = "this kernel loads no modules (no /proc/modules)"
    else:
        why = f"no module {module} for {release}"
    return ModuleState(module, ABSENT, f"{module} is neither built in nor a module: {why}")
