"""The "Blockchain requests" page in a real browser, against the stack of ``make run``.

Sign in, open the page from the UI's navigation, sync the partner requests now, filter to OPEN,
reject one request (with its confirmation), watch its answer run succeed and the row turn
REJECTED, follow the run's link to the grid view, and find the answer on the ledger.
Screenshots go to ``test-artifacts/``.

Needs Debian's ``chromium`` and the ``playwright`` package, as ``test_browser_flow.py``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import RunningStack
from tests.e2e.test_browser_flow import (  # noqa: F401 - fixtures
    ARTIFACTS,
    browser,
    chromium,
    log_in,
    open_partner_request,
    page,
    save,
    sync_api,
)

ANSWER_DAG = "blockchain_partner_answer"
#: a run waits for the scheduler, the pool and the gateway: minutes on a loaded machine
RUN_TIMEOUT_MS = 300_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.broker,
    pytest.mark.tansu,  # make run's own stack on its embedded broker, shared with test_browser_flow.py
    pytest.mark.timeout(900),
]


def test_operator_rejects_a_partner_request_from_the_requests_page(
    running_stack: RunningStack,
    page: Any,  # noqa: F811 - the fixture imported above
) -> None:
    stack = running_stack
    expect = sync_api.expect
    request_id = open_partner_request(stack)

    # 1. sign in; the page is in the UI's navigation, shown in a frame
    log_in(page, stack)
    page.get_by_role("link", name="Blockchain requests").click()
    page.wait_for_url(re.compile(r"/plugin/blockchain-requests"))
    frame = page.frame_locator("iframe[title='Blockchain requests']")
    expect(frame.locator("body[data-loaded=true]")).to_have_count(1)
    expect(frame.get_by_role("heading", name="Blockchain requests")).to_be_visible()

    # 2. sync now, so the MES has the request; wait for the sync to have succeeded
    frame.get_by_test_id("sync-now").click()
    message = frame.get_by_role("alert")
    expect(message).to_contain_text("Sync started: run ")
    sync_run_id = re.search(r"run (\S+) of blockchain_partner_sync", message.inner_text()).group(1)
    last_sync = frame.get_by_test_id("last-sync")
    expect(last_sync.get_by_test_id("run-link")).to_have_attribute(
        "title", f"blockchain_partner_sync {sync_run_id}", timeout=RUN_TIMEOUT_MS
    )
    expect(last_sync).to_have_text(re.compile(r"Last successful sync: \d{4}-\d\d-\d\d \d\d:\d\d UTC"))

    # 3. filter to OPEN: only OPEN rows, ours among them with its buttons
    frame.get_by_test_id("status-filter").select_option("OPEN")
    expect(frame.locator("body[data-view='partner:OPEN:1']")).to_have_count(1)
    row = frame.locator(f"tr[data-request-id='{request_id}']")
    expect(row).to_be_visible()
    statuses = frame.locator("#rows tr[data-status]")
    expect(statuses.first).to_be_visible()
    assert set(statuses.evaluate_all("rows => rows.map(r => r.dataset.status)")) == {"OPEN"}
    agent = row.locator("td.agent")
    assert len(agent.inner_text()) < 20
    assert len(agent.get_attribute("title")) == 66  # the full public key on hover

    # 4. reject, confirmed
    row.get_by_role("button", name="Reject").click()
    dialog = frame.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(request_id)
    save(page, "requests_page_confirm.png")
    dialog.get_by_role("button", name="Reject").click()
    expect(dialog).to_be_hidden()
    run_link = row.get_by_test_id("run-link")
    expect(run_link).to_be_visible()
    expect(row.get_by_role("button", name="Reject")).to_have_count(0)

    # 5. the run succeeds and the row turns REJECTED (still shown though it left the filter)
    expect(row.locator(".status")).to_have_text("REJECTED", timeout=RUN_TIMEOUT_MS)
    expect(run_link).to_have_text("success", timeout=RUN_TIMEOUT_MS)
    save(page, "requests_page_rejected.png")
    run_id = run_link.get_attribute("title").split(" ", 1)[1]
    run = stack.api(f"/dags/{ANSWER_DAG}/dagRuns/{quote(run_id, safe='')}")
    assert run["state"] == "success", stack.task_states(ANSWER_DAG, run_id)
    assert run["conf"] == {"request_id": request_id, "decision": "reject"}
    assert run["triggering_user_name"] == "admin"

    # 6. the ledger has the answer
    assert wait_until(lambda: stack.partner_request_status(request_id) != "OPEN", timeout=30, interval=1)
    assert stack.partner_request_status(request_id) == "REJECTED"

    # 7. all partner requests, for the record; then the run's link opens it in the grid view
    frame.get_by_test_id("status-filter").select_option("")
    expect(frame.locator("body[data-view='partner::1']")).to_have_count(1)
    expect(frame.locator(f"tr[data-request-id='{request_id}'] .status")).to_have_text("REJECTED")
    save(page, "requests_page.png")
    frame.get_by_test_id("kind-filter").select_option("order")
    expect(frame.locator("body[data-view='order::1']")).to_have_count(1)
    expect(frame.get_by_role("columnheader", name="Metadata")).to_be_visible()
    # the page's part of the window, as the README shows it
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(
        path=str(ARTIFACTS / "requests_page_orders.png"), clip={"x": 0, "y": 0, "width": 1400, "height": 440}
    )
    frame.get_by_test_id("kind-filter").select_option("partner")
    expect(frame.locator("body[data-view='partner::1']")).to_have_count(1)
    frame.locator(f"tr[data-request-id='{request_id}']").get_by_test_id("run-link").click()
    page.wait_for_url(re.compile(rf"/dags/{ANSWER_DAG}/runs/"))
    assert quote(run_id, safe="") in page.url or run_id in page.url
    expect(page.get_by_text(run_id, exact=True).first).to_be_visible()
    expect(page.get_by_text("refresh_mes_partner_request").first).to_be_visible()
    save(page, "requests_page_run.png")


def test_ledger_text_is_shown_as_text(running_stack: RunningStack, page: Any) -> None:  # noqa: F811
    """An order whose description, type and metadata are markup: shown as written, nothing runs."""
    import json
    import subprocess

    from gateway_sandbox.erp import DEMO_AGENTS

    stack = running_stack
    expect = sync_api.expect
    payload = '<img src=x onerror="window.__xss=1;top.__xss=1"><script>top.__xss=2</script>'
    metadata = {"note": "</code><b onmouseover=top.__xss=3>bold</b>", "qty": 1}
    order_id = None
    for name in DEMO_AGENTS:  # the demo ERP agents the MES has accepted as partners may order
        try:
            order_id = stack.sandbox(
                "erp",
                "order",
                "--to",
                stack.state["mes_public_key"],
                "--type",
                "<i>rework</i>",
                "--description",
                payload,
                "--metadata",
                json.dumps(metadata),
                "--name",
                name,  # the sandbox's ERP password: from its environment, or kept beside the ledger
            )
            break
        except subprocess.CalledProcessError:
            continue
    assert isinstance(order_id, str) and re.fullmatch(r"[0-9a-f]{32}", order_id), order_id

    log_in(page, stack)
    page.goto(f"{stack.url}/plugin/blockchain-requests")
    frame = page.frame_locator("iframe[title='Blockchain requests']")
    expect(frame.locator("body[data-loaded=true]")).to_have_count(1)
    frame.get_by_test_id("kind-filter").select_option("order")
    expect(frame.locator("body[data-view='order::1']")).to_have_count(1)
    frame.get_by_test_id("sync-now").click()
    row = frame.locator(f"tr[data-request-id='{order_id}']")
    expect(row).to_be_visible(timeout=RUN_TIMEOUT_MS)

    expect(row.locator("td.description")).to_have_text(payload)
    expect(row.locator("td.metadata code")).to_have_text(json.dumps(metadata, separators=(",", ":")))
    expect(row.locator("td").nth(5)).to_have_text("<i>rework</i>")
    assert row.locator("img, script, b, i").count() == 0
    row.locator("td.metadata").hover()
    inner = next(f for f in page.frames if "/blockchain-requests/" in f.url)
    # a control image of ours that fails to load as the payload's would: once its handler has run,
    # an injected one would have run too
    inner.evaluate(
        "() => { const img = document.createElement('img');"
        " img.onerror = () => { window.__control = 1; img.remove(); };"
        " img.src = 'x'; document.body.appendChild(img); }"
    )
    inner.wait_for_function("window.__control === 1")
    assert page.evaluate("window.__xss") is None
    assert inner.evaluate("window.__xss") is None
    save(page, "requests_page_markup.png")
