"""What the gateway sandbox's trace (``serve --trace``: a JSON line per answered request, with a
digest of its token and when it was received and answered) tells about requests in flight, and
how many of each topic there were."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["Entry", "in_flight_overlaps", "read_trace", "requests_by_topic"]

Entry = dict[str, Any]


def read_trace(path: Path) -> list[Entry]:
    """The entries of the trace at *path* in the order the sandbox read their requests (none
    before the sandbox has answered anything)."""
    lines = path.read_text().splitlines() if path.exists() else []
    return sorted((json.loads(line) for line in lines if line.strip()), key=lambda entry: entry["received"])


def requests_by_topic(path: Path) -> Counter[str]:
    """How many requests of each protocol topic the trace at *path* holds."""
    return Counter(entry["topic"] for entry in read_trace(path))


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
