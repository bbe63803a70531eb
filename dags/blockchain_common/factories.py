"""The two DAG shapes every request kind has: a periodic sync and a manual answer, for partner
requests, orders and any kind a deployment configures alike. Each DAG file names its kind and
documents itself; everything else comes from the kind's declaration (the provider's RequestKind,
the MES's StoredKind)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset, Param, dag, task

from blockchain_common import START_DATE, TAGS, default_args, gateway_args, mes_repository
from blockchain_provider.notifications import send_alert
from blockchain_provider.operators import AnswerRequestOperator, GetRequestOperator, ListRequestsOperator
from blockchain_provider.protocol import REQUEST_ID_PATTERN
from blockchain_provider.quoting import quote
from blockchain_provider.request_kinds import request_kind

log = logging.getLogger(__name__)


def new_open_requests(kind: str) -> Asset:
    """The asset a *kind* sync announces when it sees OPEN requests for the first time; other DAGs
    may schedule on it (e.g. to open a ticket, or to auto-answer from a rule)."""
    return Asset(name=f"blockchain_new_open_{kind}_requests", uri=f"blockchain://mes/{kind}_requests/open")


#: Items per list request of a sync (the gateway may answer fewer: only an empty page ends a list).
SYNC_PAGE_SIZE = 500


def store_requests(kind: str) -> Any:
    """The function that stores each page of *kind* requests in the MES, for the list operator.

    It returns counts (the summary stays small), and alerts once about ledger items set aside as
    invalid: ledger items are permanent, so a bad one is set aside, not retried forever.
    """

    def store(items: list[dict[str, Any]], context: Mapping[str, Any]) -> dict[str, Any]:
        from include.request_alerts import describe_rejected_items

        outcome = mes_repository().upsert_requests(kind, items)
        if outcome.new_rejected:
            send_alert(describe_rejected_items(kind, outcome.new_rejected), context)
        return {
            "inserted": outcome.inserted,
            "updated": outcome.updated,
            "unchanged": outcome.unchanged,
            "rejected": outcome.rejected,
        }

    return store


def first_seen_in_run(kind: str, context: Mapping[str, Any]) -> list[Any]:
    """The OPEN *kind* requests the MES first stored during this run, whichever try stored them
    (a try that failed on page 5 stored pages 1 to 4, and its retry finds them unchanged)."""
    return mes_repository().requests_first_seen(kind, context["dag_run"].start_date)


def store_request(kind: str) -> Any:
    """The function that stores one *kind* request, as the ledger now lists it, in the MES."""

    def store(item: dict[str, Any], context: Mapping[str, Any]) -> None:
        mes_repository().upsert_requests(kind, [item])
        log.info(
            "%s request %s is now %s in the MES",
            kind.capitalize(),
            quote(item.get(request_kind(kind).id_field), 40),
            quote(item.get("status"), 40),
        )

    return store


def sync_dag(kind: str, doc_md: str) -> Any:
    """Every 15 minutes: read every page of *kind* requests, upsert them, announce new OPEN ones."""
    announced = new_open_requests(kind)

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
        result = ListRequestsOperator(
            kind=kind,
            task_id=f"sync_{kind}_requests",
            doc_md="Read every page from the ledger and upsert each into the MES as it comes.",
            apply_function_batch=store_requests(kind),
            # deferred, each page costs a resume of the task: fewer, larger pages
            page_size=SYNC_PAGE_SIZE,
            **gateway_args(),
        )

        @task.short_circuit(task_id="any_new_open")
        def any_new_open(**context: Any) -> bool:
            """Continue only when the run stored OPEN requests for the first time."""
            return bool(first_seen_in_run(kind, context))

        @task(task_id=f"announce_new_open_{kind}_requests", outlets=[announced])
        def announce(**context: Any) -> None:
            """Log and send the summary, and emit the asset event (with the count) for other DAGs."""
            from include.request_alerts import describe_open_requests

            new_open = first_seen_in_run(kind, context)
            summary = describe_open_requests(kind, new_open)
            log.info("%s", summary)
            send_alert(summary, context)
            context["outlet_events"][announced].extra = {"count": len(new_open)}

        result >> any_new_open() >> announce()

    return sync()


def answer_dag(kind: str, doc_md: str) -> Any:
    """Manual: accept or reject one *kind* request, after checking it can be answered."""
    declared = request_kind(kind)

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
                title=f"{declared.label.capitalize()} id ({declared.id_field})",
                description="32 lowercase hex characters, as listed by the sync DAG or the MES.",
            ),
            "decision": Param(
                type="string",
                enum=["accept", "reject"],
                title="Decision",
                description="accept or reject the request. An answer is final on the ledger.",
            ),
        },
    )
    def answer() -> None:
        request_id = "{{ params.request_id }}"
        check = GetRequestOperator(
            kind=kind,
            task_id=f"check_{kind}_request",
            doc_md="The request must exist, be addressed to this MES and be OPEN; otherwise fail, send nothing.",
            request_id=request_id,
            expected_status="OPEN",
            addressed_to_us=True,
            **gateway_args(),
        )
        send_answer = AnswerRequestOperator(
            kind=kind,
            task_id=f"answer_{kind}_request",
            doc_md=(
                "Send the decision. Retry-safe: a retry reads the request's status first (our decision "
                "there: done; still OPEN: sent again; anything else: failed with the reason)."
            ),
            request_id=request_id,
            decision="{{ params.decision }}",
            **gateway_args(),
        )
        refresh = GetRequestOperator(
            kind=kind,
            task_id=f"refresh_mes_{kind}_request",
            doc_md="Store the request's new status in the MES.",
            request_id=request_id,
            apply_function=store_request(kind),
            **gateway_args(),
        )
        check >> send_answer >> refresh

    return answer()
