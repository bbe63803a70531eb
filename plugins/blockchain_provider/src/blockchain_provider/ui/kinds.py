"""The kinds of request the page shows: every kind of :func:`~blockchain_provider.request_kinds.request_kinds`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException

from blockchain_provider.request_kinds import request_kinds

#: A request kind's name, as the page's routes take it (checked by :func:`known_kind`).
Kind = str


def known_kind(kind: str = "partner") -> str:
    """*kind*, when it is a configured request kind; 422 naming the kinds otherwise."""
    kinds = request_kinds()
    if kind not in kinds:
        raise HTTPException(422, f"Unknown request kind {kind!r}: one of {', '.join(kinds)}")
    return kind


KindDep = Annotated[str, Depends(known_kind)]
