"""The business flows of PROTOCOL.md §4, as plain functions of a gateway hook and the MES.

The DAGs' tasks call these; benchmarks and tests call them too, without a scheduler.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainConfigError, BlockchainError, BlockchainGatewayError
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


def ensure_record_type(
    hook: KafkaBlockchainHook, repository: Any, name: str, description: str, properties: list[dict[str, Any]]
) -> bool:
    """Create record type *name* unless the MES remembers creating it; return whether it sent it.

    No read of the ledger on the way: as in the original, the MES database says what exists.
    Creating a record type again identically (a crash before the MES noted it) is confirmed by the
    gateway. A gateway that refuses the creation because *name* exists otherwise is asked, on the
    optional ``BLK_Rty_Get``, what it holds: the same properties (another description, another
    agent) are used as they are; other properties are refused, and the MES does not write its
    records into someone else's type.
    """
    if repository.record_type_created(name):
        return False
    try:
        hook.create_record_type(name, description, properties)
    except BlockchainGatewayError:
        existing = _declaration_or_none(hook, name)
        if existing is None:
            raise
        _check_declaration(name, existing, properties)
        repository.mark_record_type_created(name)
        log.info("Record type %s exists on the ledger with the same properties: using it", name)
        return False
    repository.mark_record_type_created(name)
    log.info("Created record type %s", name)
    return True


def _declaration_or_none(hook: KafkaBlockchainHook, name: str) -> dict[str, Any] | None:
    """Record type *name* as the optional read gives it, or ``None`` when it cannot be read."""
    try:
        existing = hook.get_record_type(name)
    except BlockchainError as exc:
        log.warning("Could not read record type %s (BLK_Rty_Get): %s", name, exc)
        return None
    return existing if isinstance(existing, dict) else None


def _declared(properties: Any) -> set[tuple[Any, Any, bool]] | None:
    if not isinstance(properties, list) or not all(isinstance(p, dict) for p in properties):
        return None
    return {(p.get("name"), p.get("data_type"), bool(p.get("dynamic", False))) for p in properties}


def _check_declaration(name: str, existing: Any, properties: list[dict[str, Any]]) -> None:
    theirs = _declared(existing.get("properties") if isinstance(existing, dict) else None)
    if theirs == _declared(properties):
        return
    creator = existing.get("creator") or existing.get("owner") if isinstance(existing, dict) else None
    by = f" by agent {creator}" if isinstance(creator, str) and creator else " by another agent"
    shown = sorted(theirs, key=str) if theirs is not None else "unreadable properties"
    raise BlockchainConfigError(
        f"Record type {name} is already declared on the ledger{by} with other properties ({shown}); "
        "the MES will not write its records into it: use another record type name"
    )


def submit_day_report(hook: KafkaBlockchainHook, repository: Any, report_id: str) -> DayReportResult:
    """Write the 28 indicator records of one day report, skipping those already written.

    Each written record is marked in the MES, so a retry or rerun sends only what is missing; a
    record sent twice anyway (a crash between the answer and the mark) is confirmed by the gateway
    as identical, not duplicated.
    """
    from include.day_report_keys import (
        DAY_REPORT_RECORD_TYPE,
        day_report_keys,
        day_report_record_description,
        day_report_record_properties,
    )

    report = repository.day_report_by_id(report_id)
    if report is None:
        raise LookupError(f"Day report {report_id} is not in the MES")
    done = repository.submitted_record_ids(report.report_id)
    keys = [key for key in day_report_keys(report.report_id) if key.record_id not in done]
    # one non-dynamic record per indicator, each with a one-element properties list
    calls = [
        protocol.record_create_call(
            key.record_id,
            DAY_REPORT_RECORD_TYPE,
            day_report_record_description(report, key),
            day_report_record_properties(report, key),
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
    rejected: int = 0
    new_rejected: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"{self.total} {self.kind} request(s) on the ledger: {self.inserted} new, {self.updated} changed, "
            f"{self.unchanged} unchanged; {len(self.new_open)} newly seen OPEN"
        )
        if self.rejected:
            text += f"; {self.rejected} set aside as invalid ({len(self.new_rejected)} new)"
        return text


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
        kind,
        len(items),
        outcome.inserted,
        outcome.updated,
        outcome.unchanged,
        outcome.new_open,
        outcome.rejected,
        outcome.new_rejected,
    )
    log.info("%s", result.summary())
    return result


def describe_rejected_items(kind: RequestKind, rejected: list[dict[str, Any]]) -> str:
    """A readable summary of newly set-aside items, for logs and alerts."""
    lines = [f"{len(rejected)} {kind} request item(s) from the ledger set aside, not stored:"]
    for entry in rejected[:SUMMARY_LIMIT]:
        lines.append(f"- {entry.get('item_id') or '(no valid id)'}: {entry['reason']}")
    if len(rejected) > SUMMARY_LIMIT:
        lines.append(f"- ... and {len(rejected) - SUMMARY_LIMIT} more (table rejected_items)")
    return "\n".join(lines)


def alert_rejected_items(
    kind: RequestKind, rejected: list[dict[str, Any]], context: Any | None = None
) -> None:
    """Alert once about items set aside for the first time (none: nothing is sent)."""
    if not rejected:
        return
    from blockchain_provider.notifications import send_alert

    send_alert(describe_rejected_items(kind, rejected), context)


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


def answer_request(
    hook: KafkaBlockchainHook, kind: RequestKind, request_id: str, accept: bool, *, retry: bool = False
) -> str:
    """Accept or reject; return the gateway's confirmation.

    A *retry* (the earlier try may have been applied without its reply arriving) reads the
    request's status first: our decision already there is success, sent nothing; still OPEN is
    sent again; another status fails with the reason. An answer is final on the ledger, so a
    blind second answer would only be refused.
    """
    wanted = "ACCEPTED" if accept else "REJECTED"
    if retry:
        item = find_request(hook, kind, request_id)
        if item is None:
            raise LookupError(f"{kind.capitalize()} request {request_id} does not exist on the ledger")
        status = item.get("status")
        if status == wanted:
            log.info(
                "%s request %s is already %s: the earlier try was applied",
                kind.capitalize(),
                request_id,
                status,
            )
            return f"{request_id} already {status} (applied by an earlier try)"
        if status != "OPEN":
            raise ValueError(
                f"{kind.capitalize()} request {request_id} is {status}, not OPEN: cannot "
                f"{'accept' if accept else 'reject'} it"
            )
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
def ensure_reporter(hook: KafkaBlockchainHook, repository: Any, unit: Any) -> Any:
    """The unit's reporter as the MES stores it; on the unit's first update, create its record as a
    dynamic record with a fresh strong password (signed with the master token) and store the
    reporter's public key and token the answer gives (PROTOCOL.md 3.3).

    The password is stored before the record is sent: if the answer is lost, the next run sends the
    same creation and the gateway answers the same reporter with a fresh token.
    """
    from include.day_report_keys import (
        PRODUCTION_UNIT_RECORD_TYPE,
        production_unit_record_description,
        production_unit_record_id,
        production_unit_record_properties,
    )

    record_id = production_unit_record_id(unit)
    reporter = repository.reporter(record_id)
    if reporter is not None and reporter.token is not None:
        return reporter
    topic = hook.settings.topics[protocol.record_topic(PRODUCTION_UNIT_RECORD_TYPE)]
    reporter = repository.prepare_reporter(unit.code, record_id, topic, protocol.new_password())
    created = hook.create_dynamic_record(
        record_id,
        PRODUCTION_UNIT_RECORD_TYPE,
        production_unit_record_description(unit),
        production_unit_record_properties(unit),
        reporter.password.reveal(),
    )
    reporter = repository.store_reporter_credentials(record_id, created.public_key, created.token)
    log.info("Created record %s of unit %s and its reporter %s", record_id, unit.code, created.public_key)
    return reporter


def update_production_unit(
    hook: KafkaBlockchainHook,
    repository: Any,
    production_unit_id: int,
    status: str,
    process_name: str,
    *,
    retry: bool = False,
) -> dict[str, Any]:
    """PROTOCOL.md §4 "Production unit": ensure the record type and the unit's record with its own
    reporter (created once, stored by the MES), then update the two dynamic properties signed with
    the reporter's token. The master token only creates.

    A *retry* first asks the optional ``BLK_Rec_Get`` whether the record already holds the new
    values; if so the earlier try was applied and nothing is sent. Updates of a unit run one at a
    time in order, so values the record holds are this update's or an earlier one's equal to it;
    either way sending it again changes nothing but the history. This narrows the window for a
    twice-recorded update, it does not close it: a gateway that has not yet applied the lost try
    when the read arrives (another topic), or that has no ``BLK_Rec_Get`` (the read then gives up
    after :data:`RETRY_READ_TIMEOUT`), gets the update again.
    """
    from include.day_report_keys import (
        PRODUCTION_UNIT_RECORD_PROPERTIES,
        PRODUCTION_UNIT_RECORD_TYPE,
        PRODUCTION_UNIT_RECORD_TYPE_DESCRIPTION,
        production_unit_dynamic_properties,
    )

    changes = production_unit_dynamic_properties(status, process_name)
    unit = repository.require_production_unit(production_unit_id)
    ensure_record_type(
        hook,
        repository,
        PRODUCTION_UNIT_RECORD_TYPE,
        PRODUCTION_UNIT_RECORD_TYPE_DESCRIPTION,
        PRODUCTION_UNIT_RECORD_PROPERTIES,
    )
    reporter = ensure_reporter(hook, repository, unit)
    if retry and _record_holds(hook, reporter.record_id, changes):
        # the earlier try was applied but its answer was lost (a worker killed while waiting):
        # a second update would record the same change twice in the record's history
        log.info(
            "%s already has %s (applied by an earlier try): nothing to update", reporter.record_id, changes
        )
        return {
            "record_id": reporter.record_id,
            "unit": unit.code,
            "message": "already up to date",
            **changes,
        }
    message = hook.update_record(
        PRODUCTION_UNIT_RECORD_TYPE, reporter.record_id, changes, token=reporter.token.reveal()
    )
    log.info("Updated %s as reporter %s: %s", reporter.record_id, reporter.public_key, changes)
    return {"record_id": reporter.record_id, "unit": unit.code, "message": message, **changes}


#: Seconds a retried update waits for the optional read of its record (a gateway without
#: ``BLK_Rec_Get`` never answers it, and the token's pool is held meanwhile).
RETRY_READ_TIMEOUT = 10.0


def _record_holds(hook: KafkaBlockchainHook, record_id: str, changes: dict[str, Any]) -> bool:
    """Whether record *record_id* already holds *changes*, by the optional read; ``False`` when it
    cannot be read."""
    try:
        record = hook.get_record(record_id, timeout=RETRY_READ_TIMEOUT)
    except BlockchainError as exc:
        log.warning("Could not read record %s (BLK_Rec_Get): %s", record_id, exc)
        return False
    current = record.get("properties") if isinstance(record, dict) else None
    return isinstance(current, dict) and all(current.get(k) == v for k, v in changes.items())
