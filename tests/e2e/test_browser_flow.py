"""The operator's flow in a real browser, against the stack of ``make run``.

Log in, open ``blockchain_partner_answer``, trigger it from its Params form with an OPEN partner
request and ``reject``, wait for the run to succeed, and see the request REJECTED on the ledger.
Screenshots of the filled form and of the finished run go to ``test-artifacts/``.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` package
(requirements-dev.txt); Playwright's own browser download is not used.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from playwright import sync_api

from tests.conftest import needs, unavailable, wait_until
from tests.e2e.conftest import ROOT, RunningStack

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts"))
DAG_ID = "blockchain_partner_answer"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.broker,
    pytest.mark.tansu,  # make run's own stack on its embedded broker
    pytest.mark.timeout(900),
]
# the UI is slow to render on a loaded machine: wait as long as for any other page action
sync_api.expect.set_options(timeout=60_000)


@pytest.fixture(scope="module", autouse=True)
@needs("browser")
def chromium() -> str:
    """Debian's Chromium, checked before any stack starts; missing, it skips the test (fails on CI)."""
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        unavailable(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context; a screenshot of the page is saved when the test fails."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    page = context.new_page()
    try:
        yield page
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            save(page, f"{request.node.name}-failure.png")
        context.close()


def save(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def open_partner_request(stack: RunningStack) -> str:
    """An OPEN partner request addressed to the MES: a seeded one, or a new one from an ERP."""
    open_ids = [item["partner_request_id"] for item in stack.partner_requests() if item["status"] == "OPEN"]
    if open_ids:
        return open_ids[0]
    return stack.sandbox("erp", "partner-request", "--to", stack.state["mes_public_key"])


def log_in(page: Any, stack: RunningStack) -> None:
    page.goto(stack.url)
    page.wait_for_url(re.compile(r"/auth/login"))
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", stack.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)


def test_operator_rejects_a_partner_request(running_stack: RunningStack, page: Any) -> None:
    stack = running_stack
    expect = sync_api.expect
    request_id = open_partner_request(stack)

    # 1. log in
    log_in(page, stack)

    # 2. open the DAG from the DAG list
    page.goto(f"{stack.url}/dags")
    page.get_by_role("link", name=DAG_ID, exact=True).click()
    page.wait_for_url(re.compile(rf"/dags/{DAG_ID}$"))
    # the list has a trigger button per DAG; the DAG's page has one
    trigger = page.get_by_test_id("trigger-dag-button")
    expect(trigger).to_have_count(1)

    # 3. trigger it from its Params form
    trigger.click()
    form = page.get_by_role("dialog")
    expect(form).to_contain_text(f"Trigger Dag - {DAG_ID}")
    form.locator("input[name=element_request_id]").fill(request_id)
    form.get_by_role("combobox").click()
    page.get_by_role("option", name="reject", exact=True).click()
    expect(form.locator("input[name=element_decision]")).to_have_value("reject")
    submit = form.get_by_test_id("trigger-dag-submit")
    expect(submit).to_be_enabled()
    save(page, "partner_answer_form.png")
    submit.click()

    # 4. the UI opens the new run; wait until it has succeeded
    page.wait_for_url(re.compile(rf"/dags/{DAG_ID}/runs/[^/]+$"))
    run_id = unquote(page.url.rsplit("/runs/", 1)[1])
    run = stack.wait_for_run(DAG_ID, run_id)
    assert run["state"] == "success", stack.task_states(DAG_ID, run_id)
    assert run["conf"] == {"request_id": request_id, "decision": "reject"}
    page.reload()
    expect(page.get_by_text(run_id, exact=True).first).to_be_visible()
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    states = stack.task_states(DAG_ID, run_id)
    assert set(states.values()) == {"success"}, states
    save(page, "partner_answer_run.png")

    # 5. the ledger has the answer
    assert wait_until(lambda: stack.partner_request_status(request_id) != "OPEN", timeout=30, interval=1)
    assert stack.partner_request_status(request_id) == "REJECTED"
