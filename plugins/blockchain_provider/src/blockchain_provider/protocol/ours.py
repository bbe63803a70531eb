"""The project's own choices where the gateway's documentation is silent (*(ours)* in PROTOCOL.md).

They are all here: the ``request_id`` header key, the request id as the Kafka message key and
header, the record topics' prefix, the shapes of a property definition and of a property value in
the record messages, the empty password of a non-dynamic record, the optional read topics and
messages (off unless the connection switches them on), the agent messages, the ends of a listing
besides the empty page (a repeated page, the page cap), what names a gateway for "created once
per gateway", and how a refusal says "not found". A real gateway that differs is met by changing
this module or the connection's topic overrides, not the DAGs.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from blockchain_provider.exceptions import BlockchainConfigError, InvalidIdentifierError
from blockchain_provider.protocol.identifiers import _shown, validate_name, validate_public_key

if TYPE_CHECKING:
    # the read and agent calls build a Call, imported when they are called: requests imports this
    from blockchain_provider.protocol.requests import Call


#: (ours) the base of the record topics: a record of type N travels on ``BLK_Rec_N``
#: (:func:`record_topic`). Overriding this name moves every record topic; a ``BLK_Rec_N`` override
#: moves one. No message is sent on the base topic itself.
RECORDS = "BLK_Rec"
#: (ours) the optional read topics; no flow needs them.
RECORD_TYPE_GET = "BLK_Rty_Get"
RECORD_GET = "BLK_Rec_Get"
#: (ours) the agents' topic (PROTOCOL.md 3.4).
AGENTS = "BLK_Agt"
#: (ours) a non-dynamic record's password: it has no reporter, and can never be updated.
NON_DYNAMIC_PASSWORD = ""

#: (ours) the envelope's header key of the request id, which a gateway that correlates echoes in
#: its answer's header.
REQUEST_ID_HEADER = "request_id"
#: (ours) the Kafka header that carries the request id next to the envelope's header key; the
#: message key carries it too (:func:`request_id_kafka_key`).
REQUEST_ID_KAFKA_HEADER = "blk-request-id"
#: (ours) a record of type N travels on ``BLK_Rec_N``.
RECORD_TOPIC_PREFIX = RECORDS + "_"
#: The shortest reporter or agent password the MES accepts; it generates much longer ones.
MIN_PASSWORD_LENGTH = 12

#: (ours) whether the gateway answers the read topics ``BLK_Rty_Get``/``BLK_Rec_Get``: the
#: original has none, so no flow waits on a read unless the token connection's ``reads`` field
#: switches them on.
READS_DEFAULT = False

#: (ours) the most pages one listing reads (PROTOCOL.md 3.1: "a cap on the number of pages ends
#: it too"); at 500 items a page, half a million requests. A setting of the list operators.
MAX_LIST_PAGES = 1000


def request_id_kafka_key(request_id: str) -> bytes:
    """(ours) The request id as the message key."""
    return request_id.encode("ascii")


def request_id_kafka_headers(request_id: str) -> list[tuple[str, bytes]]:
    """(ours) The request id as a Kafka header, for gateways that read headers."""
    return [(REQUEST_ID_KAFKA_HEADER, request_id.encode("ascii"))]


def new_request_id() -> str:
    """(ours) A fresh 32-hex request id."""
    return uuid.uuid4().hex


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


def is_not_found(gateway_text: str) -> bool:
    """(ours) Whether a gateway ``error`` text means that the record or record type does not exist."""
    return "not found" in gateway_text.lower()


def gateway_identity(bootstrap_servers: str, master: str) -> str:
    """(ours) The gateway the MES remembers its creations under (PROTOCOL.md 3.3, "once per
    gateway"): the broker's bootstrap servers, sorted, and the master agent (its public key, else
    the token connection's id). Another cluster or another master is another gateway."""
    servers = ",".join(sorted(s.strip().lower() for s in bootstrap_servers.split(",") if s.strip()))
    return f"{servers}|{master}"[:255]


def record_type_get_call(name: str) -> Call:
    """(ours, optional) Read a record type on ``BLK_Rty_Get``; unknown names are answered ``error``."""
    from blockchain_provider.protocol.requests import Call

    return Call(RECORD_TYPE_GET, {}, {"name": validate_name(name, "record type name")})


def record_get_call(record_id: str) -> Call:
    """(ours, optional) Read a record on ``BLK_Rec_Get``; unknown ids are answered ``error``."""
    from blockchain_provider.protocol.requests import Call

    return Call(RECORD_GET, {}, {"record_id": validate_name(record_id, "record id")})


def record_holds(record: Any, updates: Mapping[str, Any]) -> bool:
    """(ours, optional) Whether *record*, a ``BLK_Rec_Get`` answer's data, holds every value of
    *updates* already; anything else than a record with its properties is no."""
    current = record.get("properties") if isinstance(record, dict) else None
    return isinstance(current, dict) and all(current.get(k) == v for k, v in updates.items())


def agent_create_call(name: str, password: str) -> Call:
    """(ours) Create an agent (``BLK_Agt``). The answer's data holds ``public_key`` and ``token``."""
    from blockchain_provider.protocol.requests import Call

    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidIdentifierError(
            f"The agent password must be a string of at least {MIN_PASSWORD_LENGTH} characters"
        )
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidIdentifierError(f"Invalid agent name {_shown(name)}: 1-200 characters")
    return Call(AGENTS, {}, {"action": "create", "name": name, "password": password})


def agent_token_call(public_key: str, password: str) -> Call:
    """(ours) Obtain a fresh token for an existing agent (``BLK_Agt``)."""
    from blockchain_provider.protocol.requests import Call

    if not isinstance(password, str) or not password:
        raise InvalidIdentifierError("The agent password is empty: set the connection's Agent password field")
    return Call(
        AGENTS, {"public_key": validate_public_key(public_key)}, {"action": "token", "password": password}
    )


# Paging (PROTOCOL.md 3.1): an empty page ends a listing (the sources); so do (ours) a page
# identical to the one before (a gateway that ignores start) and the page cap.


def next_start(start: int, received: int) -> int | None:
    """Paging (PROTOCOL.md 3.1): the ``start`` of the next page, or ``None`` after an empty page.

    A page shorter than the ``limit`` asked is not the end: a gateway may cap its pages.
    """
    return None if received == 0 else start + received


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
