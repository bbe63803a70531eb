"""The BLK wire protocol: the one module that knows the gateway's message formats.

Everything the hook, the operators and the trigger put on or read from Kafka goes through
here; they never build or parse an envelope themselves. The choices that the original
gateway's documentation does not make (marked *(ours)* in PROTOCOL.md) are all in this file:
the ``request_id`` header and its Kafka header name, the record topic's suffix, the property
shapes inside the record messages, the optional read topics (off unless the connection switches
them on), the agent messages, the default topic names, what names a gateway for "created once
per gateway", and the ends of a listing besides the empty page (a repeated page, a page cap). A real gateway that differs is met by changing this
module or the connection's topic overrides, not the DAGs.

Requests are JSON arrays ``[header, body?]``. Responses are ``[{"auth": T, ...}, {outcome}]``
in one of three encodings (section 1 of PROTOCOL.md), decoded by :func:`decode_response`
without ``eval`` and without the original client's quote replacement.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import math
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from blockchain_provider.exceptions import (
    BlockchainConfigError,
    BlockchainProtocolError,
    InvalidIdentifierError,
    MalformedResponseError,
)
from blockchain_provider.quoting import quote, redact

# --------------------------------------------------------------------------------------
# Topics (PROTOCOL.md section 3)
# --------------------------------------------------------------------------------------

RESPONSES = "BLK_Res"
PARTNER_LIST = "BLK_Part_Lst"
PARTNER_ANSWER = "BLK_Part_Ans"
ORDER_LIST = "BLK_Act_Lst"
ORDER_ANSWER = "BLK_Act_Ans"
RECORD_TYPES = "BLK_Rty"
#: (ours) the base of the record topics: a record of type N travels on ``BLK_Rec_N``
#: (:func:`record_topic`). Overriding this name moves every record topic; a ``BLK_Rec_N`` override
#: moves one. No message is sent on the base topic itself.
RECORDS = "BLK_Rec"
#: (ours) the optional read topics; no flow needs them.
RECORD_TYPE_GET = "BLK_Rty_Get"
RECORD_GET = "BLK_Rec_Get"
AGENTS = "BLK_Agt"

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

#: (ours) the Kafka header that carries the request id next to the envelope's header key.
REQUEST_ID_KAFKA_HEADER = "blk-request-id"

#: Responses larger than this are not decoded (in UTF-8 bytes, for a ``str`` too). A page of 100
#: partner requests is about 50 KB; a sync's page of 500, about 250 KB (Kafka's default largest
#: message is 1 MB). A Python literal of plain lists, objects, strings and numbers (what the
#: original gateway's ``repr`` writes) is read by a linear rewrite to JSON up to this size too:
#: about 70 ms a MiB of such pages, 0.6 s at worst (a MiB of empty strings). A smaller cap for
#: literals would drop the sync's full pages as malformed, and its wait would time out on every try.
MAX_RESPONSE_BYTES = 1024 * 1024
#: A Python literal the JSON rewrite cannot read (tuples, sets: nothing the original gateway's
#: ``repr`` of its answers writes) goes to ``ast.literal_eval`` only up to this many characters,
#: which it parses in milliseconds; every reader decodes on the thread that serves all waiting
#: requests, so a larger one naming a waiting request must not hold them for seconds.
MAX_SLOW_LITERAL_CHARS = 4 * 1024


@dataclass(frozen=True)
class TopicMap:
    """Actual topic names by their protocol (default) names.

    :param overrides: default name -> actual name, for the topics that differ.
    """

    overrides: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(name for name in self.overrides if not is_known_topic(name))
        if unknown:
            raise InvalidIdentifierError(
                f"Unknown topic(s) in topic overrides: {', '.join(unknown)}; "
                f"the protocol's topics are {', '.join(DEFAULT_TOPICS)} and {RECORDS}_<record type>"
            )
        for name, actual in self.overrides.items():
            if not isinstance(actual, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", actual):
                raise InvalidIdentifierError(f"Topic override for {name} is not a valid Kafka topic name")

    def __getitem__(self, name: str) -> str:
        if name in DEFAULT_TOPICS:
            return self.overrides.get(name, name)
        if is_record_topic(name):
            # an explicit override of this record topic, else the (overridden) base plus the suffix
            return self.overrides.get(name) or self[RECORDS] + name[len(RECORDS) :]
        raise KeyError(name)

    @property
    def responses(self) -> str:
        return self[RESPONSES]

    @classmethod
    def parse(cls, value: Mapping[str, str] | str | None) -> TopicMap:
        """Build from a mapping or a JSON object text, as a connection's extra holds it."""
        if value is None or value == "":
            return cls()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise InvalidIdentifierError(f"Topic overrides are not a JSON object: {exc}") from None
        if not isinstance(value, Mapping):
            raise InvalidIdentifierError("Topic overrides must be a JSON object of default name -> name")
        return cls(dict(value))


_RECORD_TYPE_TOPIC_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def record_topic(record_type: str) -> str:
    """(ours) The protocol name of the topic of records of *record_type*: ``BLK_Rec_<record type>``.

    The name must also be a legal part of a Kafka topic name (letters, digits, ``_ . -``), and
    ``Get`` is taken by the read topic ``BLK_Rec_Get``.
    """
    name = validate_name(record_type, "record type name")
    if not _RECORD_TYPE_TOPIC_RE.fullmatch(name) or f"{RECORDS}_{name}" in DEFAULT_TOPICS:
        raise InvalidIdentifierError(
            f"Record type name {name!r} cannot name a topic: use letters, digits and _ . - (not 'Get')"
        )
    return f"{RECORDS}_{name}"


def is_record_topic(name: object) -> bool:
    """Whether *name* is the protocol name of a record topic (``BLK_Rec_<record type>``)."""
    if not isinstance(name, str) or not name.startswith(RECORDS + "_") or name in DEFAULT_TOPICS:
        return False
    return bool(_RECORD_TYPE_TOPIC_RE.fullmatch(name[len(RECORDS) + 1 :]))


def is_known_topic(name: object) -> bool:
    """Whether *name* is one of the protocol's topics or a record topic."""
    return name in DEFAULT_TOPICS or is_record_topic(name)


# --------------------------------------------------------------------------------------
# Identifiers (PROTOCOL.md section 3.5)
# --------------------------------------------------------------------------------------

PUBLIC_KEY_PATTERN = r"^0[23][0-9a-f]{64}$"
REQUEST_ID_PATTERN = r"^[0-9a-f]{32}$"
TRANSACTION_ID_PATTERN = r"^[0-9a-f]{128}$"

_PUBLIC_KEY_RE = re.compile(PUBLIC_KEY_PATTERN)
_REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def validate_public_key(value: object, what: str = "public key") -> str:
    """Return *value* if it is a compressed secp256k1 public key (66 hex, 02/03), else raise."""
    if not isinstance(value, str) or not _PUBLIC_KEY_RE.fullmatch(value):
        raise InvalidIdentifierError(
            f"Invalid {what} {_shown(value)}: expected 66 lowercase hex characters starting 02 or 03"
        )
    return value


def answered_public_key(value: object, what: str = "public key in the gateway's answer") -> str:
    """Return *value* if it is a public key (see :func:`validate_public_key`); raise
    :class:`BlockchainProtocolError` otherwise: the gateway, not our input, got it wrong."""
    try:
        return validate_public_key(value, what)
    except InvalidIdentifierError as exc:
        raise BlockchainProtocolError(str(exc)) from None


def validate_request_id(value: object, what: str = "request id") -> str:
    """Return *value* if it is a 32-hex id (partner request, order, request_id), else raise."""
    if not isinstance(value, str) or not _REQUEST_ID_RE.fullmatch(value):
        raise InvalidIdentifierError(f"Invalid {what} {_shown(value)}: expected 32 lowercase hex characters")
    return value


def validate_name(value: object, what: str) -> str:
    """Return *value* if it is a usable record/record-type/property name, else raise."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise InvalidIdentifierError(
            f"Invalid {what} {_shown(value)}: expected 1-128 characters of letters, digits and _ . : -"
        )
    return value


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def new_request_id() -> str:
    """(ours) A fresh 32-hex request id."""
    return uuid.uuid4().hex


# --------------------------------------------------------------------------------------
# Requests (PROTOCOL.md sections 1 and 3)
# --------------------------------------------------------------------------------------


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
        reserved = {"auth", "request_id"} & set(self.header)
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
        """(ours) The request id as a Kafka header, for gateways that read headers."""
        return [(REQUEST_ID_KAFKA_HEADER, self.request_id.encode("ascii"))]

    def kafka_key(self) -> bytes:
        """(ours) The request id as the message key."""
        return self.request_id.encode("ascii")


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
    header["request_id"] = validate_request_id(request_id)
    return Request(call.topic, request_id, header, call.body)


def _check_page(start: object, limit: object) -> tuple[int, int]:
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise InvalidIdentifierError(f"Invalid start {_shown(start)}: expected an integer >= 0")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
        raise InvalidIdentifierError(f"Invalid limit {_shown(limit)}: expected an integer from 1 to 10000")
    return start, limit


def list_call(topic: str, start: int, limit: int) -> Call:
    """A page of partner requests (``BLK_Part_Lst``) or order requests (``BLK_Act_Lst``)."""
    if topic not in (PARTNER_LIST, ORDER_LIST):
        raise InvalidIdentifierError(f"{topic} is not a list topic")
    start, limit = _check_page(start, limit)
    return Call(topic, {"start": start, "limit": limit})


def answer_call(topic: str, item_id: str, accept: bool) -> Call:
    """Accept or reject a partner request (``BLK_Part_Ans``) or an order (``BLK_Act_Ans``)."""
    if topic not in (PARTNER_ANSWER, ORDER_ANSWER):
        raise InvalidIdentifierError(f"{topic} is not an answer topic")
    what = "partner request id" if topic == PARTNER_ANSWER else "order request id"
    validate_request_id(item_id, what)
    if not isinstance(accept, bool):
        raise InvalidIdentifierError(f"Invalid decision {_shown(accept)}: expected True (accept) or False")
    return Call(topic, {}, {"id": item_id, "response": 1 if accept else 0})


PROPERTY_TYPES = ("STRING", "NUMBER", "BOOLEAN")


def _check_properties(properties: object) -> list[dict[str, Any]]:
    if not isinstance(properties, list | tuple) or not properties:
        raise InvalidIdentifierError("A record type needs a non-empty list of properties")
    checked = []
    seen = set()
    for prop in properties:
        if not isinstance(prop, Mapping):
            raise InvalidIdentifierError(f"Invalid property {_shown(prop)}: expected an object")
        name = validate_name(prop.get("name"), "property name")
        if name in seen:
            raise InvalidIdentifierError(f"Property {name!r} is declared twice")
        seen.add(name)
        data_type = prop.get("data_type")
        if data_type not in PROPERTY_TYPES:
            raise InvalidIdentifierError(
                f"Invalid data_type {_shown(data_type)} of property {name!r}: one of {', '.join(PROPERTY_TYPES)}"
            )
        dynamic = prop.get("dynamic", False)
        if not isinstance(dynamic, bool):
            raise InvalidIdentifierError(f"Invalid dynamic flag of property {name!r}: expected a boolean")
        checked.append({"name": name, "data_type": data_type, "dynamic": dynamic})
    return checked


def _check_values(values: object) -> list[dict[str, Any]]:
    """Property values as the record messages carry them: ``[{"name": ..., "value": ...}, ...]``.

    Accepts a mapping of name -> value (in its order) or such a list already.
    """
    if isinstance(values, Mapping):
        items = [{"name": name, "value": value} for name, value in values.items()]
    elif isinstance(values, list | tuple):
        items = list(values)
    else:
        items = []
    if not items:
        raise InvalidIdentifierError(
            "Record properties must be a non-empty list of {name, value} (or an object)"
        )
    checked = []
    seen = set()
    for item in items:
        if not isinstance(item, Mapping) or set(item) != {"name", "value"}:
            raise InvalidIdentifierError(f"Invalid property value {_shown(item)}: expected {{name, value}}")
        name = validate_name(item["name"], "property name")
        if name in seen:
            raise InvalidIdentifierError(f"Property {name!r} is given twice")
        seen.add(name)
        value = item["value"]
        if not isinstance(value, str | int | float | bool):
            raise InvalidIdentifierError(
                f"Invalid value of property {name!r}: expected a string, number or boolean"
            )
        checked.append({"name": name, "value": value})
    return checked


def _check_description(description: object) -> str:
    if not isinstance(description, str) or not description.strip() or len(description) > 1000:
        raise InvalidIdentifierError(f"Invalid description {_shown(description)}: 1-1000 characters")
    return description


#: The shortest reporter password the MES accepts; it generates much longer ones.
MIN_PASSWORD_LENGTH = 12


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
    password: str = "",
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
    elif password != "":
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


def record_type_get_call(name: str) -> Call:
    """(ours, optional) Read a record type on ``BLK_Rty_Get``; unknown names are answered ``error``."""
    return Call(RECORD_TYPE_GET, {}, {"name": validate_name(name, "record type name")})


def record_get_call(record_id: str) -> Call:
    """(ours, optional) Read a record on ``BLK_Rec_Get``; unknown ids are answered ``error``."""
    return Call(RECORD_GET, {}, {"record_id": validate_name(record_id, "record id")})


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


def agent_create_call(name: str, password: str) -> Call:
    """(ours) Create an agent (``BLK_Agt``). The answer's data holds ``public_key`` and ``token``."""
    if not isinstance(password, str) or len(password) < 12:
        raise InvalidIdentifierError("The agent password must be a string of at least 12 characters")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidIdentifierError(f"Invalid agent name {_shown(name)}: 1-200 characters")
    return Call(AGENTS, {}, {"action": "create", "name": name, "password": password})


def agent_token_call(public_key: str, password: str) -> Call:
    """(ours) Obtain a fresh token for an existing agent (``BLK_Agt``)."""
    if not isinstance(password, str) or not password:
        raise InvalidIdentifierError("The agent password is empty: set the connection's Agent password field")
    return Call(
        AGENTS, {"public_key": validate_public_key(public_key)}, {"action": "token", "password": password}
    )


def is_not_found(gateway_text: str) -> bool:
    """(ours) Whether a gateway ``error`` text means that the record or record type does not exist."""
    return "not found" in gateway_text.lower()


def next_start(start: int, received: int) -> int | None:
    """Paging (PROTOCOL.md 3.1): the ``start`` of the next page, or ``None`` after an empty page.

    A page shorter than the ``limit`` asked is not the end: a gateway may cap its pages.
    """
    return None if received == 0 else start + received


#: (ours) the most pages one listing reads (PROTOCOL.md 3.1: "a cap on the number of pages ends
#: it too"); at 500 items a page, half a million requests. A setting of the list operators.
MAX_LIST_PAGES = 1000

#: Why a listing ended other than on an empty page.
REPEATED_PAGE = "repeated"
PAGE_CAP = "cap"


def page_digest(page: list[Any]) -> str:
    """A short fingerprint of a list page, kept between pages instead of the page itself."""
    canonical = json.dumps(page, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class PageTurn:
    """What follows a page read at ``start``: the next ``start`` (``None``: the listing ends), the
    page's digest and page count to carry on, and why it ended early (``None``: it did not, or
    it ended on an empty page).

    ``repeated``: the page is the one before again (a gateway that ignores ``start``); it is not
    new, so the caller neither stores nor counts it. ``cap``: the page was the last one allowed.
    """

    start: int | None
    digest: str
    pages: int
    ended_by: str | None = None


def turn_page(
    start: int, page: list[Any], previous_digest: str | None, pages_read: int, max_pages: int = MAX_LIST_PAGES
) -> PageTurn:
    """Paging with the ends a gateway that ignores ``start`` needs (PROTOCOL.md 3.1): an empty
    page ends the listing; so does (ours) a non-empty page identical to the one before, and the
    *max_pages*-th page. *pages_read* counts the pages before this one."""
    digest = page_digest(page)
    pages = pages_read + 1
    following = next_start(start, len(page))
    if following is None:
        return PageTurn(None, digest, pages)
    if previous_digest is not None and digest == previous_digest:
        return PageTurn(None, digest, pages_read, REPEATED_PAGE)
    if pages >= max_pages:
        return PageTurn(None, digest, pages, PAGE_CAP)
    return PageTurn(following, digest, pages)


def listing_end_warning(topic: str, turn: PageTurn, start: int) -> str:
    """The warning (and alert) text of a listing that ended early, *turn* being its last page."""
    if turn.ended_by == REPEATED_PAGE:
        return (
            f"{topic}: the page at position {start} is the page before again; the gateway seems to "
            f"ignore 'start', so the listing ends after {turn.pages} page(s): items beyond them are not read"
        )
    return (
        f"{topic}: the listing ends at its cap of {turn.pages} page(s) (position {start}); "
        "items beyond it are not read"
    )


def validate_max_pages(value: object) -> int:
    """A listing's page cap: an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BlockchainConfigError(f"max_pages must be an integer >= 1, not {value!r:.40}")
    return value


#: (ours) whether the gateway answers the read topics ``BLK_Rty_Get``/``BLK_Rec_Get``: the
#: original has none, so no flow waits on a read unless the token connection's ``reads`` field
#: switches them on.
READS_DEFAULT = False


def gateway_identity(bootstrap_servers: str, master: str) -> str:
    """(ours) The gateway the MES remembers its creations under (PROTOCOL.md 3.3, "once per
    gateway"): the broker's bootstrap servers, sorted, and the master agent (its public key, else
    the token connection's id). Another cluster or another master is another gateway."""
    servers = ",".join(sorted(s.strip().lower() for s in bootstrap_servers.split(",") if s.strip()))
    return f"{servers}|{master}"[:255]


# --------------------------------------------------------------------------------------
# Responses (PROTOCOL.md sections 1 and 2)
# --------------------------------------------------------------------------------------

OutcomeKind = Literal["data", "message", "error"]
OUTCOME_KINDS: tuple[OutcomeKind, ...] = ("data", "message", "error")


@dataclass(frozen=True)
class Response:
    """A decoded ``BLK_Res`` message. ``auth`` is the token it is addressed to; ``repr`` hides it."""

    auth: str = field(repr=False)
    kind: OutcomeKind
    value: Any
    request_id: str | None = None
    public_key: str | None = None


def decode_response(raw: bytes | str | None) -> Response:
    """Decode a ``BLK_Res`` value in any of the three encodings, or raise :class:`MalformedResponseError`.

    Accepted, in this order: a JSON array; a JSON string holding a JSON array; a JSON string
    holding a Python-literal list (``True``, ``None``, quotes of either kind, apostrophes inside
    values), parsed by a literal parser. The error message never quotes the value, which may hold
    a token.
    """
    if raw is None:
        raise MalformedResponseError("empty message value")
    if isinstance(raw, bytes | bytearray):
        _check_size(len(raw))
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedResponseError("value is not UTF-8") from None
    else:
        text = raw
        _check_size(len(text))  # each character is at least one byte
        if len(text) * 4 > MAX_RESPONSE_BYTES:
            _check_size(len(text.encode("utf-8", "surrogatepass")))
    try:
        outer = _json_loads(text)
    except (ValueError, RecursionError):  # not JSON, NaN/Infinity, or an integer of over 4,300 digits
        raise MalformedResponseError("value is not JSON") from None
    if isinstance(outer, str):
        outer = _decode_inner(outer)
    return _to_response(outer)


# The Python literals the original gateway writes (``repr`` of lists, dicts, strings, numbers,
# True/False/None) have a JSON twin: rewrite the strings and the three constants, and the json
# module parses the rest, many times faster than ``ast.literal_eval``. Whatever the rewrite does
# not know (a quote that starts no string it knows, an escape repr does not write) or JSON does not
# accept (tuples, sets, Python-only number forms) goes to ``ast.literal_eval``; the two agree on
# every value both accept.
_PY_ESCAPES = r"""\\(?:[\\'"nrt]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})"""
_PY_SQ = r"""'[^'\\\x00-\x1f]*(?:ESC[^'\\\x00-\x1f]*)*'"""  # single-quoted, as repr writes most
_PY_DQ = _PY_SQ.replace("'", '"')  # double-quoted: a string with an apostrophe
_PY_REWRITE_RE = re.compile(
    "|".join((_PY_SQ, _PY_DQ)).replace("ESC", _PY_ESCAPES)
    + r"""|True|False|None|['"]"""  # a lone quote starts no string the rewrite knows
)
_PY_ESCAPE_RE = re.compile(
    r"""\\(?:([\\'"])|([nrt])|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8}))"""
)
_PY_CONSTANTS = {"True": "true", "False": "false", "None": "null"}
_PY_CONTROL = {"n": "\n", "r": "\r", "t": "\t"}


class _NotJson(ValueError):
    """The literal holds something the JSON rewrite does not handle."""


def _check_size(size: int) -> None:
    if size > MAX_RESPONSE_BYTES:
        raise MalformedResponseError(f"value of {size} bytes exceeds {MAX_RESPONSE_BYTES}")


def _no_constant(name: str) -> Any:
    # NaN, Infinity and -Infinity are neither JSON nor Python literals
    raise ValueError(f"{name} is not a value")


def _finite(text: str) -> float:
    # 1e999 is inf to float(): no more a value than Infinity
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


def _json_loads(text: str) -> Any:
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)


def mentions(raw: bytes | bytearray | None, needles: tuple[bytes, ...]) -> bool:
    """Whether *raw* holds one of *needles* (a token, a request id, in the forms
    :func:`needles_of` gives), checked before anything is decoded."""
    if not raw:
        return False
    return any(needle and needle in raw for needle in needles)


def needles_of(*values: str | None) -> tuple[bytes, ...]:
    """What an answer to a request with these tokens / request ids holds in its raw bytes: each
    value as UTF-8 and, where it differs, as JSON writes it inside a string."""
    found: list[bytes] = []
    for value in values:
        if not value:
            continue
        for form in (value, json.dumps(value)[1:-1]):
            encoded = form.encode("utf-8", "surrogatepass")
            if encoded not in found:
                found.append(encoded)
    return tuple(found)


def _unescape(match: re.Match[str]) -> str:
    quote, control, *codes = match.groups()
    if quote:
        return quote
    if control:
        return _PY_CONTROL[control]
    return chr(int(next(code for code in codes if code), 16))  # above U+10FFFF: ValueError


def _json_token(match: re.Match[str]) -> str:
    token = match.group()
    if len(token) == 1:
        raise _NotJson
    quote = token[0]
    if quote not in "'\"":
        return _PY_CONSTANTS[token]
    body = token[1:-1]
    if "\\" not in body:
        if quote == '"':
            return token  # already a JSON string
        if '"' not in body:
            return f'"{body}"'
    else:
        body = _PY_ESCAPE_RE.sub(_unescape, body)
    # not ensure_ascii: it would write two lone surrogates as an escaped pair, which JSON joins
    # into one character where the literal parser keeps two
    return json.dumps(body, ensure_ascii=False)


def _literal_as_json(text: str) -> str | None:
    """*text* with its Python strings and constants rewritten to JSON, or None when it holds a
    quote or escape the rewrite does not know."""
    try:
        return _PY_REWRITE_RE.sub(_json_token, text)
    except ValueError:  # _NotJson, or a \U escape beyond Unicode
        return None


def _decode_inner(text: str) -> Any:
    try:
        return _json_loads(text)
    except (ValueError, RecursionError):
        pass
    rewritten = _literal_as_json(text)
    if rewritten is not None:
        try:
            return _plain(_json_loads(rewritten))
        except (ValueError, RecursionError):
            pass  # well-tokenised but not well-formed: the literal parser decides
    if len(text) > MAX_SLOW_LITERAL_CHARS:
        raise MalformedResponseError(
            f"Python literal of {len(text)} characters that is not plain lists, objects, strings and "
            f"numbers exceeds {MAX_SLOW_LITERAL_CHARS}"
        )
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise MalformedResponseError("string value is neither a JSON nor a Python-literal array") from None
    return _plain(value)


def _plain(value: Any, depth: int = 0) -> Any:
    """Keep only what JSON can hold: a literal parser also yields tuples, sets, bytes, complex."""
    if depth > 64:
        raise MalformedResponseError("value is nested too deeply")
    if isinstance(value, float) and not math.isfinite(value):
        raise MalformedResponseError("value holds a number that is not finite")
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_plain(item, depth + 1) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise MalformedResponseError("an object has a non-string key")
        return {key: _plain(item, depth + 1) for key, item in value.items()}
    raise MalformedResponseError(f"value holds a {type(value).__name__}, which JSON cannot")


def _to_response(envelope: Any) -> Response:
    if not isinstance(envelope, list) or len(envelope) != 2:
        raise MalformedResponseError("value is not a list of two objects")
    header, outcome = envelope
    if not isinstance(header, dict) or not isinstance(outcome, dict):
        raise MalformedResponseError("value is not a list of two objects")
    auth = header.get("auth")
    if not isinstance(auth, str) or not auth:
        raise MalformedResponseError("response header has no auth")
    kinds = [kind for kind in OUTCOME_KINDS if kind in outcome]
    if len(kinds) != 1:
        raise MalformedResponseError("response outcome must hold exactly one of data, message, error")
    kind = kinds[0]
    request_id = header.get("request_id")
    if request_id is not None and not (isinstance(request_id, str) and _REQUEST_ID_RE.fullmatch(request_id)):
        raise MalformedResponseError("response header has an invalid request_id")
    public_key = header.get("public_key")
    if public_key is not None and not isinstance(public_key, str):
        raise MalformedResponseError("response header has an invalid public_key")
    return Response(auth=auth, kind=kind, value=outcome[kind], request_id=request_id, public_key=public_key)


#: The longest gateway error text an exception or a log line quotes.
ERROR_TEXT_MAX_LENGTH = 500


def error_text(response: Response, secrets: tuple[str | None, ...] = ()) -> str:
    """The gateway's error text as one readable line (:func:`~blockchain_provider.quoting.quote`:
    escaped, always encodable), with every run of 8 or more characters of one of *secrets*
    replaced by ``***``."""
    value = response.value
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    # redacted before the cut: what is cut off may not leave a secret's run below 8 behind
    text = redact(text[: 8 * ERROR_TEXT_MAX_LENGTH], secrets)
    return quote(text, ERROR_TEXT_MAX_LENGTH)


@dataclass(frozen=True)
class Expectation:
    """What a call's answer may be: its outcome kinds besides ``error``; for an agent call
    (``agent``), the public key asked about (``None`` when creating one).

    Anyone who can write ``BLK_Res`` can write an answer that echoes a request id: an answer is
    taken only when it fits the call it claims to answer.
    """

    kinds: tuple[OutcomeKind, ...]
    agent: bool = False
    public_key: str | None = None

    def to_primitives(self) -> dict[str, Any]:
        return {"kinds": list(self.kinds), "agent": self.agent, "public_key": self.public_key}

    @classmethod
    def from_primitives(cls, value: Mapping[str, Any] | None) -> Expectation:
        if not value:
            return ANY_ANSWER
        kinds = tuple(kind for kind in value.get("kinds", ()) if kind in ("data", "message"))
        return cls(kinds or ("data", "message"), bool(value.get("agent")), value.get("public_key") or None)


#: What an answer to a call of unknown shape may be (a trigger serialised without expectation).
ANY_ANSWER = Expectation(("data", "message"))


def expectation(call: Call) -> Expectation:
    """What *call*'s answer may be: ``data`` for a list or a read, ``message`` for a write, and
    ``data`` (the reporter) or ``message`` for the creation of a dynamic record."""
    if call.topic == AGENTS:
        return Expectation(("data",), agent=True, public_key=call.header.get("public_key") or None)
    if call.topic in (PARTNER_LIST, ORDER_LIST):
        return Expectation(("data",))
    body = call.body or {}
    if call.topic.endswith("_Get") or body.get("action") == "get":
        return Expectation(("data",))
    if _is_record_topic(call.topic) and body.get("dynamic") is True:
        return Expectation(("data", "message"))
    return Expectation(("message",))


def _is_record_topic(topic: str) -> bool:
    """Whether *topic* (a protocol name) carries record creations and updates: ``BLK_Rec`` or
    ``BLK_Rec_<record type>``, not the read topic ``BLK_Rec_Get``."""
    return topic == RECORDS or (topic.startswith(RECORDS + "_") and topic != RECORD_GET)


def same_text(a: object, b: object) -> bool:
    """Whether *a* and *b* are the same text, compared in constant time, whatever they hold."""
    return (
        isinstance(a, str)
        and isinstance(b, str)
        and hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))
    )


def fits(response: Response, token: str | None, expect: Expectation) -> bool:
    """Whether *response* can be the answer to a call with *expect*, sent with *token*.

    A non-agent answer must carry our token in ``auth`` and an outcome of the kinds the call
    takes (or ``error``). An agent answer (matched by its request id alone: no token in its
    ``auth``) must be about the public key asked for, and its data must hold a token.
    """
    if expect.agent:
        if expect.public_key is not None and response.public_key != expect.public_key:
            return False
        if response.kind == "error":
            return True
        if response.kind != "data" or not isinstance(response.value, Mapping):
            return False
        new_token = response.value.get("token")
        if not isinstance(new_token, str) or not new_token:
            return False
        if expect.public_key is None:
            return response.public_key is not None and response.value.get("public_key") == response.public_key
        return True
    if not same_text(response.auth, token):
        return False
    return response.kind == "error" or response.kind in expect.kinds
