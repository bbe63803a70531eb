"""The page's rows: stored requests as plain data (rendered as text by the page), each with its
latest answer run and whether the user may answer it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from blockchain_provider.request_kinds import request_kind
from blockchain_provider.ui.airflow_api import latest_answer_runs
from blockchain_provider.ui.kinds import Kind


def _time(epoch: int) -> str | None:
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat()


#: The fields every stored request has (those of a listed item, and when the MES first and last
#: stored it): a row shows them in the page's own columns.
COMMON_FIELDS = frozenset(
    ["issuing_agent", "receiving_agent", "status", "timestamp", "answer_timestamp", "transaction_ids"]
) | {"first_seen_at", "updated_at"}


def own_fields(kind: Kind, item: Any) -> dict[str, Any]:
    """The fields of *item* beyond those every request has and its id: the kind's own columns,
    as the deployment's item model declares them (a dataclass's fields, else its attributes), in
    their order."""
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        values = {field.name: getattr(item, field.name) for field in dataclasses.fields(item)}
    else:
        values = dict(vars(item))
    skipped = COMMON_FIELDS | {request_kind(kind).id_field}
    return {name: value for name, value in values.items() if name not in skipped and not name.startswith("_")}


def item_json(kind: Kind, item: Any, agent: str | None) -> dict[str, Any]:
    """A stored request as the page shows it: plain data, rendered as text by the page."""
    return {
        "id": getattr(item, request_kind(kind).id_field),
        "status": item.status,
        "issuing_agent": item.issuing_agent,
        "receiving_agent": item.receiving_agent,
        "received_at": _time(item.timestamp),
        "answered_at": _time(item.answer_timestamp),
        "addressed_to_us": agent is not None and item.receiving_agent == agent,
        "fields": own_fields(kind, item),
    }


def rows_json(kind: Kind, items: list[Any], agent: str | None, can: dict[str, bool]) -> list[dict[str, Any]]:
    """The page's rows: each item with its latest answer run and whether this user may answer it."""
    rows = [item_json(kind, item, agent) for item in items]
    runs = latest_answer_runs(kind, {row["id"] for row in rows}) if can["answer_runs"] else {}
    for row in rows:
        row["run"] = runs.get(row["id"])
        row["can_answer"] = bool(can["answer"] and row["addressed_to_us"] and row["status"] == "OPEN")
    return rows
