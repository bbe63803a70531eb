"""The texts of the sync DAGs' alerts: newly seen OPEN requests, and ledger items set aside."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

#: At most this many requests or items are listed in one alert.
SUMMARY_LIMIT = 20


def _when(item: Mapping[str, Any]) -> str:
    return datetime.fromtimestamp(int(item.get("timestamp") or 0), tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _partner_line(item: Mapping[str, Any]) -> str:
    return f"- {item['partner_request_id']} from {item['issuing_agent'][:12]}... at {_when(item)}"


def _order_line(item: Mapping[str, Any]) -> str:
    return (
        f"- {item['abs_action_id']} {item.get('type', '')!s}: {item.get('description', '')!s} "
        f"from {item['issuing_agent'][:12]}... at {_when(item)}"
    )


_LINES: dict[str, Callable[[Mapping[str, Any]], str]] = {"partner": _partner_line, "order": _order_line}


def open_request_lines(kind: str, items: list[Mapping[str, Any]]) -> list[str]:
    """One line per newly seen OPEN *kind* request (the first :data:`SUMMARY_LIMIT`)."""
    line = _LINES[kind]
    return [line(item) for item in items[:SUMMARY_LIMIT]]


def describe_open_requests(kind: str, count: int, lines: list[str]) -> str:
    """The alert for *count* newly seen OPEN requests, listing *lines* (the first of them)."""
    text = [f"{count} new OPEN {kind} request(s) to answer:", *lines[:SUMMARY_LIMIT]]
    if count > len(text) - 1:
        text.append(f"... and {count - (len(text) - 1)} more")
    return "\n".join(text)


def describe_rejected_items(kind: str, rejected: list[dict[str, Any]]) -> str:
    """The alert for ledger items set aside, not stored (the MES keeps them in ``rejected_items``)."""
    lines = [f"{len(rejected)} {kind} request item(s) from the ledger set aside, not stored:"]
    for entry in rejected[:SUMMARY_LIMIT]:
        lines.append(f"- {entry.get('item_id') or '(no valid id)'}: {entry['reason']}")
    if len(rejected) > SUMMARY_LIMIT:
        lines.append(f"- ... and {len(rejected) - SUMMARY_LIMIT} more (table rejected_items)")
    return "\n".join(lines)
