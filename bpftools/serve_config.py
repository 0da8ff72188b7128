"""Configuration of `bpftools serve`: flags, or a TOML/YAML file with the same keys."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import BpftoolsError
from .names import check_ifname, check_netns_selector

# 9654: free in the Prometheus "default port allocations" list; 9435, used until 0.1, is
# ebpf_exporter's, which users often run beside us (docs/serve.md).
DEFAULT_PORT = 9654
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"  # loopback: exposing metrics wider is an explicit choice


@dataclass
class ServeConfig:
    listen: str = DEFAULT_LISTEN
    drops: bool = False
    netns: Optional[str] = None
    all_netns: bool = False
    encap: List[str] = field(default_factory=list)  # "IFACE" or "NETNS/IFACE"
    ingress_hook: str = "tc"
    udp_port: List[str] = field(default_factory=list)  # TYPE=PORT
    decap: List[str] = field(default_factory=list)
    allow_remote: List[str] = field(default_factory=list)
    allow_any: bool = False
    local: List[str] = field(default_factory=list)
    watch_interval: float = 1.0  # seconds between checks for interfaces that appeared/disappeared
    web_config_file: Optional[str] = None  # TLS and basic auth (exporter-toolkit format, web_config.py)

    def validate(self) -> "ServeConfig":
        listen_address(self.listen)  # first: a typo in the address is the error to show
        if self.netns and self.all_netns:
            raise BpftoolsError("netns and all_netns exclude each other")
        if not (self.drops or self.encap or self.decap):
            raise BpftoolsError("nothing to export: give --drops, --encap IFACE or --decap IFACE (or a --config file)")
        if self.decap and not (self.allow_remote or self.allow_any):
            raise BpftoolsError("--decap needs --allow-remote CIDR or --allow-any (open ipip decapsulation is CVE-2020-10136)")
        # Options of per-interface capabilities are used when an interface appears: check them now.
        from .encap_stats import INGRESS_HOOKS, parse_udp_port, udp_port_table
        from .xdp_decap import parse_addresses, parse_networks

        if self.ingress_hook not in INGRESS_HOOKS:
            raise BpftoolsError(f"ingress_hook {self.ingress_hook!r}: tc or xdp")
        udp_port_table(parse_udp_port(spec) for spec in self.udp_port)
        for key, specs in (("encap", self.encap), ("decap", self.decap)):
            for spec in specs:
                split_interface(spec, self.netns, key)
        if self.decap:
            parse_networks(self.allow_remote, self.allow_any)
        parse_addresses(self.local)
        return self


def listen_address(text: str) -> Tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise BpftoolsError(f"--listen {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host.strip("[]") or "0.0.0.0", int(port)


def split_interface(spec: str, default_netns: Optional[str], what: str = "interface") -> Tuple[Optional[str], str]:
    """"NETNS/IFACE" or "IFACE" -> (netns, ifname), both checked as names a user can select."""
    netns, sep, ifname = spec.rpartition("/")
    check_ifname(what, ifname)
    if sep:
        check_netns_selector(netns)
    return (netns if sep else default_netns), ifname


def read_config_file(path: str) -> Dict[str, Any]:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise BpftoolsError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        if file.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python < 3.11
                import tomli as tomllib
            data = tomllib.loads(text)
        elif file.suffix in (".yml", ".yaml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise BpftoolsError(f"config file {path}: use .toml, .yml or .yaml")
    except BpftoolsError:
        raise
    except Exception as exc:
        raise BpftoolsError(f"config file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise BpftoolsError(f"config file {path}: expected a table of settings")
    return data


def _checked(key: str, name: str, value: Any) -> Any:
    """A file's value has the type of the setting (a reload must not take a running exporter down)."""
    default = getattr(ServeConfig(), name)
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, list):
        ok, kind = isinstance(value, list) and all(isinstance(v, str) for v in value), "a list of strings"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        kind = "a number of seconds > 0"
    else:
        ok, kind = isinstance(value, str), "a string"
    if not ok:
        raise BpftoolsError(f"config file: {key} must be {kind}, not {value!r}")
    return float(value) if isinstance(default, float) else value


def build_config(file_settings: Dict[str, Any], flags: Dict[str, Any]) -> ServeConfig:
    """File settings, overridden by flags that were given (not None / not empty)."""
    known = {f.name: f for f in dataclasses.fields(ServeConfig)}
    settings: Dict[str, Any] = {}
    for key, value in file_settings.items():
        name = key.replace("-", "_")
        if name not in known:
            raise BpftoolsError(f"config file: unknown setting {key!r} (known: {', '.join(sorted(known))})")
        if isinstance(getattr(ServeConfig(), name), list) and isinstance(value, str):
            value = [value]
        settings[name] = _checked(key, name, value)
    for name, value in flags.items():
        if value not in (None, (), [], False):
            settings[name] = list(value) if isinstance(value, tuple) else value
    return ServeConfig(**settings).validate()
