"""The kinds of request the page shows: every kind of :func:`~blockchain_provider.request_kinds.request_kinds`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, status

from blockchain_provider.configured import ConfiguredObjectError
from blockchain_provider.request_kinds import RequestKind, request_kinds
from blockchain_provider.ui.auth import UserDep


def page_kinds() -> dict[str, RequestKind]:
    """The configured kinds; 503 naming the option when ``[blockchain] request_kinds`` is broken."""
    try:
        return request_kinds()
    except ConfiguredObjectError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None


def known_kind(user: UserDep, kind: str = "partner") -> str:
    """*kind*, when it is a configured request kind; 422 naming the kinds otherwise. The caller
    is signed in first (401 before anything is said of the kinds)."""
    kinds = page_kinds()
    if kind not in kinds:
        raise HTTPException(422, f"Unknown request kind {kind!r}: one of {', '.join(kinds)}")
    return kind


KindDep = Annotated[str, Depends(known_kind)]
