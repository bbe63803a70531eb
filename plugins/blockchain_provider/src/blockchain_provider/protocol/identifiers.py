"""Identifiers (PROTOCOL.md section 3.5): public keys, request ids, names; their checks."""

from __future__ import annotations

import re

from blockchain_provider.exceptions import BlockchainProtocolError, InvalidIdentifierError

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
