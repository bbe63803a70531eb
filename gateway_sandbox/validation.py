"""What the ledger refuses before it writes: checks of incoming values, and the refusal itself.

Every check returns the value it accepted (or its normal form) and raises :class:`LedgerError`
with a readable reason otherwise. A reason quotes at most a shortened value, never a password.
The identifier patterns are the wire module's (:mod:`gateway_sandbox.wire`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from gateway_sandbox import crypto
from gateway_sandbox.wire import ITEM_ID_RE, NAME_RE, PUBLIC_KEY_RE

PROPERTY_TYPES = ("STRING", "NUMBER", "BOOLEAN")

MAX_AGENT_NAME = 200
MAX_PASSWORD = 1024
MIN_PASSWORD = 12
MAX_DESCRIPTION = 1000


class LedgerError(Exception):
    """A refusal with a human-readable reason; the gateway answers it as ``error``. Never holds a secret."""


def shown(value: object, limit: int = 40) -> str:
    """*value* as a refusal quotes it: its text, cut to *limit* characters.

    :param value: what was refused.
    :param limit: the longest text quoted; default 40.
    """
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short(key: str) -> str:
    """A public key or id shortened for messages and logs.

    :param key: the key or id.
    """
    return key[:12] + "..." if isinstance(key, str) and len(key) > 15 else str(key)


def _matching(value: object, pattern: re.Pattern[str], what: str, expected: str) -> str:
    """*value* if it is text that *pattern* matches whole; else a refusal naming *what* and *expected*."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise LedgerError(f"invalid {what} {shown(value)}: expected {expected}")
    return value


def check_public_key(value: object, what: str = "public key") -> str:
    """An agent's public key: 66 lowercase hex starting 02 or 03.

    :param value: the value to check.
    :param what: how a refusal names it; default ``"public key"``.
    """
    return _matching(value, PUBLIC_KEY_RE, what, "66 lowercase hex characters starting 02 or 03")


def check_item_id(value: object, what: str) -> str:
    """A partner request or order id: 32 lowercase hex.

    :param value: the value to check.
    :param what: how a refusal names it.
    """
    return _matching(value, ITEM_ID_RE, what, "32 lowercase hex characters")


def check_name(value: object, what: str) -> str:
    """A record type name, record id or property name: 1-128 letters, digits and ``_ . : -``.

    :param value: the value to check.
    :param what: how a refusal names it.
    """
    return _matching(value, NAME_RE, what, "1-128 letters, digits and _ . : -")


def check_description(value: object) -> str:
    """A record type's or record's description: text of at most 1000 characters.

    :param value: the value to check.
    """
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise LedgerError(f"invalid description: expected text of at most {MAX_DESCRIPTION} characters")
    return value


def check_agent_name(value: object) -> str:
    """An agent's name: 1-200 characters, not only blanks.

    :param value: the value to check.
    """
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_AGENT_NAME:
        raise LedgerError(f"invalid agent name: expected 1-{MAX_AGENT_NAME} characters")
    return value


def check_agent_password(value: object) -> str:
    """A new agent's password: 12-1024 characters.

    :param value: the value to check.
    """
    if not isinstance(value, str) or not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise LedgerError(f"invalid password: expected {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    return value


def check_reporter_password(value: object) -> str:
    """The password of a dynamic record's reporter: 1-1024 characters.

    :param value: the value to check.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_PASSWORD:
        raise LedgerError(f"a dynamic record needs its reporter's password: 1-{MAX_PASSWORD} characters")
    return value


def check_response(value: object) -> int:
    """An answer to a partner request or order: 1 (accept) or 0 (reject); ``True``/``False`` too.

    :param value: the value to check.
    """
    if value not in (0, 1) or not isinstance(value, int):
        raise LedgerError(f"invalid response {shown(value)}: expected 1 (accept) or 0 (reject)")
    return value


def check_order(
    type: object, description: object, metadata: object, files: Sequence[str]
) -> tuple[str, str, dict[str, Any], list[str]]:
    """The fields of a new order; return them with *metadata* in plain JSON form and *files* a list.

    :param type: what to produce: non-empty text.
    :param description: text.
    :param metadata: an object of plain JSON values, or ``None`` for ``{}``.
    :param files: a sequence of strings.
    """
    if not isinstance(type, str) or not type.strip():
        raise LedgerError("an order needs a non-empty type")
    if not isinstance(description, str):
        raise LedgerError("an order description must be text")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, Mapping):
        raise LedgerError("order metadata must be an object")
    if isinstance(files, str) or not all(isinstance(f, str) for f in files):
        raise LedgerError("order files must be a list of strings")
    try:
        plain = json.loads(crypto.canonical_json(dict(metadata)))
    except (TypeError, ValueError):
        raise LedgerError("order metadata must be plain JSON (no NaN or infinity)") from None
    return type, description, plain, list(files)


def check_property_declarations(properties: object) -> list[dict[str, Any]]:
    """A record type's properties: a non-empty list of ``{name, data_type, dynamic?}``; return them
    with ``dynamic`` filled in.

    :param properties: the declarations to check.
    """
    if not isinstance(properties, list) or not properties:
        raise LedgerError("a record type needs a non-empty list of properties")
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for prop in properties:
        if not isinstance(prop, Mapping):
            raise LedgerError(f"invalid property declaration {shown(prop)}: expected an object")
        name = check_name(prop.get("name"), "property name")
        if name in seen:
            raise LedgerError(f"property {name} is declared twice")
        seen.add(name)
        data_type = prop.get("data_type")
        if data_type not in PROPERTY_TYPES:
            raise LedgerError(
                f"invalid data_type {shown(data_type)} of property {name}: one of {', '.join(PROPERTY_TYPES)}"
            )
        dynamic = prop.get("dynamic", False)
        if not isinstance(dynamic, bool):
            raise LedgerError(f"invalid dynamic flag of property {name}: expected true or false")
        checked.append({"name": name, "data_type": data_type, "dynamic": dynamic})
    return checked


def check_value(record_type: str, name: str, data_type: str, value: object) -> None:
    """A property value of the declared *data_type* (a NUMBER is finite, and not a boolean).

    :param record_type: the record type, for the refusal.
    :param name: the property, for the refusal.
    :param data_type: one of :data:`PROPERTY_TYPES`.
    :param value: the value to check.
    """
    if data_type == "STRING":
        ok = isinstance(value, str)
    elif data_type == "NUMBER":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, bool)
    if not ok:
        raise LedgerError(
            f"property {name} of record type {record_type} is a {data_type}, not {shown(value)}"
        )


def check_property_values(properties: object) -> dict[str, Any]:
    """Property values as ``{name: value}``, from a list of ``{"name", "value"}`` (the wire's form,
    PROTOCOL.md 3.3) or an object.

    :param properties: the values to check.
    """
    if isinstance(properties, list) and properties:
        values: dict[str, Any] = {}
        for item in properties:
            if not isinstance(item, Mapping) or set(item) != {"name", "value"}:
                raise LedgerError(f"invalid property value {shown(item)}: expected {{name, value}}")
            name = item["name"]
            if not isinstance(name, str) or name in values:
                raise LedgerError(f"property {shown(name)} is not a name, or is given twice")
            values[name] = item["value"]
        return values
    if not isinstance(properties, Mapping) or not properties:
        raise LedgerError("record properties must be a non-empty list of {name, value}")
    return dict(properties)
