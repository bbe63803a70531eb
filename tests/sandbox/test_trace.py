"""Reading the sandbox's trace: requests of one token in flight at once, and of different tokens."""

from __future__ import annotations

import json
from pathlib import Path

from gateway_sandbox.trace import in_flight_overlaps, read_trace, requests_by_topic


def entry(token: str, received: float, answered: float) -> dict[str, object]:
    return {"token": token, "topic": "BLK_Rec_ProductionUnit", "received": received, "answered": answered}


def test_overlaps_of_one_token_and_across_tokens(tmp_path: Path) -> None:
    entries = [
        entry("a", 0.0, 1.0),
        entry("a", 1.0, 2.0),  # received as the one before was answered: not in flight at once
        entry("b", 0.5, 1.5),  # beside a's first and second
        entry("b", 1.2, 2.2),  # before b's first was answered
    ]
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps(e) + "\n" for e in reversed(entries)) + "\n")
    read = read_trace(trace)
    assert [e["received"] for e in read] == [0.0, 0.5, 1.0, 1.2]
    same_token, across = in_flight_overlaps(read)
    assert same_token == [(entries[2], entries[3])]
    assert across == {frozenset("ab")}


def test_requests_are_counted_by_topic(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    entries = [entry("a", 0.0, 1.0), {**entry("a", 1.0, 2.0), "topic": "BLK_Rty"}, entry("b", 0.5, 1.5)]
    trace.write_text("".join(json.dumps(e) + "\n" for e in entries))
    assert requests_by_topic(trace) == {"BLK_Rec_ProductionUnit": 2, "BLK_Rty": 1}


def test_no_trace_yet_is_no_entries(tmp_path: Path) -> None:
    assert read_trace(tmp_path / "missing.jsonl") == []
    assert requests_by_topic(tmp_path / "missing.jsonl") == {}
    assert in_flight_overlaps([]) == ([], set())
