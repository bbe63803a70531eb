"""The sandbox's side of the BLK wire format (PROTOCOL.md sections 1 and 3).

Written from the protocol document alone: the sandbox never imports the MES-side provider, so
that each checks the other. This module owns the sandbox's topic names and identifier patterns;
the rest of the sandbox imports them from here.

Requests are UTF-8 JSON arrays ``[header]`` or ``[header, body]``. Responses are
``[header, outcome]`` written in one of two encodings:

- ``python-literal`` (the original gateway, the default): a JSON string whose content is the
  Python ``repr`` of the list (``True``/``None``, either quote kind);
- ``json``: a plain JSON array.
"""

from __future__ import annotations

import json
import re
from typing import Any

RESPONSES = "BLK_Res"
PARTNER_LIST = "BLK_Part_Lst"
PARTNER_ANSWER = "BLK_Part_Ans"
ORDER_LIST = "BLK_Act_Lst"
ORDER_ANSWER = "BLK_Act_Ans"
RECORD_TYPES = "BLK_Rty"
#: The base of the record topics: records of type N travel on ``BLK_Rec_N`` (PROTOCOL.md 3.3).
RECORDS = "BLK_Rec"
RECORD_TYPE_GET = "BLK_Rty_Get"
RECORD_GET = "BLK_Rec_Get"
AGENTS = "BLK_Agt"

#: Every topic of the BLK protocol with its default name (PROTOCOL.md section 3).
DEFAULT_TOPICS: tuple[str, ...] = (
    RESPONSES,
    PARTNER_LIST,
    PARTNER_ANSWER,
    ORDER_LIST,
    ORDER_ANSWER,
    RECORD_TYPES,
    RECORDS,
    RECORD_TYPE_GET,
    RECORD_GET,
    AGENTS,
)

#: Every topic the sandbox consumes (all but the response topic).
REQUEST_TOPICS: tuple[str, ...] = tuple(name for name in DEFAULT_TOPICS if name != RESPONSES)

#: The request topics with a fixed name on which an agent acts with its token: all but the agents'
#: topic (a password instead) and the base of the record topics (records travel on ``BLK_Rec_N``).
TOKEN_TOPICS: tuple[str, ...] = tuple(name for name in REQUEST_TOPICS if name not in (AGENTS, RECORDS))

#: (ours) the Kafka header that carries the request id.
REQUEST_ID_HEADER = "blk-request-id"

ENCODINGS = ("python-literal", "json")

#: A request's ``request_id`` (ours): a fresh 32-hex id per request.
REQUEST_ID_RE = re.compile(r"^[0-9a-f]{32}$")
#: An agent: its compressed secp256k1 public key, 66 hex (PROTOCOL.md section 3.5).
PUBLIC_KEY_RE = re.compile(r"^0[23][0-9a-f]{64}$")
#: A partner request or order id: 32 hex (PROTOCOL.md section 3.5).
ITEM_ID_RE = re.compile(r"^[0-9a-f]{32}$")
#: A record type name, a record id or a property name.
NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
#: A record type name that can be the suffix of a topic name (Kafka allows no ``:``).
RECORD_TYPE_TOPIC_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")

#: Requests larger than this are refused unread.
MAX_REQUEST_BYTES = 1024 * 1024


class MalformedRequest(ValueError):
    """A request that is not ``[header, body?]``. ``token`` is set when one could still be read.

    The message never quotes the value (it may hold a token or a password).
    """

    def __init__(self, reason: str, token: str | None = None, header: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.token = token
        self.header = header or {}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _readable_header(value: Any) -> tuple[str | None, dict[str, Any] | None]:
    header = value[0] if isinstance(value, list) and value else value
    if not isinstance(header, dict):
        return None, None
    auth = header.get("auth")
    return (auth if isinstance(auth, str) and auth else None), header


def decode_request(raw: bytes | None) -> tuple[dict[str, Any], Any]:
    """Return ``(header, body)`` of a request (``body`` is ``None`` when absent), or raise
    :class:`MalformedRequest`."""
    if raw is None:
        raise MalformedRequest("empty message value")
    if len(raw) > MAX_REQUEST_BYTES:
        raise MalformedRequest(f"value of {len(raw)} bytes exceeds {MAX_REQUEST_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("value is not UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise MalformedRequest("value is not JSON") from None
    token, header = _readable_header(value)
    if not isinstance(value, list):
        raise MalformedRequest("request is not a JSON array [header, body]", token, header)
    if not value or not isinstance(value[0], dict):
        raise MalformedRequest("request header (element 0) is not an object", token, header)
    if len(value) > 2:
        raise MalformedRequest(
            f"request has {len(value)} elements; expected [header] or [header, body]", token, header
        )
    body = value[1] if len(value) == 2 else None
    return value[0], body


def request_id_of(header: dict[str, Any], kafka_headers: list[tuple[str, bytes]] | None) -> str | None:
    """The request's 32-hex id from its header, else from its Kafka header, else ``None``."""
    candidate = header.get("request_id")
    if isinstance(candidate, str) and REQUEST_ID_RE.fullmatch(candidate):
        return candidate
    for name, value in kafka_headers or ():
        if name == REQUEST_ID_HEADER and value:
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                continue
            if REQUEST_ID_RE.fullmatch(text):
                return text
    return None


def encode_response(header: dict[str, Any], outcome: dict[str, Any], encoding: str) -> bytes:
    """The ``BLK_Res`` value for ``[header, outcome]`` in *encoding*."""
    envelope = [header, outcome]
    if encoding == "python-literal":
        return json.dumps(repr(envelope)).encode("utf-8")
    if encoding == "json":
        return json.dumps(envelope, ensure_ascii=False).encode("utf-8")
    raise ValueError(f"unknown encoding {encoding!r}: one of {', '.join(ENCODINGS)}")


def record_topic(record_type: str) -> str:
    """The protocol name of the topic of *record_type*'s records: ``BLK_Rec_<record type>``."""
    return f"{RECORDS}_{record_type}"


def record_type_of(topic: str) -> str | None:
    """The record type whose records travel on the protocol topic *topic*, or ``None``."""
    if not topic.startswith(RECORDS + "_") or topic in DEFAULT_TOPICS:
        return None
    name = topic[len(RECORDS) + 1 :]
    return name if RECORD_TYPE_TOPIC_RE.fullmatch(name) else None


def topic_names(prefix: str = "") -> dict[str, str]:
    """Protocol name -> actual topic name, for a topic prefix."""
    return {name: prefix + name for name in DEFAULT_TOPICS}
