"""The requests (PROTOCOL.md sections 1 and 3): what each asks (:class:`Call`), its envelope with
token and request id (:class:`Request`), the builders of every message, and paging.

Requests are JSON arrays ``[header, body?]``; the hook, the operators and the trigger never build
one themselves.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blockchain_provider.exceptions import (
    InvalidIdentifierError,
    MalformedResponseError,
)
from blockchain_provider.protocol.identifiers import (
    _shown,
    answered_public_key,
    validate_name,
    validate_request_id,
)
from blockchain_provider.protocol.ours import (
    AGENTS,
    MIN_PASSWORD_LENGTH,
    NON_DYNAMIC_PASSWORD,
    RECORDS,
    REQUEST_ID_HEADER,
    _check_properties,
    _check_values,
    request_id_kafka_headers,
    request_id_kafka_key,
)
from blockchain_provider.protocol.topics import (
    RECORD_TYPES,
    RESPONSES,
    answer_topic_kind,
    is_known_topic,
    list_topic_kind,
    record_topic,
)


@dataclass(frozen=True)
class Call:
    """What one request asks, before its token and request id are added.

    :param topic: the protocol (default) name of the request topic.
    :param header: header keys besides ``auth`` and ``request_id`` (``start``/``limit`` of a list).
    :param body: the body object, or ``None`` for a header-only request.
    """

    topic: str
    header: Mapping[str, Any] = field(default_factory=dict)
    body: Mapping[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not is_known_topic(self.topic) or self.topic in (RESPONSES, RECORDS):
            raise InvalidIdentifierError(f"Unknown request topic {_shown(self.topic)}")
        reserved = {"auth", REQUEST_ID_HEADER} & set(self.header)
        if reserved:
            raise InvalidIdentifierError(
                f"Header keys {sorted(reserved)} are set by the hook, not the caller"
            )


@dataclass(frozen=True)
class Request:
    """One request ready to send. The header holds the token; ``repr`` never shows it."""

    topic: str
    request_id: str
    header: Mapping[str, Any] = field(repr=False)
    body: Mapping[str, Any] | None = field(default=None, repr=False)

    def encode(self) -> bytes:
        """The Kafka message value: a JSON array ``[header]`` or ``[header, body]``."""
        envelope: list[Any] = [dict(self.header)]
        if self.body is not None:
            envelope.append(dict(self.body))
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """The request id as Kafka headers (:func:`~.ours.request_id_kafka_headers`)."""
        return request_id_kafka_headers(self.request_id)

    def kafka_key(self) -> bytes:
        """The request id as the message key (:func:`~.ours.request_id_kafka_key`)."""
        return request_id_kafka_key(self.request_id)


def envelope(call: Call, request_id: str, token: str | None) -> Request:
    """Add the token (``auth``) and request id to *call*.

    Agent requests (``BLK_Agt``) are sent before a token exists and carry none.
    """
    header: dict[str, Any] = {}
    if call.topic != AGENTS:
        if not isinstance(token, str) or not token:
            raise InvalidIdentifierError("The blockchain token is empty: set the connection's Token field")
        header["auth"] = token
    header.update(call.header)
    header[REQUEST_ID_HEADER] = validate_request_id(request_id)
    return Request(call.topic, request_id, header, call.body)


def _check_page(start: object, limit: object) -> tuple[int, int]:
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise InvalidIdentifierError(f"Invalid start {_shown(start)}: expected an integer >= 0")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
        raise InvalidIdentifierError(f"Invalid limit {_shown(limit)}: expected an integer from 1 to 10000")
    return start, limit


def list_call(topic: str, start: int, limit: int) -> Call:
    """A page of a request kind's requests: partner requests (``BLK_Part_Lst``), order requests
    (``BLK_Act_Lst``) or a configured kind's."""
    if list_topic_kind(topic) is None:
        raise InvalidIdentifierError(f"{topic} is not a list topic")
    start, limit = _check_page(start, limit)
    return Call(topic, {"start": start, "limit": limit})


def answer_call(topic: str, item_id: str, accept: bool) -> Call:
    """Accept or reject a request: a partner request (``BLK_Part_Ans``), an order
    (``BLK_Act_Ans``) or a configured kind's."""
    kind = answer_topic_kind(topic)
    if kind is None:
        raise InvalidIdentifierError(f"{topic} is not an answer topic")
    validate_request_id(item_id, f"{kind.label} id")
    if not isinstance(accept, bool):
        raise InvalidIdentifierError(f"Invalid decision {_shown(accept)}: expected True (accept) or False")
    return Call(topic, {}, {"id": item_id, "response": 1 if accept else 0})


def _check_description(description: object) -> str:
    if not isinstance(description, str) or not description.strip() or len(description) > 1000:
        raise InvalidIdentifierError(f"Invalid description {_shown(description)}: 1-1000 characters")
    return description


def new_password() -> str:
    """A fresh strong password for a reporter agent (256 random bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def record_type_create_call(name: str, description: str, properties: list[dict[str, Any]]) -> Call:
    """Create a record type on ``BLK_Rty`` (PROTOCOL.md 3.3):
    ``[{"auth", "isRecord": false}, {"name", "description", "properties": [P, ...]}]``.

    ``P`` is ``{"name", "data_type", "dynamic"}`` (ours). Creating it again identically is
    answered ``message``.
    """
    body = {
        "name": validate_name(name, "record type name"),
        "description": _check_description(description),
        "properties": _check_properties(properties),
    }
    record_topic(name)  # its records need a topic
    return Call(RECORD_TYPES, {"isRecord": False}, body)


def record_create_call(
    record_id: str,
    record_type: str,
    description: str,
    properties: Mapping[str, Any] | list[dict[str, Any]],
    *,
    dynamic: bool = False,
    password: str = NON_DYNAMIC_PASSWORD,
) -> Call:
    """Create a record on ``BLK_Rec_<record type>`` (PROTOCOL.md 3.3):
    ``[{"auth", "isRecord": true}, {"record_id", "record_type", "description", "dynamic", "password",
    "properties": [V, ...]}]``.

    A dynamic record also creates its reporter agent with *password* (at least 12 characters);
    the answer's ``data`` is ``{"record_id", "public_key", "token"}``. A non-dynamic record has the
    password ``""`` (ours) and is answered ``message``.
    """
    if not isinstance(dynamic, bool):
        raise InvalidIdentifierError(f"Invalid dynamic flag {_shown(dynamic)}: expected a boolean")
    if dynamic:
        if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidIdentifierError(
                f"A dynamic record needs its reporter's password, at least {MIN_PASSWORD_LENGTH} characters"
            )
    elif password != NON_DYNAMIC_PASSWORD:
        raise InvalidIdentifierError("A non-dynamic record has no reporter: its password must be empty")
    body = {
        "record_id": validate_name(record_id, "record id"),
        "record_type": validate_name(record_type, "record type name"),
        "description": _check_description(description),
        "dynamic": dynamic,
        "password": password,
        "properties": _check_values(properties),
    }
    return Call(record_topic(record_type), {"isRecord": True}, body)


def record_update_call(
    record_type: str, record_id: str, properties: Mapping[str, Any] | list[dict[str, Any]]
) -> Call:
    """Update dynamic properties on the record's ``BLK_Rec_<record type>`` (PROTOCOL.md 3.3):
    ``[{"auth", "isRecord": false}, {"record_id", "properties": [V, ...]}]``; send it with the
    reporter's token."""
    body = {"record_id": validate_name(record_id, "record id"), "properties": _check_values(properties)}
    return Call(record_topic(record_type), {"isRecord": False}, body)


@dataclass(frozen=True)
class ReporterCredentials:
    """What creating a dynamic record answers: its reporter agent. ``repr`` hides the token."""

    record_id: str
    public_key: str
    token: str = field(repr=False)


def reporter_from_answer(value: Any, record_id: str) -> ReporterCredentials:
    """The reporter in the answer to creating the dynamic record *record_id*, or raise.

    The error names what is missing, never the token.
    """
    if not isinstance(value, Mapping):
        raise MalformedResponseError(
            f"The answer to creating dynamic record {record_id} has no reporter data (got {type(value).__name__})"
        )
    if value.get("record_id") not in (None, record_id):
        raise MalformedResponseError(f"The answer to creating record {record_id} names another record")
    public_key = answered_public_key(value.get("public_key"), f"reporter public key of record {record_id}")
    token = value.get("token")
    if not isinstance(token, str) or not token:
        raise MalformedResponseError(
            f"The answer to creating dynamic record {record_id} has no reporter token"
        )
    return ReporterCredentials(record_id, public_key, token)
