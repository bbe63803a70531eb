"""The two DAG shapes that exist twice: a periodic sync and a manual answer, for partner and order
requests alike. Each DAG file names its kind and documents itself."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Asset, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException

from blockchain_common import REQUEST_POOL, START_DATE, TAGS, default_args, flows, gateway, mes
from blockchain_provider.exceptions import BlockchainError
from blockchain_provider.notifications import send_alert
from blockchain_provider.protocol import REQUEST_ID_PATTERN

log = logging.getLogger(__name__)

#: Asset events emitted when a sync sees OPEN requests for the first time; other DAGs may
#: schedule on them (e.g. to open a ticket, or to auto-answer from a rule).
NEW_OPEN_REQUESTS = {
    "partner": Asset(
        name="blockchain_new_open_partner_requests", uri="blockchain://mes/partner_requests/open"
    ),
    "order": Asset(name="blockchain_new_open_order_requests", uri="blockchain://mes/order_requests/open"),
}


def sync_dag(kind: flows.RequestKind, doc_md: str) -> Any:
    """Every 15 minutes: read every page of *kind* requests, upsert them, announce new OPEN ones."""

    @dag(
        dag_id=f"blockchain_{kind}_sync",
        schedule="*/15 * * * *",
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(),
        tags=[*TAGS, "erp", "sync"],
        doc_md=doc_md,
    )
    def sync() -> None:
        @task(task_id=f"sync_{kind}_requests", pool=REQUEST_POOL)
        def sync_requests() -> dict[str, Any]:
            """Read every page from the ledger and upsert into the MES."""
            with gateway() as hook:
                result = flows.sync_requests(hook, mes(), kind)
            # ledger items are permanent: a bad one is set aside and alerted once, not retried forever
            flows.alert_rejected_items(kind, result.new_rejected)
            return {
                "total": result.total,
                "inserted": result.inserted,
                "updated": result.updated,
                "unchanged": result.unchanged,
                "rejected": result.rejected,
                "new_open_count": len(result.new_open),
                "new_open_summary": flows.describe_open_requests(kind, result.new_open)
                if result.new_open
                else "",
            }

        @task.short_circuit(task_id="any_new_open")
        def any_new_open(result: dict[str, Any]) -> bool:
            """Continue only when OPEN requests were seen for the first time."""
            return result["new_open_count"] > 0

        @task(task_id=f"announce_new_open_{kind}_requests", outlets=[NEW_OPEN_REQUESTS[kind]])
        def announce(result: dict[str, Any], **context: Any) -> None:
            """Log and send the summary, and emit the asset event (with the count) for other DAGs."""
            summary = result["new_open_summary"]
            log.info("%s", summary)
            send_alert(summary, context)
            context["outlet_events"][NEW_OPEN_REQUESTS[kind]].extra = {"count": result["new_open_count"]}

        result = sync_requests()
        any_new_open(result) >> announce(result)

    return sync()


def answer_dag(kind: flows.RequestKind, doc_md: str) -> Any:
    """Manual: accept or reject one *kind* request, after checking it can be answered."""
    title = "Partner request id" if kind == "partner" else "Order request id (abs_action_id)"

    @dag(
        dag_id=f"blockchain_{kind}_answer",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        default_args=default_args(),
        tags=[*TAGS, "erp", "manual"],
        doc_md=doc_md,
        params={
            "request_id": Param(
                type="string",
                pattern=REQUEST_ID_PATTERN,
                # JSON-schema "$" also matches before a final newline: the length closes that gap
                minLength=32,
                maxLength=32,
                title=title,
                description="32 lowercase hex characters, as listed by the sync DAG or the MES.",
            ),
            "decision": Param(
                type="string",
                enum=["accept", "reject"],
                title="Decision",
                description="accept or reject the request. An answer is final on the ledger.",
            ),
        },
        render_template_as_native_obj=True,
    )
    def answer() -> None:
        @task(task_id=f"check_{kind}_request", pool=REQUEST_POOL)
        def check(params: dict[str, Any]) -> dict[str, Any]:
            """The request must exist, be addressed to this MES and be OPEN; otherwise fail, send nothing."""
            with gateway() as hook:
                try:
                    item = flows.check_answerable(hook, kind, params["request_id"])
                except (LookupError, PermissionError, ValueError) as exc:
                    raise AirflowFailException(str(exc)) from None
            log.info("%s request %s is OPEN and addressed to us", kind.capitalize(), params["request_id"])
            return {"request_id": params["request_id"], "issuing_agent": item.get("issuing_agent")}

        @task(task_id=f"answer_{kind}_request", pool=REQUEST_POOL)
        def send_answer(checked: dict[str, Any], params: dict[str, Any], **context: Any) -> str:
            """Send the decision. Retry-safe: a retry reads the request's status first (our decision
            there: done; still OPEN: sent again; anything else: failed with the reason)."""
            retry = context["ti"].try_number > 1
            with gateway() as hook:
                try:
                    return flows.answer_request(
                        hook, kind, checked["request_id"], params["decision"] == "accept", retry=retry
                    )
                except LookupError as exc:
                    raise AirflowFailException(str(exc)) from None
                except ValueError as exc:
                    if isinstance(exc, BlockchainError):
                        raise
                    raise AirflowFailException(str(exc)) from None

        @task(task_id=f"refresh_mes_{kind}_request", pool=REQUEST_POOL)
        def refresh(checked: dict[str, Any]) -> str:
            """Store the request's new status in the MES."""
            with gateway() as hook:
                status = flows.refresh_request(hook, mes(), kind, checked["request_id"])
            log.info("%s request %s is now %s in the MES", kind.capitalize(), checked["request_id"], status)
            return status

        checked = check()
        send_answer(checked) >> refresh(checked)

    return answer()
