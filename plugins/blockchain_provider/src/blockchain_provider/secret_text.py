"""A secret string (a token, a password) that nothing prints by accident."""

from __future__ import annotations

from typing import Any

__all__ = ["SecretText"]


class SecretText:
    """A secret string that ``repr``, ``str`` and f-strings never show; :meth:`reveal` returns it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "<secret>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretText) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("SecretText", self._value))

    def __reduce__(self) -> Any:  # never pickled into an XCom or a log record by accident
        raise TypeError("a SecretText is not serialisable")

    # a copy (of an operator, of a hook's settings) is the same immutable secret
    def __copy__(self) -> SecretText:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SecretText:
        return self
