"""The project's own choices where the gateway's documentation is silent (*(ours)* in PROTOCOL.md).

They are all here: the ``request_id`` header and its Kafka header name, the record topics'
prefix, the shapes of a property definition and of a property value in the record messages, the
empty password of a non-dynamic record, the optional read topics and messages (off unless the
connection switches them on), the agent messages, the page cap of a listing, what names a gateway
for "created once per gateway", and how a refusal says "not found". A real gateway that differs
is met by changing this module or the connection's topic overrides, not the DAGs.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from blockchain_provider.exceptions import InvalidIdentifierError
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

#: (ours) the Kafka header that carries the request id next to the envelope's header key.
REQUEST_ID_KAFKA_HEADER = "blk-request-id"

#: (ours) whether the gateway answers the read topics ``BLK_Rty_Get``/``BLK_Rec_Get``: the
#: original has none, so no flow waits on a read unless the token connection's ``reads`` field
#: switches them on.
READS_DEFAULT = False

#: (ours) the most pages one listing reads (PROTOCOL.md 3.1: "a cap on the number of pages ends
#: it too"); at 500 items a page, half a million requests. A setting of the list operators.
MAX_LIST_PAGES = 1000


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


def agent_create_call(name: str, password: str) -> Call:
    """(ours) Create an agent (``BLK_Agt``). The answer's data holds ``public_key`` and ``token``."""
    from blockchain_provider.protocol.requests import Call

    if not isinstance(password, str) or len(password) < 12:
        raise InvalidIdentifierError("The agent password must be a string of at least 12 characters")
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
