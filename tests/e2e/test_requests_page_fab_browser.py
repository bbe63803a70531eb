"""The "Blockchain requests" page in Chromium under the FAB auth manager (``docker-compose.yaml``).

A real ``airflow api-server`` with FAB (:mod:`tests.ui.fab_server`), no scheduler: an answer's
run is created and stays queued. An Op user signs in through FAB's login form, opens the page
from the UI's navigation, rejects a request with its confirmation and sees the run; a Viewer
signs in, lands on the page itself and sees the requests without any button.
Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.e2e.test_browser_flow import (  # noqa: F401 - fixtures
    browser,
    chromium,
    page,
    save,
    sync_api,
)
from tests.ui.conftest import MES_AGENT, OTHER_AGENT
from tests.ui.fab_server import FabApiServer, password

ANSWER_DAG = "blockchain_partner_answer"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.airflow_db,
    pytest.mark.timeout(600),
]


@pytest.fixture(scope="module")
def server(fab_server: FabApiServer) -> FabApiServer:
    return fab_server


def open_partner_request(mes: Any, n: int) -> str:
    request_id = f"{0xFAB0B:08x}{n:024x}"
    mes.upsert_partner_requests(
        [
            {
                "partner_request_id": request_id,
                "issuing_agent": OTHER_AGENT,
                "receiving_agent": MES_AGENT,
                "status": "OPEN",
                "timestamp": int(time.time()) - 60 + n,
                "answer_timestamp": 0,
                "transaction_ids": [],
            }
        ]
    )
    return request_id


def sign_in_with_fab(tab: Any, server: FabApiServer, username: str, url: str) -> None:
    """Open *url*; FAB's login form comes first, then its redirect back to *url*."""
    tab.goto(url)
    tab.wait_for_url(re.compile(r"/auth/login/"))
    tab.fill("input[name=username]", username)
    tab.fill("input[name=password]", password(username))
    tab.click("input[type=submit]")
    tab.wait_for_url(lambda current: "/auth/login" not in current)


def test_an_op_user_rejects_from_the_page_signed_in_through_fab(
    server: FabApiServer,
    fab_mes: Any,
    page: Any,  # noqa: F811 - the fixture imported above
) -> None:
    expect = sync_api.expect
    request_id = open_partner_request(fab_mes, 1)

    sign_in_with_fab(page, server, "operator", server.base_url + "/")
    page.get_by_role("link", name="Blockchain requests").click()
    page.wait_for_url(re.compile(r"/plugin/blockchain-requests"))
    frame = page.frame_locator("iframe[title='Blockchain requests']")
    expect(frame.locator("body[data-loaded=true]")).to_have_count(1)
    expect(frame.get_by_test_id("sync-now")).to_be_visible()

    frame.get_by_test_id("status-filter").select_option("OPEN")
    expect(frame.locator("body[data-view='partner:OPEN:1']")).to_have_count(1)
    row = frame.locator(f"tr[data-request-id='{request_id}']")
    expect(row.get_by_role("button", name="Accept")).to_be_visible()
    row.get_by_role("button", name="Reject").click()
    dialog = frame.get_by_role("dialog")
    expect(dialog).to_contain_text(request_id)
    dialog.get_by_role("button", name="Reject").click()
    expect(dialog).to_be_hidden()
    run_link = row.get_by_test_id("run-link")
    expect(run_link).to_have_text("queued")  # no scheduler here: the run waits
    expect(row.get_by_role("button", name="Reject")).to_have_count(0)
    save(page, "requests_page_fab_op.png")

    run_id = run_link.get_attribute("title").split(" ", 1)[1]
    (run,) = [r for r in server.dag_runs(ANSWER_DAG) if r["dag_run_id"] == run_id]
    assert run["conf"] == {"request_id": request_id, "decision": "reject"}
    assert run["triggering_user_name"] == "operator"


def test_a_viewer_signed_in_through_fab_sees_no_buttons(
    server: FabApiServer,
    fab_mes: Any,
    page: Any,  # noqa: F811
) -> None:
    expect = sync_api.expect
    request_id = open_partner_request(fab_mes, 2)
    answers = len(server.dag_runs(ANSWER_DAG))

    # the page's own address (by FAB's default, Viewer may not list plugins: no navigation entry)
    sign_in_with_fab(page, server, "reader", f"{server.base_url}/blockchain-requests/")
    assert page.url == f"{server.base_url}/blockchain-requests/"
    expect(page.locator("body[data-loaded=true]")).to_have_count(1)
    row = page.locator(f"tr[data-request-id='{request_id}']")
    expect(row.locator(".status")).to_have_text("OPEN")
    expect(row.get_by_role("button")).to_have_count(0)
    expect(page.get_by_test_id("sync-now")).to_be_hidden()
    save(page, "requests_page_fab_viewer.png")
    assert len(server.dag_runs(ANSWER_DAG)) == answers
