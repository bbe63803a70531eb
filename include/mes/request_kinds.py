"""The kinds of request the MES stores, each declared once: its table, its row builder (a listed
item to a checked row), its model (a row back to an item) and what its alert line quotes.

The wire side of a kind (its topics, its id field, its answer call) is the provider's
:class:`~blockchain_provider.request_kinds.RequestKind` of the same name: the key column here is
that kind's id field, not a second declaration of it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from blockchain_provider.request_kinds import RequestKind, request_kind
from include.mes import schema
from include.mes.models import (
    OrderRequest,
    PartnerRequest,
    StoredRequest,
    order_request_row,
    partner_request_row,
)

#: The bookkeeping times every request table has (stored in UTC).
_TIME_COLUMNS = ("first_seen_at", "updated_at")


@dataclass(frozen=True)
class StoredKind:
    """Where and how the MES keeps one kind of request.

    :param name: the kind's name, the provider's ``RequestKind.name``.
    :param table: its table.
    :param model: the item a row reads back as.
    :param to_row: checks a listed item (at a position in its page) and returns its row; raises
        :class:`~include.mes.models.InvalidRequestItemError` naming the bad field.
    :param json_columns: the columns held as JSON text besides ``transaction_ids``.
    :param alert_fields: the fields an alert line quotes between the id and the issuer, with the
        longest text of each, joined by ``": "``.
    :param page_columns: the fields the Blockchain requests page shows as the kind's own columns.
    """

    name: str
    table: sa.Table
    model: type[StoredRequest]
    to_row: Callable[[object, int], dict[str, Any]]
    json_columns: tuple[str, ...] = ()
    alert_fields: tuple[tuple[str, int], ...] = ()
    page_columns: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The id column: the field of a listed item that holds its id."""
        return request_kind(self.name).id_field

    def to_item(self, row: RowMapping) -> StoredRequest:
        """The stored row *row* as the kind's item."""
        values: dict[str, Any] = {}
        for column in (f.name for f in dataclasses.fields(self.model)):
            value = row[column]
            if column in _TIME_COLUMNS:
                value = schema.aware(value)
            elif column == "transaction_ids":
                value = tuple(json.loads(value))
            elif column in self.json_columns:
                value = json.loads(value)
            values[column] = value
        return self.model(**values)


PARTNER = StoredKind("partner", schema.partner_requests, PartnerRequest, partner_request_row)
ORDER = StoredKind(
    "order",
    schema.order_requests,
    OrderRequest,
    order_request_row,
    json_columns=("metadata", "files"),
    alert_fields=(("type", 60), ("description", 200)),
    page_columns=("type", "description", "metadata"),
)

#: The kinds of request this deployment's gateway lists besides partner requests and orders (the
#: provider's, which has those two): ``[blockchain] request_kinds`` names this tuple wherever the
#: project runs Airflow (docker-compose.yaml, ``make run``, ``make production``), so that a kind
#: added here is known to every Airflow component. Each has its stored kind in :data:`STORED_KINDS`.
LEDGER_KINDS: tuple[RequestKind, ...] = ()

STORED_KINDS: dict[str, StoredKind] = {kind.name: kind for kind in (PARTNER, ORDER)}


def stored_kind(name: object) -> StoredKind:
    """The stored kind called *name*; a clear error for any other name."""
    try:
        return STORED_KINDS[name]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(
            f"Invalid request kind {name!r}: expected one of {', '.join(sorted(STORED_KINDS))}"
        ) from None
