"""The MES's records as plain data, and the checks applied to what comes in.

No database or network access here: :mod:`include.mes.repository` reads and writes these, and
:mod:`include.mes_client` uses the same checks for a unit's status and process name.

Partner requests and order requests arrive as dicts exactly as the gateway sends them
(PROTOCOL.md sections 3.1 and 3.2). :func:`partner_request_row` and :func:`order_request_row`
check one item and turn it into the row stored in the database; JSON-valued fields are stored
as canonical JSON text, so that an unchanged item compares equal to its stored row.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from include.mes.visible_text import PROCESS_NAME_PATTERN, STATUS_PATTERN

__all__ = [
    "PROCESS_NAME_MAX_LENGTH",
    "REQUEST_ID_RE",
    "REQUEST_STATUSES",
    "STATUS_MAX_LENGTH",
    "DayReport",
    "InvalidRequestItemError",
    "NewDayReport",
    "OrderRequest",
    "PartnerRequest",
    "ProductionUnit",
    "ProductionUnitNotFoundError",
    "Reporter",
    "UpsertResult",
    "canonical_json",
    "new_object_id",
    "order_request_row",
    "partner_request_row",
    "validate_process_name",
    "validate_unit_id",
    "validate_unit_status",
]

#: The statuses of a partner request or an order request.
REQUEST_STATUSES: tuple[str, ...] = ("OPEN", "ACCEPTED", "REJECTED")
STATUS_MAX_LENGTH = 64
PROCESS_NAME_MAX_LENGTH = 200
_STATUS_RE = re.compile(STATUS_PATTERN)
_PROCESS_NAME_RE = re.compile(PROCESS_NAME_PATTERN)

#: The longest texts an order request item may carry; longer ones are set aside, not stored.
ORDER_TYPE_MAX_LENGTH = 200
ORDER_DESCRIPTION_MAX_LENGTH = 10_000
#: The longest JSON text of an order's ``metadata`` or ``files``.
ORDER_JSON_MAX_LENGTH = 64 * 1024

#: A partner request's or an order's id (PROTOCOL.md 3.5).
REQUEST_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_PUBLIC_KEY_RE = re.compile(r"^0[23][0-9a-f]{64}$")
_TRANSACTION_ID_RE = re.compile(r"^[0-9a-f]{128}$")


class InvalidRequestItemError(ValueError):
    """A partner or order request item from the gateway is malformed; the message names the field."""


class ProductionUnitNotFoundError(LookupError):
    """No production unit has the given id; the message names it."""

    def __init__(self, unit_id: int) -> None:
        super().__init__(f"Production unit {unit_id} does not exist in the MES database")
        self.unit_id = unit_id


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------------------
# Production units and day reports
# --------------------------------------------------------------------------------------


def validate_unit_id(unit_id: object) -> int:
    """Return *unit_id* if it is a positive integer (not a bool), else raise :class:`ValueError`."""
    if isinstance(unit_id, bool) or not isinstance(unit_id, int) or unit_id < 1:
        raise ValueError(f"Invalid production unit id {_shown(unit_id)}: expected a positive integer")
    return unit_id


def validate_unit_status(status: object) -> str:
    """Return *status* if it is a string of 1 to 64 characters that holds a visible character
    and none that :mod:`include.mes.visible_text` refuses (control, format, separator, private
    use, unassigned), else raise :class:`ValueError`.

    The one check of a status: the MES's note, the production-unit DAG's Params (the same
    pattern) and its drain apply it.
    """
    if not isinstance(status, str) or len(status) > STATUS_MAX_LENGTH or not _STATUS_RE.search(status):
        raise ValueError(
            f"Invalid status {_shown(status)}: expected 1 to {STATUS_MAX_LENGTH} characters, at least "
            "one of them visible, and no control, format, line or paragraph separator, private-use "
            "or unassigned character"
        )
    return status


def validate_process_name(process_name: object) -> str:
    """Return *process_name* if it is a string of at most 200 characters (may be empty) that
    holds none of the characters :mod:`include.mes.visible_text` refuses, else raise."""
    if (
        not isinstance(process_name, str)
        or len(process_name) > PROCESS_NAME_MAX_LENGTH
        or not _PROCESS_NAME_RE.search(process_name)
    ):
        raise ValueError(
            f"Invalid process name {_shown(process_name)}: expected at most {PROCESS_NAME_MAX_LENGTH} "
            "characters, no control, format, line or paragraph separator, private-use or unassigned one"
        )
    return process_name


@dataclass(frozen=True)
class ProductionUnit:
    """A production unit of the plant, such as ``PT10`` "Press line 10"."""

    id: int
    code: str
    name: str
    status: str
    process_name: str
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Reporter:
    """A reporter agent as the MES keeps it: the original's ``KafkaToken`` row of instance type
    ``Reporter``. ``token`` and ``password`` are stored encrypted and never shown by ``repr``.

    :param name: the production unit's code (``PT10``).
    :param record_id: the unit's dynamic record (``PU_PT10``), which the reporter updates.
    :param topic: the record's topic (``BLK_Rec_ProductionUnit``).
    :param public_key: the reporter agent's public key; ``None`` until the gateway answered.
    :param token: the reporter's token; ``None`` until the gateway answered.
    :param password: the reporter agent's password, generated by the MES before creating it.
    """

    name: str
    record_id: str
    topic: str
    public_key: str | None
    token: Any = field(repr=False)
    password: Any = field(repr=False)
    instance_type: str = "Reporter"
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class DayReport:
    """One unit's report for one day: 28 values keyed by ``(shift, indicator)`` codes, e.g. ``("A", "D")``."""

    report_id: str
    production_unit_id: int
    unit_code: str
    report_date: date
    values: Mapping[tuple[str, str], float]

    def value(self, shift: str, indicator: str) -> float:
        """The value of one indicator of one shift; raises :class:`KeyError` naming both if absent."""
        try:
            return self.values[(shift, indicator)]
        except KeyError:
            raise KeyError(
                f"Day report {self.report_id} has no value for ({shift!r}, {indicator!r})"
            ) from None


@dataclass(frozen=True)
class NewDayReport:
    """A day report to insert: see :meth:`include.mes.repository.MesRepository.add_day_reports`.

    :param values: all 28 values keyed by ``(shift, indicator)``.
    :param report_id: 24 hex; ``None`` for a new object id.
    """

    production_unit_id: int
    report_date: date
    values: Mapping[tuple[str, str], float]
    report_id: str | None = None


# --------------------------------------------------------------------------------------
# Partner and order requests (PROTOCOL.md sections 3.1 and 3.2)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StoredRequest:
    """What every kind of request the MES stores has, as last synced from the gateway."""

    issuing_agent: str
    receiving_agent: str
    status: str
    timestamp: int
    answer_timestamp: int
    transaction_ids: tuple[str, ...]
    first_seen_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class PartnerRequest(StoredRequest):
    """A partner request as last synced from the gateway."""

    partner_request_id: str


@dataclass(frozen=True, kw_only=True)
class OrderRequest(StoredRequest):
    """An order request ("abstract action") as last synced from the gateway."""

    abs_action_id: str
    type: str
    description: str
    metadata: dict[str, Any]
    files: list[Any]


@dataclass(frozen=True)
class UpsertResult:
    """What a sync of partner or order requests changed.

    :param inserted: items not seen before.
    :param updated: items seen before whose content changed (status, answer, transactions, ...).
    :param unchanged: items identical to what is stored.
    :param new_open: the inserted items whose status is ``OPEN`` (newly seen open requests), as
        the dicts that were given, in input order.
    """

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    new_open: list[dict[str, Any]] = field(default_factory=list)
    #: the ids of :attr:`new_open`, in the same order
    new_open_ids: list[str] = field(default_factory=list)
    #: items set aside (not stored) because they are invalid
    rejected: int = 0
    #: the rejected items not set aside before, ``{"item_id", "reason"}`` each: alert on these
    new_rejected: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged


def canonical_json(value: Any) -> str:
    """JSON text with sorted keys and no spaces: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _fail(kind: str, index: int, item_id: object, message: str) -> InvalidRequestItemError:
    where = f"{kind} #{index}"
    if isinstance(item_id, str) and REQUEST_ID_RE.fullmatch(item_id):
        where += f" ({item_id})"
    return InvalidRequestItemError(f"Invalid {where}: {message}")


def _storable(kind: str, index: int, item_id: str, name: str, text: str, max_length: int) -> str:
    """*text* if a database can store it: no NUL, no lone surrogate, at most *max_length* characters."""
    if len(text) > max_length:
        raise _fail(kind, index, item_id, f"field {name} has {len(text)} characters, more than {max_length}")
    if "\x00" in text or (name in ("metadata", "files") and "\\u0000" in text):
        raise _fail(kind, index, item_id, f"field {name} holds a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(kind, index, item_id, f"field {name} holds a lone surrogate (not UTF-8)") from None
    return text


def _timestamp(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value < 2**53:
        return value
    return None


def request_row(label: str, id_field: str, item: object, index: int = 0) -> dict[str, Any]:
    """Check the fields every kind of request has (its id in *id_field*, the agents, status, times
    and transactions) and return them as a database row; a kind with fields of its own adds them.

    :param label: how errors name one item of the kind (``"partner request"``).
    :param item: the dict as the gateway sent it.
    :param index: its position in the batch, quoted in error messages.
    :raises InvalidRequestItemError: naming the item and the bad field.
    """
    if not isinstance(item, Mapping):
        raise _fail(label, index, None, f"expected an object, got {type(item).__name__}")
    item_id = item.get(id_field)
    if not isinstance(item_id, str) or not REQUEST_ID_RE.fullmatch(item_id):
        raise _fail(
            label, index, None, f"field {id_field} {_shown(item_id)} is not 32 lowercase hex characters"
        )
    row: dict[str, Any] = {id_field: item_id}
    for agent_field in ("issuing_agent", "receiving_agent"):
        agent = item.get(agent_field)
        if not isinstance(agent, str) or not _PUBLIC_KEY_RE.fullmatch(agent):
            raise _fail(
                label,
                index,
                item_id,
                f"field {agent_field} {_shown(agent)} is not a public key (66 lowercase hex, starting 02 or 03)",
            )
        row[agent_field] = agent
    status = item.get("status")
    if status not in REQUEST_STATUSES:
        raise _fail(
            label,
            index,
            item_id,
            f"field status {_shown(status)} is not one of {', '.join(REQUEST_STATUSES)}",
        )
    row["status"] = status
    for ts_field, default in (("timestamp", None), ("answer_timestamp", 0)):
        raw = item.get(ts_field, default)
        ts = _timestamp(raw)
        if ts is None:
            raise _fail(
                label, index, item_id, f"field {ts_field} {_shown(raw)} is not a unix time in seconds"
            )
        row[ts_field] = ts
    tx_ids = item.get("transaction_ids", [])
    if not isinstance(tx_ids, list | tuple) or not all(
        isinstance(tx, str) and _TRANSACTION_ID_RE.fullmatch(tx) for tx in tx_ids
    ):
        raise _fail(label, index, item_id, "field transaction_ids is not a list of 128-hex transaction ids")
    row["transaction_ids"] = canonical_json(list(tx_ids))
    return row


def partner_request_row(item: object, index: int = 0) -> dict[str, Any]:
    """Check one partner request item and return its database row (without the bookkeeping times):
    a partner request has only the fields every request has.

    :raises InvalidRequestItemError: naming the item and the bad field.
    """
    return request_row("partner request", "partner_request_id", item, index)


def order_request_row(item: object, index: int = 0) -> dict[str, Any]:
    """Check one order request item and return its database row (without the bookkeeping times).

    ``description`` defaults to ``""``, ``metadata`` to ``{}`` and ``files`` to ``[]`` when absent.

    :raises InvalidRequestItemError: naming the item and the bad field.
    """
    row = request_row("order request", "abs_action_id", item, index)
    source: Mapping[str, Any] = item  # type: ignore[assignment]  # a mapping: request_row checked it
    item_id = row["abs_action_id"]
    for text_field, default in (("type", None), ("description", "")):
        value = source.get(text_field, default)
        if not isinstance(value, str):
            raise _fail(
                "order request", index, item_id, f"field {text_field} {_shown(value)} is not a string"
            )
        limit = ORDER_TYPE_MAX_LENGTH if text_field == "type" else ORDER_DESCRIPTION_MAX_LENGTH
        row[text_field] = _storable("order request", index, item_id, text_field, value, limit)
    for json_field, expected, default in (("metadata", dict, {}), ("files", list, [])):
        value = source.get(json_field, default)
        if not isinstance(value, expected):
            raise _fail(
                "order request", index, item_id, f"field {json_field} is not a JSON {expected.__name__}"
            )
        try:
            text = canonical_json(value)
        except (TypeError, ValueError, RecursionError) as exc:
            raise _fail("order request", index, item_id, f"field {json_field} is not JSON: {exc}") from None
        row[json_field] = _storable("order request", index, item_id, json_field, text, ORDER_JSON_MAX_LENGTH)
    return row


# --------------------------------------------------------------------------------------
# Object ids
# --------------------------------------------------------------------------------------

_object_id_counter = itertools.count(secrets.randbelow(2**24))
_OBJECT_ID_PROCESS_PART = secrets.token_bytes(5)


def new_object_id(timestamp: float | None = None, rng: random.Random | None = None) -> str:
    """A 24-hex id shaped like a MongoDB ObjectId: 4 bytes of unix time, 5 random bytes, 3 of counter.

    :param timestamp: the unix time in the id; default now.
    :param rng: a seeded generator for reproducible ids (sample data); default: random per process.
    """
    seconds = int(time.time() if timestamp is None else timestamp) & 0xFFFFFFFF
    if rng is None:
        tail = _OBJECT_ID_PROCESS_PART + (next(_object_id_counter) % 2**24).to_bytes(3, "big")
    else:
        tail = rng.getrandbits(64).to_bytes(8, "big")
    return (seconds.to_bytes(4, "big") + tail).hex()
