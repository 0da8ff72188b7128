"""serve's HTTP side without root: the web config file (exporter-toolkit format), TLS, mutual
TLS and basic auth on /metrics, the landing page and the health endpoints."""
import base64
import ssl
import urllib.error
import urllib.request

import pytest
import yaml
from prometheus_client import CollectorRegistry

from bpftools.errors import BpftoolsError
from bpftools.web import ServerState, start_server
from bpftools.web_config import load_web_config
from certs import bcrypt_hash, make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def write(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("data, message", [
    ({"tls_server_config": {"cert_file": "x.crt"}}, "needs cert_file and key_file"),
    ({"tls_server_config": {"cert_file": "no.crt", "key_file": "no.key"}}, "cannot load the TLS certificate"),
    ({"tls_server_config": {"cert_file": "a", "key_file": "b", "min_version": "TLS99"}}, "min_version 'TLS99'"),
    ({"tls_server_config": {"cert_file": "a", "key_file": "b", "client_auth_type": "RequireAndVerifyClientCert"}},
     "needs client_ca_file"),
    ({"tls_server_config": {"cert_file": "a", "key_file": "b", "cipher_suites": ["x"]}}, "not supported by bpftools"),
    ({"tls_server_config": {"cert_file": "a", "key_file": "b", "bogus": 1}}, "unknown setting tls_server_config.bogus"),
    ({"basic_auth_users": {"u": "plain"}}, "must be a bcrypt hash"),
    ({"basic_auth_users": {"u": "$2b$10$short"}}, "basic_auth_users.u"),
    ({"basic_auth_users": ["u"]}, "basic_auth_users must be a mapping"),
    ({"http_server_config": {"http2": True}}, "http2 is not supported"),
    ({"tls_config": {}}, "unknown setting 'tls_config'"),
])
def test_bad_web_config_is_one_line_error(tmp_path, data, message):
    with pytest.raises(BpftoolsError, match=message) as err:
        load_web_config(write(tmp_path / "web.yml", data))
    assert "\n" not in str(err.value) and str(tmp_path / "web.yml") in str(err.value)


def test_missing_or_unparsable_web_config(tmp_path):
    with pytest.raises(BpftoolsError, match="cannot read web config file"):
        load_web_config(str(tmp_path / "none.yml"))
    (tmp_path / "bad.yml").write_text("tls_server_config: [\n")
    with pytest.raises(BpftoolsError, match="web config file .*bad.yml"):
        load_web_config(str(tmp_path / "bad.yml"))
    assert load_web_config(None).scheme == "http"


def _get(url, context=None, user=None, password=None):
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _client_context(certs, with_cert=True):
    context = ssl.create_default_context(cafile=str(certs.ca))
    if with_cert:
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return context


@pytest.fixture
def server(tmp_path, certs):
    """A server on a free port with mutual TLS and one user (relative paths: next to the file)."""
    for name in ("ca", "server_cert", "server_key"):
        (tmp_path / getattr(certs, name).name).write_bytes(getattr(certs, name).read_bytes())
    web = load_web_config(write(tmp_path / "web.yml", {
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "client_ca_file": "ca.crt",
                              "min_version": "TLS12"},
        "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
        "basic_auth_users": {"prometheus": bcrypt_hash("s3cret")}}))
    ready = [(False, "not attached: drops")]
    srv = start_server("127.0.0.1", 0, ServerState(web, lambda: ready[-1]), CollectorRegistry())
    srv.ready_values = ready
    yield srv
    srv.shutdown()
    srv.server_close()


def test_tls_and_basic_auth_guard_metrics(server, certs):
    base = f"https://127.0.0.1:{server.server_address[1]}"
    ok = _client_context(certs)
    assert _get(base + "/metrics", ok, "prometheus", "s3cret")[0] == 200
    assert _get(base + "/metrics", ok, "prometheus", "wrong")[0] == 401
    assert _get(base + "/metrics", ok, "nobody", "s3cret")[0] == 401
    assert _get(base + "/metrics", ok)[0] == 401
    status, body = _get(base + "/", ok, "prometheus", "s3cret")
    assert status == 200 and 'href="metrics"' in body and 'href="-/ready"' in body and 'href="-/healthy"' in body
    with pytest.raises(OSError):  # mutual TLS: no client certificate, no connection
        _get(base + "/metrics", _client_context(certs, with_cert=False), "prometheus", "s3cret")
    with pytest.raises(OSError):  # plain HTTP to a TLS port
        _get(f"http://127.0.0.1:{server.server_address[1]}/metrics", None, "prometheus", "s3cret")


def test_health_endpoints_need_no_password_and_say_what_is_missing(server, certs):
    base = f"https://127.0.0.1:{server.server_address[1]}"
    ok = _client_context(certs)
    assert _get(base + "/-/healthy", ok) == (200, "OK\n")
    assert _get(base + "/-/ready", ok) == (503, "not ready: not attached: drops\n")
    server.ready_values.append((True, "ready"))
    assert _get(base + "/-/ready", ok) == (200, "OK\n")
    assert _get(base + "/nothing", ok, "prometheus", "s3cret")[0] == 404


def test_a_new_web_config_applies_to_the_next_connection(server, certs, tmp_path):
    base = f"https://127.0.0.1:{server.server_address[1]}"
    plain = load_web_config(write(tmp_path / "plain.yml", {"basic_auth_users": {"other": bcrypt_hash("pw")}}))
    server.state = ServerState(plain, server.state.ready)
    http = f"http://127.0.0.1:{server.server_address[1]}"
    assert _get(http + "/metrics", None, "other", "pw")[0] == 200
    assert _get(http + "/metrics", None, "prometheus", "s3cret")[0] == 401
    with pytest.raises(OSError):
        _get(base + "/metrics", _client_context(certs), "other", "pw")


def test_min_version_refuses_older_clients(tmp_path, certs):
    web = load_web_config(write(tmp_path / "web.yml", {"tls_server_config": {
        "cert_file": str(certs.server_cert), "key_file": str(certs.server_key), "min_version": "TLS13"}}))
    srv = start_server("127.0.0.1", 0, ServerState(web, lambda: (True, "ready")), CollectorRegistry())
    try:
        url = f"https://127.0.0.1:{srv.server_address[1]}/-/healthy"
        old = _client_context(certs, with_cert=False)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(OSError):
            _get(url, old)
        assert _get(url, _client_context(certs, with_cert=False)) == (200, "OK\n")
    finally:
        srv.shutdown()
        srv.server_close()
