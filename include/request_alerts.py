"""The texts of the sync DAGs' alerts: newly seen OPEN requests, and ledger items set aside.

Every value quoted from the ledger goes through :func:`~blockchain_provider.quoting.quote`: a
partner's line break, terminal escape or right-to-left override is escaped, never acted on, and
cannot start a line of the alert (or of the task log that shows it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from blockchain_provider.quoting import quote
from include.mes.request_kinds import StoredKind, stored_kind

#: At most this many requests or items are listed in one alert.
SUMMARY_LIMIT = 20
#: The longest reason an alert quotes.
REASON_MAX_LENGTH = 300


def _when(item: Any) -> str:
    return datetime.fromtimestamp(int(item.timestamp or 0), tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _line(kind: StoredKind, key: str, item: Any) -> str:
    """``- <id> [<alert fields>] from <issuer>... at <time>``, each value quoted (the id in *key*)."""
    details = ": ".join(quote(getattr(item, name), longest) for name, longest in kind.alert_fields)
    return (
        f"- {quote(getattr(item, key), 32)} {details + ' ' if details else ''}"
        f"from {quote(item.issuing_agent[:12])}... at {_when(item)}"
    )


def describe_open_requests(kind: str, items: Sequence[Any]) -> str:
    """The alert for newly seen OPEN *kind* requests (stored requests of the MES), listing the
    first :data:`SUMMARY_LIMIT`."""
    stored = stored_kind(kind)
    key = stored.key
    text = [
        f"{len(items)} new OPEN {kind} request(s) to answer:",
        *(_line(stored, key, item) for item in items[:SUMMARY_LIMIT]),
    ]
    if len(items) > SUMMARY_LIMIT:
        text.append(f"... and {len(items) - SUMMARY_LIMIT} more")
    return "\n".join(text)


def describe_rejected_items(kind: str, rejected: list[dict[str, Any]]) -> str:
    """The alert for ledger items set aside, not stored (the MES keeps them in ``rejected_items``)."""
    lines = [f"{len(rejected)} {kind} request item(s) from the ledger set aside, not stored:"]
    for entry in rejected[:SUMMARY_LIMIT]:
        item_id = quote(entry.get("item_id"), 32) if entry.get("item_id") else "(no valid id)"
        lines.append(f"- {item_id}: {quote(entry['reason'], REASON_MAX_LENGTH)}")
    if len(rejected) > SUMMARY_LIMIT:
        lines.append(f"- ... and {len(rejected) - SUMMARY_LIMIT} more (table rejected_items)")
    return "\n".join(lines)
