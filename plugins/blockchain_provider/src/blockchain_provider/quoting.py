"""Text from outside (the ledger, the gateway) as a log line, an alert or an error message quotes it.

One rule for every place that quotes such text: :func:`quote` gives one line whose control,
format and separator characters are escaped, whose line breaks and runs of white space are one
space, and whose length is capped; :func:`redact` removes what it holds of a secret first.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["QUOTE_MAX_LENGTH", "SECRET_RUN", "quote", "redact"]

#: The longest quote, unless the caller asks for another cap.
QUOTE_MAX_LENGTH = 200
#: A secret's characters that may not appear in a row in a quoted text.
SECRET_RUN = 8

_WHITESPACE = re.compile(r"\s+")
# what a terminal or a viewer acts on or hides: C0, DEL, C1, format characters (bidi overrides,
# zero-width characters), line and paragraph separators, private-use, unassigned and lone surrogates
_ESCAPED = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def _escaped(char: str, backslash: bool = True) -> str:
    if char == "\\":
        return "\\\\" if backslash else char
    if unicodedata.category(char) not in _ESCAPED:
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def quote(text: object, limit: int = QUOTE_MAX_LENGTH, *, backslash: bool = True) -> str:
    """*text* (``str()`` of it) as one line of at most *limit* characters.

    Line breaks and runs of white space become one space; a backslash and every character a
    terminal or a viewer would act on or hide (``\\x1b``, ``\\u202e``, a lone surrogate...) are
    escaped as Python writes them, so nothing is lost and the result is always encodable. A
    longer result ends with ``...``.

    :param backslash: escape a backslash too (default); ``False`` for a text whose quoted parts
        were quoted already (an alert's lines), which would otherwise show them escaped twice.
    """
    line = _WHITESPACE.sub(" ", str(text)).strip()
    # at most the characters that can be shown: escaping only lengthens
    shown = "".join(_escaped(char, backslash) for char in line[: limit + 1])
    return shown if len(shown) <= limit else shown[: max(limit - 3, 0)] + "..."


def redact(text: str, secrets: tuple[str | None, ...], mask: str = "***") -> str:
    """*text* with every run of :data:`SECRET_RUN` or more characters of one of *secrets* (a
    prefix, a middle, the whole) replaced by *mask*."""
    covered = [False] * len(text)
    for secret in secrets:
        if not secret or len(secret) < SECRET_RUN:
            if secret:  # a short secret: only its exact occurrences
                for match in re.finditer(re.escape(secret), text):
                    covered[match.start() : match.end()] = [True] * len(secret)
            continue
        pieces = {secret[i : i + SECRET_RUN] for i in range(len(secret) - SECRET_RUN + 1)}
        for start in range(len(text) - SECRET_RUN + 1):
            if text[start : start + SECRET_RUN] in pieces:
                covered[start : start + SECRET_RUN] = [True] * SECRET_RUN
    if not any(covered):
        return text
    out: list[str] = []
    for index, char in enumerate(text):
        if not covered[index]:
            out.append(char)
        elif index == 0 or not covered[index - 1]:
            out.append(mask)
    return "".join(out)
