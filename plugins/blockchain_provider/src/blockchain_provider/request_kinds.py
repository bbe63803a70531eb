"""The two kinds of request the ledger addresses to the MES: partner requests and orders.

Each kind has a list topic, an answer topic and an id field (PROTOCOL.md 3.1 and 3.2); the
operators, the CLI and the requests page read them from :data:`REQUEST_KINDS` instead of
branching on the kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from blockchain_provider import protocol

RequestKindName = Literal["partner", "order"]


@dataclass(frozen=True)
class RequestKind:
    """What differs between partner requests and orders on the wire."""

    name: RequestKindName
    #: the topic that lists the kind's requests, page by page
    list_topic: str
    #: the topic that accepts or rejects one
    answer_topic: str
    #: the field of a listed item that holds its id
    id_field: str
    #: how logs and errors name one ("partner request", "order request")
    label: str

    def item_id(self, item: object) -> str | None:
        """The id of a listed *item*, or ``None`` when it has none."""
        value = item.get(self.id_field) if isinstance(item, dict) else None
        return value if isinstance(value, str) else None


PARTNER = RequestKind(
    "partner", protocol.PARTNER_LIST, protocol.PARTNER_ANSWER, "partner_request_id", "partner request"
)
ORDER = RequestKind("order", protocol.ORDER_LIST, protocol.ORDER_ANSWER, "abs_action_id", "order request")

REQUEST_KINDS: dict[str, RequestKind] = {kind.name: kind for kind in (PARTNER, ORDER)}


def request_kind(name: str) -> RequestKind:
    """The kind called *name*; a clear error for any other name."""
    try:
        return REQUEST_KINDS[name]
    except KeyError:
        raise ValueError(f"Unknown request kind {name!r}: expected one of {sorted(REQUEST_KINDS)}") from None
