"""What the gateway sandbox's trace (``serve --trace``: a JSON line per answered request, with a
digest of its token and when it was received and answered) tells about requests in flight."""

from __future__ import annotations

from typing import Any

Entry = dict[str, Any]


def in_flight_overlaps(entries: list[Entry]) -> tuple[list[tuple[Entry, Entry]], set[frozenset[str]]]:
    """The pairs of requests of one token that were in flight at the gateway at once (the later
    received before the earlier was answered), and the pairs of tokens that had requests in
    flight at once."""
    same_token: list[tuple[Entry, Entry]] = []
    across: set[frozenset[str]] = set()
    ordered = sorted(entries, key=lambda entry: entry["received"])
    for n, earlier in enumerate(ordered):
        for later in ordered[n + 1 :]:
            if later["received"] >= earlier["answered"]:
                continue
            if later["token"] == earlier["token"]:
                same_token.append((earlier, later))
            else:
                across.add(frozenset((earlier["token"], later["token"])))
    return same_token, across
