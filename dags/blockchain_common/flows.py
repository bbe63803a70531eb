"""The business flows of PROTOCOL.md §4, as plain functions of a gateway hook and the MES.

The DAGs' tasks call these; benchmarks and tests call them too, without a scheduler.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainConfigError, BlockchainGatewayError
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook

log = logging.getLogger(__name__)

RequestKind = Literal["partner", "order"]

#: How a newly seen OPEN request is summarised in logs and alerts, at most this many each time.
SUMMARY_LIMIT = 20


# ---------------------------------------------------------------------------- day report
@dataclass
class DayReportResult:
    unit: str
    written: int
    already_done: int
    refused: dict[str, str] = field(default_factory=dict)


def ensure_record_type(hook: KafkaBlockchainHook, name: str, properties: list[dict[str, Any]]) -> bool:
    """Create record type *name* when the ledger does not have it; return whether it was created."""
    if hook.get_record_type(name) is not None:
        return False
    try:
        hook.create_record_type(name, properties)
    except BlockchainGatewayError:
        # Another run may have created it in between: that is what we wanted.
        if hook.get_record_type(name) is None:
            raise
    log.info("Created record type %s", name)
    return True


def submit_day_report(hook: KafkaBlockchainHook, repository: Any, report_id: str) -> DayReportResult:
    """Write the 28 indicator records of one day report, skipping those already written.

    Each written record is marked in the MES, so a retry or rerun sends only what is missing; a
    record sent twice anyway (a crash between the answer and the mark) is confirmed by the gateway
    as identical, not duplicated.
    """
    from include.day_report_keys import DAY_REPORT_RECORD_TYPE, day_report_keys, day_report_record_properties

    report = repository.day_report_by_id(report_id)
    if report is None:
        raise LookupError(f"Day report {report_id} is not in the MES")
    done = repository.submitted_record_ids(report.report_id)
    keys = [key for key in day_report_keys(report.report_id) if key.record_id not in done]
    calls = [
        protocol.record_create_call(
            key.record_id, DAY_REPORT_RECORD_TYPE, day_report_record_properties(report, key)
        )
        for key in keys
    ]
    outcomes = hook.call_many(calls)
    written = [
        key.record_id
        for key, outcome in zip(keys, outcomes, strict=True)
        if not isinstance(outcome, Exception)
    ]
    if written:
        repository.mark_submitted(report.report_id, written)
    refused = {
        key.record_id: outcome.gateway_text
        for key, outcome in zip(keys, outcomes, strict=True)
        if isinstance(outcome, BlockchainGatewayError)
    }
    result = DayReportResult(report.unit_code, len(written), len(done), refused)
    log.info(
        "Unit %s, %s: %d record(s) written, %d already on the ledger, %d refused",
        report.unit_code,
        report.report_date,
        result.written,
        result.already_done,
        len(refused),
    )
    if refused:
        details = "; ".join(f"{rid}: {text}" for rid, text in list(refused.items())[:5])
        raise BlockchainConfigError(
            f"The gateway refused {len(refused)} record(s) of unit {report.unit_code}: {details}"
        )
    return result


# ------------------------------------------------------------------------------ syncs
@dataclass
class SyncResult:
    kind: RequestKind
    total: int
    inserted: int
    updated: int
    unchanged: int
    new_open: list[dict[str, Any]]

    def summary(self) -> str:
        return (
            f"{self.total} {self.kind} request(s) on the ledger: {self.inserted} new, {self.updated} changed, "
            f"{self.unchanged} unchanged; {len(self.new_open)} newly seen OPEN"
        )


def sync_requests(
    hook: KafkaBlockchainHook, repository: Any, kind: RequestKind, page_size: int = 100
) -> SyncResult:
    """Read every page of partner or order requests and upsert them into the MES."""
    items = list(
        hook.iter_partner_requests(page_size) if kind == "partner" else hook.iter_order_requests(page_size)
    )
    upsert = repository.upsert_partner_requests if kind == "partner" else repository.upsert_order_requests
    outcome = upsert(items)
    result = SyncResult(
        kind, len(items), outcome.inserted, outcome.updated, outcome.unchanged, outcome.new_open
    )
    log.info("%s", result.summary())
    return result


def describe_open_requests(kind: RequestKind, items: list[dict[str, Any]]) -> str:
    """A readable summary of newly seen OPEN requests, for logs and alerts."""
    lines = [f"{len(items)} new OPEN {kind} request(s) to answer:"]
    for item in items[:SUMMARY_LIMIT]:
        when = datetime.fromtimestamp(int(item.get("timestamp") or 0), tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        if kind == "partner":
            lines.append(f"- {item['partner_request_id']} from {item['issuing_agent'][:12]}... at {when}")
        else:
            lines.append(
                f"- {item['abs_action_id']} {item.get('type', '')!s}: {item.get('description', '')!s} "
                f"from {item['issuing_agent'][:12]}... at {when}"
            )
    if len(items) > SUMMARY_LIMIT:
        lines.append(f"... and {len(items) - SUMMARY_LIMIT} more")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- answers
ID_FIELD = {"partner": "partner_request_id", "order": "abs_action_id"}


def find_request(hook: KafkaBlockchainHook, kind: RequestKind, request_id: str) -> dict[str, Any] | None:
    """The partner or order request *request_id* as the ledger lists it, or ``None``."""
    items = hook.iter_partner_requests() if kind == "partner" else hook.iter_order_requests()
    return next((item for item in items if item.get(ID_FIELD[kind]) == request_id), None)


def check_answerable(hook: KafkaBlockchainHook, kind: RequestKind, request_id: str) -> dict[str, Any]:
    """The request, if it exists, is addressed to this agent and is OPEN; else a clear error."""
    protocol.validate_request_id(request_id, f"{kind} request id")
    item = find_request(hook, kind, request_id)
    if item is None:
        raise LookupError(f"{kind.capitalize()} request {request_id} does not exist on the ledger")
    ours = hook.settings.public_key
    if ours and item.get("receiving_agent") != ours:
        raise PermissionError(
            f"{kind.capitalize()} request {request_id} is addressed to {item.get('receiving_agent')}, "
            f"not to this MES ({ours})"
        )
    if item.get("status") != "OPEN":
        raise ValueError(
            f"{kind.capitalize()} request {request_id} is {item.get('status')}, not OPEN: nothing to answer"
        )
    return item


def answer_request(hook: KafkaBlockchainHook, kind: RequestKind, request_id: str, accept: bool) -> str:
    """Accept or reject; return the gateway's confirmation."""
    answer = hook.answer_partner_request if kind == "partner" else hook.answer_order_request
    message = answer(request_id, accept)
    log.info(
        "%s request %s %s: %s", kind.capitalize(), request_id, "accepted" if accept else "rejected", message
    )
    return message


def refresh_request(hook: KafkaBlockchainHook, repository: Any, kind: RequestKind, request_id: str) -> str:
    """Re-read the request from the ledger and store it in the MES; return its status."""
    item = find_request(hook, kind, request_id)
    if item is None:
        raise LookupError(f"{kind.capitalize()} request {request_id} vanished from the ledger")
    upsert = repository.upsert_partner_requests if kind == "partner" else repository.upsert_order_requests
    upsert([item])
    return item["status"]


# ------------------------------------------------------------------- production units
def update_production_unit(
    hook: KafkaBlockchainHook,
    repository: Any,
    production_unit_id: int,
    status: str,
    process_name: str,
    reporter_hook: KafkaBlockchainHook | None = None,
) -> dict[str, Any]:
    """PROTOCOL.md §4 "Production unit": ensure the record type, the unit's record and the
    reporter's authorisation, then update the two dynamic properties.

    :param reporter_hook: the reporting agent's hook, when it is not the master.
    """
    from include.day_report_keys import (
        PRODUCTION_UNIT_RECORD_PROPERTIES,
        PRODUCTION_UNIT_RECORD_TYPE,
        production_unit_dynamic_properties,
        production_unit_record_id,
        production_unit_record_properties,
    )

    changes = production_unit_dynamic_properties(status, process_name)
    unit = repository.require_production_unit(production_unit_id)
    record_id = production_unit_record_id(unit)
    ensure_record_type(hook, PRODUCTION_UNIT_RECORD_TYPE, PRODUCTION_UNIT_RECORD_PROPERTIES)
    record = hook.get_record(record_id)
    if record is None:
        hook.create_record(record_id, PRODUCTION_UNIT_RECORD_TYPE, production_unit_record_properties(unit))
        record = hook.get_record(record_id) or {}
        log.info("Created record %s for unit %s", record_id, unit.code)
    reporter = reporter_hook or hook
    reporter_key = reporter.settings.public_key
    if (
        reporter_key
        and reporter_key != record.get("owner")
        and reporter_key not in record.get("reporters", [])
    ):
        hook.add_reporter(record_id, reporter_key)
        log.info("Authorised reporter %s on %s", reporter_key, record_id)
    current = record.get("properties") or {}
    if all(current.get(name) == value for name, value in changes.items()):
        # a retry of an update the gateway applied but whose answer was lost (a worker killed
        # while waiting): the ledger already holds it, and a second update would record it twice
        log.info("%s already has %s: nothing to update", record_id, changes)
        return {"record_id": record_id, "unit": unit.code, "message": "already up to date", **changes}
    message = reporter.update_record(record_id, changes)
    log.info("Updated %s: %s", record_id, changes)
    return {"record_id": record_id, "unit": unit.code, "message": message, **changes}
