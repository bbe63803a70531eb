"""The "Blockchain requests" plugin inside Airflow's real API server app.

The app is ``create_app()`` of ``airflow api-server``, the plugin loaded from the provider's
``airflow.plugins`` entry point, users from the simple auth manager, DAGs serialized from dags/.
Answers and syncs go through Airflow's own REST API of that app (in process) with the caller's JWT.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.ui.conftest import MES_AGENT, OTHER_AGENT

pytestmark = pytest.mark.airflow_db

PREFIX = "/blockchain-requests"
STATIC = Path(__file__).resolve().parents[2] / "plugins/blockchain_provider/src/blockchain_provider/ui/static"
NOW = int(time.time())


def rid(n: int) -> str:
    return f"{n:032x}"


def partner(n: int, status: str = "OPEN", to: str = MES_AGENT, age: int = 0) -> dict[str, Any]:
    return {
        "partner_request_id": rid(n),
        "issuing_agent": OTHER_AGENT,
        "receiving_agent": to,
        "status": status,
        "timestamp": NOW - 3600 + n - age,
        "answer_timestamp": 0 if status == "OPEN" else NOW,
        "transaction_ids": [],
    }


@pytest.fixture
def client(api_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A browser of the API server; the plugin reaches Airflow's REST API of the same app."""
    from blockchain_provider.ui import airflow_api

    monkeypatch.setattr(
        airflow_api,
        "api_client_factory",
        lambda request: TestClient(api_server, base_url="http://testserver/api/v2"),
    )
    yield TestClient(api_server)


def as_user(client: TestClient, token: Any, username: str) -> TestClient:
    client.cookies.set("_token", token(username))
    return client


def dag_runs(dag_id: str) -> list[Any]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = list(session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id)))
        session.expunge_all()
    return runs


def finish_runs(dag_id: str, state: str) -> None:
    from airflow._shared.timezones import timezone
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(
            update(DagRun).where(DagRun.dag_id == dag_id).values(state=state, end_date=timezone.utcnow())
        )


@pytest.fixture(autouse=True)
def no_runs(api_server: Any) -> Iterator[None]:
    """Each test starts without DAG runs of the four DAGs."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    def clear() -> None:
        with create_session() as session:
            session.execute(delete(DagRun).where(DagRun.dag_id.like("blockchain_%")))

    clear()
    yield
    clear()


# ------------------------------------------------------------------------------ loading


def test_the_plugin_is_registered_with_the_api_server(client: TestClient, token: Any) -> None:
    plugins = as_user(client, token, "admin").get("/api/v2/plugins").json()["plugins"]
    (plugin,) = [p for p in plugins if p["name"] == "blockchain_requests"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == PREFIX
    (view,) = plugin["external_views"]
    assert view["name"] == "Blockchain requests"
    assert view["url_route"] == "blockchain-requests"
    assert view["destination"] == "nav"
    assert "airflow-provider-blockchain" in plugin["source"]  # from the entry point, once
    errors = as_user(client, token, "admin").get("/api/v2/plugins/importErrors").json()["import_errors"]
    assert [e for e in errors if "blockchain" in e["source"] + e["error"]] == []


def test_the_page_and_its_files_need_a_signed_in_user(client: TestClient, token: Any) -> None:
    page = client.get(f"{PREFIX}/", follow_redirects=False)
    assert page.status_code in (302, 303, 307)
    assert "/auth/login" in page.headers["location"]
    for path in ("/static/app.js", "/api/kinds", "/api/requests", "/api/requests?kind=order"):
        assert client.get(PREFIX + path).status_code == 401, path
    # nothing is said of the kinds before sign-in, not even that one is unknown
    for path in ("/api/requests?kind=quote", f"/api/requests/quote/{rid(1)}"):
        assert client.get(PREFIX + path).status_code == 401, path
    assert client.post(f"{PREFIX}/api/sync/quote", json={}).status_code == 401
    assert client.post(f"{PREFIX}/api/sync/partner", json={}).status_code == 401
    assert (
        client.post(f"{PREFIX}/api/requests/partner/{rid(1)}/answer", json={"decision": "accept"}).status_code
        == 401
    )
    client.cookies.set("_token", "not-a-jwt")
    assert client.get(f"{PREFIX}/api/requests").status_code in (401, 403)

    ok = as_user(client, token, "reader")
    page = ok.get(f"{PREFIX}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert ok.get(f"{PREFIX}/static/app.js").headers["content-type"].startswith("text/javascript")
    assert ok.get(f"{PREFIX}/static/../app.py").status_code == 404
    assert ok.get(f"{PREFIX}/static/index.py").status_code == 404


def test_the_script_never_renders_text_as_markup() -> None:
    script = (STATIC / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    html = (STATIC / "index.html").read_text()
    assert "<script>" not in html and "onclick=" not in html  # no inline script for the CSP to allow


# ------------------------------------------------------------------------------ listing


def test_partner_requests_newest_first_filtered_and_paged(client: TestClient, token: Any, mes: Any) -> None:
    mes.upsert_partner_requests(
        [partner(n) for n in range(1, 6)]
        + [partner(6, "ACCEPTED"), partner(7, "REJECTED"), partner(8, to=OTHER_AGENT)]
    )
    admin = as_user(client, token, "admin")
    body = admin.get(f"{PREFIX}/api/requests", params={"kind": "partner", "page_size": 3}).json()
    assert body["total"] == 8
    assert [item["id"] for item in body["items"]] == [rid(8), rid(7), rid(6)]
    assert body["mes_agent"] == MES_AGENT
    assert body["can"] == {"answer": True, "sync": True}
    page3 = admin.get(f"{PREFIX}/api/requests", params={"page": 3, "page_size": 3}).json()
    assert [item["id"] for item in page3["items"]] == [rid(2), rid(1)]

    open_only = admin.get(f"{PREFIX}/api/requests", params={"status": "OPEN"}).json()
    assert open_only["total"] == 6
    by_id = {item["id"]: item for item in open_only["items"]}
    assert by_id[rid(1)]["can_answer"] is True
    assert by_id[rid(1)]["issuing_agent"] == OTHER_AGENT
    assert by_id[rid(1)]["received_at"].startswith(time.strftime("%Y-", time.gmtime(NOW - 3600)))
    assert by_id[rid(1)]["answered_at"] is None
    assert by_id[rid(8)]["addressed_to_us"] is False and by_id[rid(8)]["can_answer"] is False
    accepted = admin.get(f"{PREFIX}/api/requests", params={"status": "ACCEPTED"}).json()["items"]
    assert [(i["id"], i["can_answer"], i["answered_at"] is not None) for i in accepted] == [
        (rid(6), False, True)
    ]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"status": "PENDING"}, "PENDING"),
        ({"kind": "action"}, "kind"),
        ({"page": 0}, "page"),
        ({"page_size": 101}, "page_size"),
        ({"page_size": "ten"}, "page_size"),
    ],
)
def test_bad_filters_are_refused_naming_the_input(
    client: TestClient, token: Any, mes: Any, params: dict[str, Any], named: str
) -> None:
    response = as_user(client, token, "reader").get(f"{PREFIX}/api/requests", params=params)
    assert response.status_code == 422
    assert named in response.text


def test_order_rows_carry_ledger_text_as_plain_data(client: TestClient, token: Any, mes: Any) -> None:
    markup = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    mes.upsert_order_requests(
        [
            {
                "abs_action_id": rid(40),
                "type": "<b>Purchase</b>",
                "description": markup,
                "metadata": {"note": "</script><script>alert(3)</script>", "qty": 4},
                "files": [{"name": "a.pdf"}],
                "issuing_agent": OTHER_AGENT,
                "receiving_agent": MES_AGENT,
                "status": "OPEN",
                "timestamp": NOW,
            }
        ]
    )
    response = as_user(client, token, "reader").get(f"{PREFIX}/api/requests", params={"kind": "order"})
    assert response.headers["content-type"] == "application/json"
    (item,) = response.json()["items"]
    # the order's own columns, as the MES's stored kind names them
    assert response.json()["columns"] == ["type", "description", "metadata"]
    fields = item["fields"]
    assert fields["description"] == markup
    assert fields["type"] == "<b>Purchase</b>"
    assert fields["metadata"] == {"note": "</script><script>alert(3)</script>", "qty": 4}
    assert "files" not in fields  # an attribute the store does not name is not shown
    # a viewer sees the request but no answer button, and neither sync nor runs
    assert item["can_answer"] is False
    assert response.json()["can"] == {"answer": False, "sync": False}


# ------------------------------------------------------------------------------ answering


def test_a_user_who_may_not_trigger_cannot_answer(client: TestClient, token: Any, mes: Any) -> None:
    mes.upsert_partner_requests([partner(1)])
    reader = as_user(client, token, "reader")
    response = reader.post(f"{PREFIX}/api/requests/partner/{rid(1)}/answer", json={"decision": "reject"})
    assert response.status_code == 403
    assert "blockchain_partner_answer" in response.json()["detail"]
    assert reader.post(f"{PREFIX}/api/sync/partner", json={}).status_code == 403
    assert dag_runs("blockchain_partner_answer") == [] and dag_runs("blockchain_partner_sync") == []


@pytest.mark.parametrize(
    ("request_id", "body", "named"),
    [
        (rid(1), {"decision": "maybe"}, "decision"),
        (rid(1), {"decision": "ACCEPT"}, "decision"),
        ("0" * 31 + "G", {"decision": "accept"}, "request_id"),
        ("abc", {"decision": "accept"}, "request_id"),
        (rid(1), {"decision": "accept", "request_id": rid(2)}, "request_id"),
        (rid(1), {}, "decision"),
    ],
)
def test_answers_are_validated_as_the_dag_params_are(
    client: TestClient, token: Any, mes: Any, request_id: str, body: dict[str, Any], named: str
) -> None:
    mes.upsert_partner_requests([partner(1)])
    response = as_user(client, token, "admin").post(
        f"{PREFIX}/api/requests/partner/{request_id}/answer", json=body
    )
    assert response.status_code == 422, response.text
    assert named in response.text
    assert dag_runs("blockchain_partner_answer") == []


def test_only_open_requests_addressed_to_this_mes_are_answered(
    client: TestClient, token: Any, mes: Any
) -> None:
    mes.upsert_partner_requests([partner(1, "ACCEPTED"), partner(2, to=OTHER_AGENT)])
    admin = as_user(client, token, "admin")
    cases = {rid(1): (409, "ACCEPTED"), rid(2): (409, "not addressed"), rid(3): (404, rid(3))}
    for request_id, (code, text) in cases.items():
        response = admin.post(
            f"{PREFIX}/api/requests/partner/{request_id}/answer", json={"decision": "accept"}
        )
        assert response.status_code == code, response.text
        assert text in response.json()["detail"]
    assert dag_runs("blockchain_partner_answer") == []


def test_an_answer_triggers_the_dag_as_the_signed_in_user(client: TestClient, token: Any, mes: Any) -> None:
    mes.upsert_partner_requests([partner(1), partner(2)])
    worker = as_user(client, token, "worker")  # role "user": may trigger DAGs
    response = worker.post(f"{PREFIX}/api/requests/partner/{rid(1)}/answer", json={"decision": "reject"})
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["dag_id"] == "blockchain_partner_answer"
    assert (
        run["url"]
        == f"dags/blockchain_partner_answer/runs/{run['run_id'].replace(':', '%3A').replace('+', '%2B')}"
    )
    (stored,) = dag_runs("blockchain_partner_answer")
    assert stored.run_id == run["run_id"]
    assert stored.conf == {"request_id": rid(1), "decision": "reject"}
    assert stored.triggering_user_name == "worker"

    # the row shows the run; while it is queued, no second answer
    items = {i["id"]: i for i in worker.get(f"{PREFIX}/api/requests").json()["items"]}
    assert items[rid(1)]["run"]["run_id"] == run["run_id"]
    assert items[rid(1)]["run"]["state"] == "queued"
    assert items[rid(2)]["run"] is None
    again = worker.post(f"{PREFIX}/api/requests/partner/{rid(1)}/answer", json={"decision": "accept"})
    assert again.status_code == 409 and "being answered" in again.json()["detail"]

    # once the run has ended, the row shows its final state
    finish_runs("blockchain_partner_answer", "success")
    items = {i["id"]: i for i in worker.get(f"{PREFIX}/api/requests").json()["items"]}
    assert items[rid(1)]["run"]["state"] == "success"


def test_the_forwarded_token_is_the_callers_own(
    client: TestClient, token: Any, mes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow's REST API sees the caller's JWT (from the cookie or the Authorization header)."""
    from blockchain_provider.ui import airflow_api

    seen: list[str] = []
    real = airflow_api.api_client_factory

    def recording(request: Any) -> TestClient:
        inner = real(request)
        inner.event_hooks["request"].append(lambda r: seen.append(r.headers["authorization"]))
        return inner

    monkeypatch.setattr(airflow_api, "api_client_factory", recording)
    mes.upsert_partner_requests([partner(1)])
    client.cookies.clear()
    jwt = token("operator")
    response = client.post(
        f"{PREFIX}/api/requests/partner/{rid(1)}/answer",
        json={"decision": "accept"},
        headers={"Authorization": f"Bearer {jwt}"},
    )
    assert response.status_code == 201, response.text
    assert seen == [f"Bearer {jwt}"]
    assert dag_runs("blockchain_partner_answer")[0].triggering_user_name == "operator"


# ------------------------------------------------------------------------------ syncing


def test_sync_now_and_the_last_successful_sync(client: TestClient, token: Any, mes: Any) -> None:
    admin = as_user(client, token, "admin")
    body = admin.get(f"{PREFIX}/api/requests", params={"kind": "order"}).json()
    assert body["sync"] == {"last_success": None, "latest": None}

    response = admin.post(f"{PREFIX}/api/sync/order", json={})
    assert response.status_code == 201, response.text
    run_id = response.json()["run_id"]
    (stored,) = dag_runs("blockchain_order_sync")
    assert stored.run_id == run_id and stored.triggering_user_name == "admin"
    sync = admin.get(f"{PREFIX}/api/requests", params={"kind": "order"}).json()["sync"]
    assert sync["latest"]["run_id"] == run_id and sync["latest"]["state"] == "queued"
    assert sync["last_success"] is None

    finish_runs("blockchain_order_sync", "success")
    sync = admin.get(f"{PREFIX}/api/requests", params={"kind": "order"}).json()["sync"]
    assert sync["last_success"]["run_id"] == run_id
    assert re.match(r"\d{4}-\d\d-\d\dT", sync["last_success"]["end_date"])
    # the partner sync is another DAG
    assert admin.get(f"{PREFIX}/api/requests").json()["sync"]["last_success"] is None


def test_one_request_whatever_its_status(client: TestClient, token: Any, mes: Any) -> None:
    """The page follows a row it answered after it has left the filter (OPEN -> REJECTED)."""
    mes.upsert_partner_requests([partner(1, "REJECTED")])
    reader = as_user(client, token, "reader")
    item = reader.get(f"{PREFIX}/api/requests/partner/{rid(1)}").json()
    assert (item["id"], item["status"], item["can_answer"]) == (rid(1), "REJECTED", False)
    assert reader.get(f"{PREFIX}/api/requests/partner/{rid(2)}").status_code == 404
    bad = reader.get(f"{PREFIX}/api/requests/partner/{'AB' * 16}")
    assert bad.status_code == 422 and "request id" in bad.json()["detail"]
    assert reader.get(f"{PREFIX}/api/requests/action/{rid(1)}").status_code == 422
    client.cookies.clear()
    assert client.get(f"{PREFIX}/api/requests/partner/{rid(1)}").status_code == 401


def test_a_deployment_without_a_request_store_is_told_what_to_set(
    client: TestClient, token: Any, mes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider reads stored requests only through the store the configuration names."""
    from blockchain_provider.ui import api as ui_app

    mes.upsert_partner_requests([partner(1)])
    reader = as_user(client, token, "reader")
    monkeypatch.delenv("AIRFLOW__BLOCKCHAIN__REQUEST_STORE")
    ui_app.reset_caches()
    for path in (f"{PREFIX}/api/requests", f"{PREFIX}/api/requests/partner/{rid(1)}"):
        response = reader.get(path)
        assert response.status_code == 503
        assert "[blockchain] request_store" in response.json()["detail"]
    monkeypatch.setenv("AIRFLOW__BLOCKCHAIN__REQUEST_STORE", "include.mes.request_store.MesRequestStore")
    ui_app.reset_caches()
    assert reader.get(f"{PREFIX}/api/requests").json()["total"] == 1


def test_who_may_read_no_request_dag_gets_neither_page_nor_data(
    client: TestClient, token: Any, mes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An auth manager that denies the four DAGs (a FAB role without them, say) is obeyed."""
    from airflow.api_fastapi.app import get_auth_manager

    manager = get_auth_manager()
    real = manager.is_authorized_dag
    asked: list[tuple[str, str]] = []

    def deny_request_dags(*, method: str, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        asked.append((method, details.id))
        if details is not None and details.id in {
            "blockchain_partner_sync",
            "blockchain_partner_answer",
            "blockchain_order_sync",
            "blockchain_order_answer",
        }:
            return False
        return real(method=method, user=user, access_entity=access_entity, details=details)

    monkeypatch.setattr(manager, "is_authorized_dag", deny_request_dags)
    mes.upsert_partner_requests([partner(1)])
    admin = as_user(client, token, "admin")
    assert admin.get(f"{PREFIX}/").status_code == 403
    for kind in ("partner", "order"):
        assert admin.get(f"{PREFIX}/api/requests", params={"kind": kind}).status_code == 403
        assert admin.post(f"{PREFIX}/api/sync/{kind}", json={}).status_code == 403
    assert admin.get(f"{PREFIX}/api/requests/partner/{rid(1)}").status_code == 403
    assert (
        admin.post(f"{PREFIX}/api/requests/partner/{rid(1)}/answer", json={"decision": "accept"}).status_code
        == 403
    )
    assert ("POST", "blockchain_partner_answer") in asked and ("GET", "blockchain_order_sync") in asked
    assert dag_runs("blockchain_partner_answer") == []


def test_posts_must_be_json_so_another_site_cannot_forge_them(
    client: TestClient, token: Any, mes: Any
) -> None:
    """A cross-site form post carries the cookie but cannot be JSON without a CORS preflight."""
    mes.upsert_partner_requests([partner(1)])
    admin = as_user(client, token, "admin")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert admin.post(f"{PREFIX}/api/sync/partner", content=b"", headers=form).status_code == 415
    answer = admin.post(
        f"{PREFIX}/api/requests/partner/{rid(1)}/answer", content=b"decision=accept", headers=form
    )
    assert answer.status_code == 415
    plain = admin.post(
        f"{PREFIX}/api/requests/partner/{rid(1)}/answer",
        content=b'{"decision": "accept"}',
        headers={"Content-Type": "text/plain"},
    )
    assert plain.status_code == 415
    assert dag_runs("blockchain_partner_sync") == [] and dag_runs("blockchain_partner_answer") == []
    preflight = admin.options(
        f"{PREFIX}/api/sync/partner",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_a_third_kind_is_listed_with_its_own_columns(
    client: TestClient, token: Any, mes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kind the deployment declares (tests/third_kind.py) is on the page: its name and label
    from the API, its own columns from the MES's model of it."""
    from tests.third_kind import use_quote_kind

    reader = as_user(client, token, "reader")
    assert reader.get(f"{PREFIX}/api/requests", params={"kind": "quote"}).status_code == 422
    use_quote_kind(monkeypatch, mes.engine)
    item = {**partner(7), "quote_request_id": rid(7), "product": "<b>Wheel</b>"}
    del item["partner_request_id"]
    assert mes.upsert_requests("quote", [item]).inserted == 1
    assert reader.get(f"{PREFIX}/api/kinds").json() == [
        {"name": "partner", "label": "partner request"},
        {"name": "order", "label": "order request"},
        {"name": "quote", "label": "quote request"},
    ]
    page = reader.get(f"{PREFIX}/api/requests", params={"kind": "quote"}).json()
    assert (page["kind"], page["total"], page["columns"]) == ("quote", 1, ["product"])
    (row,) = page["items"]
    assert (row["id"], row["status"], row["fields"]) == (rid(7), "OPEN", {"product": "<b>Wheel</b>"})
    assert row["addressed_to_us"] is True
    assert reader.get(f"{PREFIX}/api/requests/quote/{rid(7)}").json()["fields"] == {"product": "<b>Wheel</b>"}


def test_a_broken_kinds_option_answers_503_naming_it(
    client: TestClient, token: Any, mes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__BLOCKCHAIN__REQUEST_KINDS", "tests.no_such_module.QUOTE")
    reader = as_user(client, token, "reader")
    for path in ("/api/kinds", "/api/requests?kind=partner"):
        response = reader.get(PREFIX + path)
        assert response.status_code == 503, path
        assert "[blockchain] request_kinds" in response.json()["detail"]
