"""The answers on ``BLK_Res`` (PROTOCOL.md sections 1 and 2): ``[{"auth": T, ...}, {outcome}]`` in one
of three encodings, decoded by :func:`decode_response` without ``eval`` and without the original
client's quote replacement.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from blockchain_provider.exceptions import MalformedResponseError
from blockchain_provider.protocol.identifiers import _REQUEST_ID_RE
from blockchain_provider.protocol.ours import REQUEST_ID_HEADER
from blockchain_provider.quoting import quote, redact

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
    request_id = header.get(REQUEST_ID_HEADER)
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
