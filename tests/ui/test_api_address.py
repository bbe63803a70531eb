"""Where the page's API server finds Airflow's REST API to trigger runs as the user."""

from __future__ import annotations

import pytest
from fastapi import HTTPException
from starlette.requests import Request

from blockchain_provider.ui.airflow_api import airflow_api_url, run_url
from blockchain_provider.ui.auth import user_token


def request(
    server: tuple[str, int] | None, headers: dict[str, str] | None = None, scheme: str = "http"
) -> Request:
    return Request(
        {
            "type": "http",
            "scheme": scheme,
            "server": server,
            "path": "/blockchain-requests/api/sync/partner",
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        }
    )


@pytest.fixture(autouse=True)
def plain_server(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("UI_AIRFLOW_API_URL", "UI_AIRFLOW_API_CA"):
        monkeypatch.delenv(f"BLOCKCHAIN_{name}", raising=False)
        monkeypatch.delenv(f"AIRFLOW__BLOCKCHAIN__{name}", raising=False)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example.com")
    monkeypatch.setenv("AIRFLOW__API__SSL_CERT", "")


def test_the_socket_the_request_arrived_on(monkeypatch: pytest.MonkeyPatch) -> None:
    assert airflow_api_url(request(("172.18.0.5", 8080))) == "http://172.18.0.5:8080/api/v2"
    assert airflow_api_url(request(("::1", 8080))) == "http://[::1]:8080/api/v2"
    # behind a TLS proxy the request says https, the server itself still speaks http
    assert airflow_api_url(request(("127.0.0.1", 8080), scheme="https")) == "http://127.0.0.1:8080/api/v2"
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://example.com/airflow/")
    assert airflow_api_url(request(("127.0.0.1", 8080))) == "http://127.0.0.1:8080/airflow/api/v2"


def test_an_override_or_the_base_url_without_a_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    assert airflow_api_url(request(None)) == "http://airflow.example.com/api/v2"
    monkeypatch.setenv("BLOCKCHAIN_UI_AIRFLOW_API_URL", "http://127.0.0.1:9000/api/v2/")  # as .env sets it
    assert airflow_api_url(request(("10.0.0.1", 8080))) == "http://127.0.0.1:9000/api/v2"
    monkeypatch.setenv("AIRFLOW__BLOCKCHAIN__UI_AIRFLOW_API_URL", "http://127.0.0.1:9001/api/v2")
    assert airflow_api_url(request(("10.0.0.1", 8080))) == "http://127.0.0.1:9001/api/v2"


def test_the_callers_token_is_the_one_forwarded() -> None:
    assert user_token(request(("h", 1), {"Authorization": "Bearer abc.def.ghi"})) == "abc.def.ghi"
    assert user_token(request(("h", 1), {"Cookie": "_token=xyz.uvw.rst; other=1"})) == "xyz.uvw.rst"
    with pytest.raises(HTTPException, match="Not authenticated") as raised:
        user_token(request(("h", 1), {"Authorization": "Basic Zm9vOmJhcg=="}))
    assert raised.value.status_code == 401


def test_run_links_are_quoted() -> None:
    assert (
        run_url("blockchain_partner_answer", "manual__2026-12-01T22:23:36+00:00")
        == "dags/blockchain_partner_answer/runs/manual__2026-12-01T22%3A23%3A36%2B00%3A00"
    )


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """An https server on 127.0.0.1 whose self-signed certificate names airflow.example.com."""
    import http.server
    import ssl
    import subprocess
    import threading

    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         "/CN=airflow.example.com", "-addext", "subjectAltName=DNS:airflow.example.com",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], cert
    finally:
        server.shutdown()


def call(port: int) -> int:
    import httpx

    from blockchain_provider.ui.airflow_api import _default_api_client

    try:
        with _default_api_client(request(("127.0.0.1", port))) as client:
            return client.get("/health").status_code
    except httpx.ConnectError:
        return 0  # the certificate was refused


def test_the_own_socket_over_tls_is_verified_against_its_certificate_and_host_name(tls_server, monkeypatch):
    port, cert = tls_server
    monkeypatch.setenv("AIRFLOW__API__SSL_CERT", str(cert))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com")
    assert call(port) == 200
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://other.example.com")
    assert call(port) == 0  # not the name the certificate gives
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "")
    with pytest.raises(HTTPException, match="base_url") as raised:
        call(port)
    assert raised.value.status_code == 503


def test_an_https_override_is_verified_against_the_configured_ca(tls_server, monkeypatch):
    port, cert = tls_server
    monkeypatch.setenv("AIRFLOW__API__SSL_CERT", str(cert))
    monkeypatch.setenv("BLOCKCHAIN_UI_AIRFLOW_API_URL", f"https://127.0.0.1:{port}/api/v2")
    assert call(port) == 0  # a self-signed certificate the system does not trust, naming another host
    monkeypatch.setenv("BLOCKCHAIN_UI_AIRFLOW_API_CA", str(cert))
    assert call(port) == 0  # trusted now, but 127.0.0.1 is not the name it gives
    monkeypatch.setenv("BLOCKCHAIN_UI_AIRFLOW_API_URL", f"https://airflow.example.com:{port}/api/v2")
    monkeypatch.setattr("socket.getaddrinfo", _resolve_to_loopback(), raising=True)
    assert call(port) == 200


def _resolve_to_loopback():
    import socket

    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        return real("127.0.0.1" if host == "airflow.example.com" else host, *args, **kwargs)

    return resolve
