"""The page's rows: stored requests as plain data (rendered as text by the page), each with its
latest answer run and whether the user may answer it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from blockchain_provider.request_kinds import REQUEST_KINDS
from blockchain_provider.ui.airflow_api import latest_answer_runs
from blockchain_provider.ui.kinds import Kind

if TYPE_CHECKING:
    pass


def _time(epoch: int) -> str | None:
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _order_fields(item: Any) -> dict[str, Any]:
    return {
        "type": item.type,
        "description": item.description,
        "metadata": item.metadata,
        "files": len(item.files),
    }


#: What a row shows besides the fields every request has, per kind.
_KIND_FIELDS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "partner": lambda item: {},
    "order": _order_fields,
}


def item_json(kind: Kind, item: Any, agent: str | None) -> dict[str, Any]:
    """A stored request as the page shows it: plain data, rendered as text by the page."""
    return {
        "id": getattr(item, REQUEST_KINDS[kind].id_field),
        "status": item.status,
        "issuing_agent": item.issuing_agent,
        "receiving_agent": item.receiving_agent,
        "received_at": _time(item.timestamp),
        "answered_at": _time(item.answer_timestamp),
        "addressed_to_us": agent is not None and item.receiving_agent == agent,
        **_KIND_FIELDS[kind](item),
    }


def rows_json(kind: Kind, items: list[Any], agent: str | None, can: dict[str, bool]) -> list[dict[str, Any]]:
    """The page's rows: each item with its latest answer run and whether this user may answer it."""
    rows = [item_json(kind, item, agent) for item in items]
    runs = latest_answer_runs(kind, {row["id"] for row in rows}) if can["answer_runs"] else {}
    for row in rows:
        row["run"] = runs.get(row["id"])
        row["can_answer"] = bool(can["answer"] and row["addressed_to_us"] and row["status"] == "OPEN")
    return rows
