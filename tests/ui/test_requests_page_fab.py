"""The "Blockchain requests" page under the FAB auth manager, the one ``docker-compose.yaml`` selects.

A real ``airflow api-server`` process (:mod:`tests.ui.fab_server`) with FAB's tables, roles and
users; users sign in through FAB (its token endpoint or its login form). Answers and syncs go
from the plugin to Airflow's REST API of that server over HTTP, as the signed-in user. Who sees
the Accept/Reject buttons is what the page's script reads: ``can`` and each row's ``can_answer``.
"""

from __future__ import annotations

import itertools
import re
import shlex
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import MES_AGENT, OTHER_AGENT
from tests.ui.fab_server import FabApiServer

pytestmark = [pytest.mark.airflow_db, pytest.mark.timeout(600)]

PREFIX = "/blockchain-requests"
INIT_SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "airflow-init.sh"
NOW = int(time.time())
#: request ids unique to each test: runs stay queued (no scheduler), and a queued answer blocks another
_ids = itertools.count(1)


def new_id() -> str:
    return f"{0xFAB:08x}{next(_ids):024x}"


@pytest.fixture(scope="module")
def server(fab_server: FabApiServer) -> FabApiServer:
    return fab_server


def open_partner_request(mes: Any) -> str:
    request_id = new_id()
    mes.upsert_partner_requests(
        [
            {
                "partner_request_id": request_id,
                "issuing_agent": OTHER_AGENT,
                "receiving_agent": MES_AGENT,
                "status": "OPEN",
                "timestamp": NOW,
                "answer_timestamp": 0,
                "transaction_ids": [],
            }
        ]
    )
    return request_id


def row(client: Any, request_id: str) -> dict[str, Any]:
    response = client.get(f"{PREFIX}/api/requests/partner/{request_id}")
    assert response.status_code == 200, response.text
    return response.json()


def answer(client: Any, request_id: str, decision: str = "reject") -> Any:
    return client.post(f"{PREFIX}/api/requests/partner/{request_id}/answer", json={"decision": decision})


# ------------------------------------------------------------------------------ who sees what


@pytest.mark.parametrize(
    ("username", "partner_can", "order_can"),
    [
        ("admin", {"answer": True, "sync": True}, {"answer": True, "sync": True}),
        ("operator", {"answer": True, "sync": True}, {"answer": True, "sync": True}),
        ("worker", {"answer": True, "sync": True}, {"answer": True, "sync": True}),
        ("reader", {"answer": False, "sync": False}, {"answer": False, "sync": False}),
        ("syncer", {"answer": False, "sync": True}, None),  # None: no access to the order DAGs
    ],
)
def test_the_buttons_follow_the_users_fab_role(
    server: FabApiServer,
    fab_mes: Any,
    username: str,
    partner_can: dict[str, bool],
    order_can: dict[str, bool] | None,
) -> None:
    request_id = open_partner_request(fab_mes)
    with server.client(username) as client:
        page = client.get(f"{PREFIX}/")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        body = client.get(f"{PREFIX}/api/requests", params={"kind": "partner", "status": "OPEN"}).json()
        assert body["can"] == partner_can
        (item,) = [i for i in body["items"] if i["id"] == request_id]
        assert item["can_answer"] is partner_can["answer"]
        orders = client.get(f"{PREFIX}/api/requests", params={"kind": "order"})
        if order_can is None:
            assert orders.status_code == 403
            assert "blockchain_order_sync" in orders.json()["detail"]
        else:
            assert orders.status_code == 200, orders.text
            assert orders.json()["can"] == order_can


def test_signing_in_through_fab_and_unknown_tokens(server: FabApiServer) -> None:
    with server.client() as anonymous:
        page = anonymous.get(f"{PREFIX}/", follow_redirects=False)
        # the page sends the browser to FAB's login form, and back
        assert page.status_code in (302, 303, 307)
        assert page.headers["location"].startswith(f"{server.base_url}/auth/login/?next=")
        assert anonymous.get(f"{PREFIX}/api/requests").status_code == 401
        assert anonymous.post(f"{PREFIX}/api/sync/partner", json={}).status_code == 401
        forged = anonymous.get(f"{PREFIX}/api/requests", headers={"Authorization": "Bearer not-a-jwt"})
        assert forged.status_code in (401, 403)
        wrong = anonymous.post("/auth/token", json={"username": "operator", "password": "wrong"})
        assert wrong.status_code in (400, 401, 403)
        assert "access_token" not in wrong.text


# ------------------------------------------------------------------------------ Admin, Op


@pytest.mark.parametrize("username", ["admin", "operator"])
def test_admin_and_op_answer_and_sync_as_themselves(
    server: FabApiServer, fab_mes: Any, username: str
) -> None:
    request_id = open_partner_request(fab_mes)
    with server.client(username) as client:
        response = answer(client, request_id)
        assert response.status_code == 201, response.text
        run_id = response.json()["run_id"]
        synced = client.post(f"{PREFIX}/api/sync/partner", json={})
        assert synced.status_code == 201, synced.text
        # the row shows the run, and no second answer while it is queued
        shown = row(client, request_id)
        assert shown["run"]["run_id"] == run_id and shown["run"]["state"] == "queued"
        again = answer(client, request_id, "accept")
        assert again.status_code == 409 and "being answered" in again.json()["detail"]

    (run,) = [r for r in server.dag_runs("blockchain_partner_answer") if r["dag_run_id"] == run_id]
    assert run["conf"] == {"request_id": request_id, "decision": "reject"}
    assert run["triggering_user_name"] == username
    (sync_run,) = [
        r for r in server.dag_runs("blockchain_partner_sync") if r["dag_run_id"] == synced.json()["run_id"]
    ]
    assert sync_run["triggering_user_name"] == username


def test_answers_are_validated_as_the_dag_params_are(server: FabApiServer, fab_mes: Any) -> None:
    request_id = open_partner_request(fab_mes)
    before = len(server.dag_runs("blockchain_partner_answer"))
    with server.client("operator") as client:
        bad = answer(client, request_id, "maybe")
        assert bad.status_code == 422 and "decision" in bad.text
        assert answer(client, "abc", "accept").status_code == 422
    assert len(server.dag_runs("blockchain_partner_answer")) == before


def test_signed_in_through_the_login_form_the_cookie_is_enough(server: FabApiServer, fab_mes: Any) -> None:
    """As in a browser: FAB's login form sets the ``_token`` cookie the page's requests carry."""
    request_id = open_partner_request(fab_mes)
    page_url = f"{server.base_url}{PREFIX}/"
    with closing(server.sign_in_with_form("operator", page_url)) as browser:
        assert "_token" in browser.cookies
        page = browser.get(f"{PREFIX}/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert row(browser, request_id)["can_answer"] is True
        response = answer(browser, request_id)
        assert response.status_code == 201, response.text
    (run,) = [
        r
        for r in server.dag_runs("blockchain_partner_answer")
        if r["dag_run_id"] == response.json()["run_id"]
    ]
    assert run["triggering_user_name"] == "operator"


# ------------------------------------------------------------------------------ Viewer, others


def test_a_viewer_gets_no_buttons_and_403_from_answer_and_sync(server: FabApiServer, fab_mes: Any) -> None:
    request_id = open_partner_request(fab_mes)
    answers = len(server.dag_runs("blockchain_partner_answer"))
    syncs = len(server.dag_runs("blockchain_partner_sync"))
    with server.client("reader") as reader:
        assert row(reader, request_id)["can_answer"] is False
        refused = answer(reader, request_id)
        assert refused.status_code == 403
        assert "blockchain_partner_answer" in refused.json()["detail"]
        assert reader.post(f"{PREFIX}/api/sync/partner", json={}).status_code == 403
        assert reader.post(f"{PREFIX}/api/sync/order", json={}).status_code == 403
    assert len(server.dag_runs("blockchain_partner_answer")) == answers
    assert len(server.dag_runs("blockchain_partner_sync")) == syncs


def test_a_user_without_the_answer_dag_cannot_answer(server: FabApiServer, fab_mes: Any) -> None:
    """A role with the partner sync DAG only: it syncs, but answers nothing, here or in Airflow."""
    request_id = open_partner_request(fab_mes)
    answers = len(server.dag_runs("blockchain_partner_answer"))
    with server.client("syncer") as syncer:
        shown = row(syncer, request_id)
        assert shown["can_answer"] is False
        assert shown["run"] is None  # the answer DAG's runs are not theirs to read
        refused = answer(syncer, request_id)
        assert refused.status_code == 403
        assert "blockchain_partner_answer" in refused.json()["detail"]
        # Airflow's own REST API agrees
        direct = syncer.post(
            "/api/v2/dags/blockchain_partner_answer/dagRuns",
            json={"logical_date": None, "conf": {"request_id": request_id, "decision": "reject"}},
        )
        assert direct.status_code == 403
        assert syncer.get(f"{PREFIX}/api/requests/order/{new_id()}").status_code == 403
        synced = syncer.post(f"{PREFIX}/api/sync/partner", json={})
        assert synced.status_code == 201, synced.text
    assert len(server.dag_runs("blockchain_partner_answer")) == answers
    (sync_run,) = [
        r for r in server.dag_runs("blockchain_partner_sync") if r["dag_run_id"] == synced.json()["run_id"]
    ]
    assert sync_run["triggering_user_name"] == "syncer"


def test_the_navigation_entry_needs_can_read_on_plugins(server: FabApiServer) -> None:
    """The UI finds the page's entry in ``GET /api/v2/plugins``: FAB grants that to Admin and Op,
    and to roles given ``can read on Plugins``, as the deployment's airflow-init gives User and
    Viewer."""

    def nav_entries(username: str) -> list[str] | int:
        with server.client(username) as client:
            response = client.get("/api/v2/plugins")
        if response.status_code != 200:
            return response.status_code
        return [
            view["name"]
            for plugin in response.json()["plugins"]
            for view in plugin["external_views"]
            if view["destination"] == "nav"
        ]

    for username in ("admin", "operator", "syncer"):
        assert nav_entries(username) == ["Blockchain requests"], username
    for username in ("worker", "reader"):
        assert nav_entries(username) == 403, username

    # the grant of docker/airflow-init.sh, run as it runs it (twice: it runs at every start)
    (command,) = re.findall(r"^\s*airflow (roles add-perms [^|\n]+)", INIT_SCRIPT.read_text(), re.M)
    for _ in range(2):
        server.airflow(*shlex.split(command))
    # new users of the two roles (a signed-in user's permissions are cached for a while)
    server.add_users({"worker2": "User", "reader2": "Viewer"})
    for username in ("worker2", "reader2"):
        assert nav_entries(username) == ["Blockchain requests"], username
        with server.client(username) as client:
            assert client.get(f"{PREFIX}/api/requests").json()["can"]["answer"] is (username == "worker2")
