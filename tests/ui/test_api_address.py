"""Where the page's API server finds Airflow's REST API to trigger runs as the user."""

from __future__ import annotations

import pytest
from fastapi import HTTPException
from starlette.requests import Request

from blockchain_provider.ui.api import airflow_api_url, run_url, user_token


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
    monkeypatch.delenv("BLOCKCHAIN_UI_AIRFLOW_API_URL", raising=False)
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
    monkeypatch.setenv("BLOCKCHAIN_UI_AIRFLOW_API_URL", "http://127.0.0.1:9000/api/v2/")
    assert airflow_api_url(request(("10.0.0.1", 8080))) == "http://127.0.0.1:9000/api/v2"


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
