"""The page's rows: stored requests as plain data (rendered as text by the page), each with its
latest answer run and whether the user may answer it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from blockchain_provider.request_kinds import request_kind
from blockchain_provider.ui.airflow_api import latest_answer_runs


def _time(epoch: int) -> str | None:
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def item_json(id_field: str, item: Any, agent: str | None, columns: list[str]) -> dict[str, Any]:
    """A stored request (its id in *id_field*) as the page shows it: plain data, rendered as text
    by the page; *columns* are the kind's own attributes the store names
    (:func:`~blockchain_provider.request_store.page_columns`)."""
    return {
        "id": getattr(item, id_field),
        "status": item.status,
        "issuing_agent": item.issuing_agent,
        "receiving_agent": item.receiving_agent,
        "received_at": _time(item.timestamp),
        "answered_at": _time(item.answer_timestamp),
        "addressed_to_us": agent is not None and item.receiving_agent == agent,
        "fields": {name: getattr(item, name, None) for name in columns},
    }


def rows_json(
    kind: str, items: list[Any], agent: str | None, can: dict[str, bool], columns: list[str]
) -> list[dict[str, Any]]:
    """The page's rows: each item with its latest answer run and whether this user may answer it."""
    id_field = request_kind(kind).id_field
    rows = [item_json(id_field, item, agent, columns) for item in items]
    runs = latest_answer_runs(kind, {row["id"] for row in rows}) if can["answer_runs"] else {}
    for row in rows:
        row["run"] = runs.get(row["id"])
        row["can_answer"] = bool(can["answer"] and row["addressed_to_us"] and row["status"] == "OPEN")
    return rows
