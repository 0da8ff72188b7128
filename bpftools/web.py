"""serve's HTTP side: a landing page at `/`, `/metrics`, `/-/healthy` (the process answers) and
`/-/ready` (everything in the config is attached), behind the TLS and basic auth of a WebConfig.

The server reads its WebConfig and readiness through `server.state` at every connection and
request, so a reload swaps them without closing the listening socket. TLS handshakes happen in
the connection's own thread: a slow client cannot hold up the others."""
from __future__ import annotations

import base64
import binascii
import hashlib
import html
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Callable, Dict, Optional, Tuple

from prometheus_client import MetricsHandler
from prometheus_client.registry import CollectorRegistry

from . import __version__
from .web_config import WebConfig

log = logging.getLogger(__name__)

HEALTHY, READY, METRICS = "/-/healthy", "/-/ready", "/metrics"
UNAUTHENTICATED = (HEALTHY, READY)  # kubelet probes carry no password; they reveal nothing but "OK"
CONNECTION_TIMEOUT = 30.0  # seconds a client may take for the handshake and its request

Readiness = Tuple[bool, str]  # ready, and what is missing (or "ready")


@dataclass(frozen=True)
class ServerState:
    web: WebConfig
    ready: Callable[[], Readiness]


LANDING = """<!DOCTYPE html>
<html><head><title>bpftools exporter</title></head>
<body>
<h1>bpftools exporter</h1>
<p>bpftools {version}: drops, tunnel counters and XDP decapsulation, for Prometheus.</p>
<ul>
<li><a href="metrics">/metrics</a>: the metrics</li>
<li><a href="-/healthy">/-/healthy</a>: the process answers (liveness)</li>
<li><a href="-/ready">/-/ready</a>: everything in the config is attached (readiness)</li>
</ul>
</body></html>
"""


class _PasswordCache:
    """bcrypt is slow on purpose: a checked (user, password, hash) is remembered, as exporter-toolkit does."""

    # Checked when the user is unknown, so that an unknown user costs as much time as a wrong password.
    DUMMY = b"$2b$10$QMWtaBYxXOKzFqGm/n3/1.rnmCR2HhZUN0ZfaoCEYOJHH23ToYkdW"

    def __init__(self, size: int = 256):
        self._lock = threading.Lock()
        self._ok: Dict[Tuple[str, bytes, bytes], bool] = {}  # (user, sha256(password), hash)
        self.size = size

    def check(self, users, user: str, password: bytes) -> bool:
        import bcrypt

        hashed = users.get(user)
        key = (user, hashlib.sha256(password).digest(), hashed or b"")  # no password kept in memory
        with self._lock:
            if key in self._ok:
                return self._ok[key]
        ok = bcrypt.checkpw(password, hashed or self.DUMMY) and hashed is not None
        with self._lock:
            if len(self._ok) >= self.size:
                self._ok.clear()
            self._ok[key] = ok
        return ok


_passwords = _PasswordCache()


def authorized(web: WebConfig, header: Optional[str]) -> bool:
    """Whether an `Authorization` header satisfies the config's basic_auth_users (none: anyone)."""
    if not web.users:
        return True
    if not header or not header.startswith("Basic "):
        return False
    try:
        user, sep, password = base64.b64decode(header[len("Basic "):], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return bool(sep) and _passwords.check(web.users, user, password.encode())


class Handler(MetricsHandler):
    server: "WebServer"
    timeout = CONNECTION_TIMEOUT

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):  # a failed handshake ends here (logged at debug level)
            self.request.settimeout(self.timeout)
            self.request.do_handshake()
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        state = self.server.state
        path = self.path.split("?", 1)[0]
        if path not in UNAUTHENTICATED and not authorized(state.web, self.headers.get("Authorization")):
            self._reply(401, "Unauthorized\n", state.web, [("WWW-Authenticate", 'Basic realm="bpftools"')])
        elif path == METRICS:
            self._extra_headers = state.web.headers
            super().do_GET()
        elif path == "/":
            self._reply(200, LANDING.format(version=html.escape(__version__)), state.web, content_type="text/html")
        elif path == HEALTHY:
            self._reply(200, "OK\n", state.web)
        elif path == READY:
            ready, detail = state.ready()
            self._reply(200 if ready else 503, "OK\n" if ready else f"not ready: {detail}\n", state.web)
        else:
            self._reply(404, "Not found: see / for what is here\n", state.web)

    _extra_headers: Tuple[Tuple[str, str], ...] = ()

    def end_headers(self) -> None:
        for name, value in self._extra_headers:
            self.send_header(name, value)
        super().end_headers()

    def _reply(self, status: int, body: str, web: WebConfig, headers=(), content_type: str = "text/plain") -> None:
        data = body.encode()
        self._extra_headers = web.headers
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for header in headers:
            self.send_header(*header)
        self.end_headers()
        self.wfile.write(data)


class WebServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, state: ServerState, handler: type):
        # IPv4 or IPv6, as the address (or host name) says; a name that does not resolve is an OSError
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        self.address_family, _, _, _, sockaddr = infos[0]
        self.state = state
        super().__init__((sockaddr[0], port), handler)

    def get_request(self):
        conn, addr = super().get_request()
        context = self.state.web.tls
        if context is not None:  # the handshake happens at the first read, in the connection's thread
            conn = context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, addr

    def handle_error(self, request, client_address) -> None:
        log.debug("HTTP connection from %s failed", client_address[0], exc_info=True)


def start_server(host: str, port: int, state: ServerState, registry: CollectorRegistry) -> WebServer:
    """Listen on host:port and serve in a daemon thread; OSError when the address is not free."""
    server = WebServer(host, port, state, type("BpftoolsHandler", (Handler,), {"registry": registry}))
    threading.Thread(target=server.serve_forever, name="bpftools-http", daemon=True).start()
    return server
