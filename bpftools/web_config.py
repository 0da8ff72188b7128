"""`serve --web.config.file`: TLS and basic auth in the Prometheus exporter-toolkit's format
(the file node_exporter and ebpf_exporter take), read into one immutable WebConfig.

    tls_server_config:
      cert_file: server.crt          # paths are relative to the web config file
      key_file: server.key
      client_ca_file: ca.crt         # mutual TLS (client_auth_type defaults to RequireAndVerifyClientCert)
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12             # TLS10 .. TLS13; default TLS12
      max_version: TLS13
    http_server_config:
      headers: {X-Frame-Options: deny}
    basic_auth_users:
      prometheus: $2b$12$...         # bcrypt hashes (htpasswd -nBC 12 "" | tr -d ':\\n')
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from .errors import BpftoolsError

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version"}
# exporter-toolkit settings that Python's ssl module cannot honour as Go does: refused, never ignored.
UNSUPPORTED = {"tls_server_config": {"cert", "key", "client_ca", "cipher_suites", "curve_preferences",
                                     "prefer_server_cipher_suites", "client_allowed_sans",
                                     "RequestClientCert", "RequireAnyClientCert"},
               "http_server_config": {"http2"}}
SECTIONS = {"tls_server_config", "http_server_config", "basic_auth_users"}


@dataclass(frozen=True)
class WebConfig:
    path: Optional[str] = None
    tls: Optional[ssl.SSLContext] = field(default=None, compare=False)
    tls_settings: Tuple[Tuple[str, str], ...] = ()  # what the context was made from (for comparisons and logs)
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: Tuple[Tuple[str, str], ...] = ()

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"


def _error(path: str, message: str) -> BpftoolsError:
    return BpftoolsError(f"web config file {path}: {message}")


def _mapping(path: str, name: str, value: Any) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _error(path, f"{name} must be a mapping")
    return value


def _tls_context(path: str, settings: Dict[str, Any]) -> ssl.SSLContext:
    base = Path(path).parent
    unknown = set(settings) - TLS_KEYS
    if unknown & UNSUPPORTED["tls_server_config"]:
        raise _error(path, f"tls_server_config.{sorted(unknown)[0]} is not supported by bpftools")
    if unknown:
        raise _error(path, f"unknown setting tls_server_config.{sorted(unknown)[0]}")
    if not all(isinstance(v, str) for v in settings.values()):
        raise _error(path, "tls_server_config values must be strings")
    if not settings.get("cert_file") or not settings.get("key_file"):
        raise _error(path, "tls_server_config needs cert_file and key_file")
    files = {key: str(base / settings[key]) for key in ("cert_file", "key_file", "client_ca_file") if settings.get(key)}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for key in ("min_version", "max_version"):
        name = settings.get(key, "TLS12" if key == "min_version" else None)
        if name is None:
            continue
        if name not in TLS_VERSIONS:
            raise _error(path, f"tls_server_config.{key} {name!r}: one of {', '.join(TLS_VERSIONS)}")
        setattr(context, "minimum_version" if key == "min_version" else "maximum_version", TLS_VERSIONS[name])
    auth = settings.get("client_auth_type") or ("RequireAndVerifyClientCert" if "client_ca_file" in files else "NoClientCert")
    if auth in UNSUPPORTED["tls_server_config"]:
        raise _error(path, f"client_auth_type {auth} is not supported by bpftools (it verifies every client certificate)")
    if auth not in CLIENT_AUTH:
        raise _error(path, f"client_auth_type {auth!r}: one of {', '.join(CLIENT_AUTH)}")
    if auth != "NoClientCert" and "client_ca_file" not in files:
        raise _error(path, f"client_auth_type {auth} needs client_ca_file")
    try:
        context.load_cert_chain(files["cert_file"], files["key_file"])
        if "client_ca_file" in files:
            context.load_verify_locations(cafile=files["client_ca_file"])
    except (OSError, ssl.SSLError) as exc:
        raise _error(path, f"cannot load the TLS certificate or key: {exc.strerror or exc}") from None
    context.verify_mode = CLIENT_AUTH[auth]
    return context


def _users(path: str, value: Any) -> Dict[str, bytes]:
    import bcrypt

    users = {}
    for user, hashed in _mapping(path, "basic_auth_users", value).items():
        if not isinstance(hashed, str) or not hashed.startswith("$2"):
            raise _error(path, f"basic_auth_users.{user} must be a bcrypt hash ($2a$, $2b$ or $2y$...)")
        try:
            bcrypt.checkpw(b"", hashed.encode())
        except ValueError as exc:
            raise _error(path, f"basic_auth_users.{user}: {exc}") from None
        users[user] = hashed.encode()
    return users


def parse_web_config(path: str, data: Any) -> WebConfig:
    data = _mapping(path, "the file", data)
    unknown = sorted(set(data) - SECTIONS)
    if unknown:
        raise _error(path, f"unknown setting {unknown[0]!r} (known: {', '.join(sorted(SECTIONS))})")
    tls_settings = _mapping(path, "tls_server_config", data.get("tls_server_config"))
    http = _mapping(path, "http_server_config", data.get("http_server_config"))
    for key in http:
        if key in UNSUPPORTED["http_server_config"] and http[key]:
            raise _error(path, f"http_server_config.{key} is not supported by bpftools")
        if key not in UNSUPPORTED["http_server_config"] and key != "headers":
            raise _error(path, f"unknown setting http_server_config.{key}")
    headers = _mapping(path, "http_server_config.headers", http.get("headers"))
    return WebConfig(path=path, tls=_tls_context(path, tls_settings) if tls_settings else None,
                     tls_settings=tuple(sorted(tls_settings.items())), users=_users(path, data.get("basic_auth_users")),
                     headers=tuple((str(k), str(v)) for k, v in headers.items()))


def load_web_config(path: Optional[str]) -> WebConfig:
    """The web config of `path` (None: plain HTTP, no authentication); one-line errors."""
    if path is None:
        return WebConfig()
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BpftoolsError(f"cannot read web config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _error(path, str(exc).splitlines()[0]) from None
    return parse_web_config(path, data or {})
