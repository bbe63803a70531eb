"""The one rule deciding which request a ``BLK_Res`` message answers, as the worker's reader and
the trigger both apply it: pure, so no broker, no thread."""

from __future__ import annotations

import json

import pytest

from blockchain_provider import protocol
from blockchain_provider.answer_matcher import (
    AnswerMatcher,
    Verdict,
    Wait,
    positions_from_primitives,
    positions_to_primitives,
)
from tests.provider.test_response_reader_unit import TOKEN, answer

RID = "9df8888dea6df991f86e0e61b2379e46"
WRITE = protocol.Expectation(("message",))


def matcher(*waits: Wait) -> AnswerMatcher:
    found = AnswerMatcher("BLK_Res")
    for wait in waits:
        found.add(wait)
    return found


def test_positions_have_one_json_form():
    assert positions_to_primitives({0: 12, 3: 4}) == {"0": 12, "3": 4}
    assert positions_from_primitives({"0": 12, "3": 4}) == {0: 12, 3: 4}
    assert positions_from_primitives(positions_to_primitives({1: 7})) == {1: 7}


def test_an_echoed_request_id_is_matched_whatever_the_token_and_other_waits():
    other = protocol.new_request_id()
    m = matcher(Wait(RID, TOKEN, True), Wait(other, TOKEN, True))
    found = m.match(0, 0, answer({"data": ["mine"]}, request_id=RID))
    assert (found.verdict, found.request_id) == (Verdict.ANSWER, RID)
    assert found.response is not None and found.response.value == ["mine"]
    # echoed, it names only that request: not one with another id, whatever the token
    assert m.match(0, 1, answer({"data": []}, request_id="f" * 32)).verdict is Verdict.IGNORED


def test_without_echo_the_answer_is_matched_by_its_token():
    m = matcher(Wait(RID, TOKEN, False))
    found = m.match(0, 0, answer({"data": [1, 2]}))
    assert (found.verdict, found.request_id) == (Verdict.ANSWER, RID)
    assert m.match(0, 1, answer({"data": [1]}, token="B")).verdict is Verdict.IGNORED


def test_by_request_id_only_never_takes_an_answer_without_echo():
    m = matcher(Wait(RID, TOKEN, True))
    assert m.match(0, 0, answer({"data": [1]})).verdict is Verdict.IGNORED
    assert m.ignored == 1  # the token is no needle of a request matched by id: not even decoded


def test_an_agent_request_without_token_is_matched_by_id_alone():
    m = matcher(Wait(RID, None, False))
    assert m.match(0, 0, answer({"data": [1]}, token="anyone")).verdict is Verdict.IGNORED


def test_foreign_and_malformed_answers_are_set_aside_and_counted():
    m = matcher(Wait(RID, TOKEN, False))
    assert m.match(0, 0, answer({"data": ["not ours"]}, token="another-token")).verdict is Verdict.IGNORED
    malformed = m.match(0, 1, b"\xff\xfe garbage " + TOKEN.encode())
    assert malformed.verdict is Verdict.MALFORMED
    assert malformed.warning is not None and "BLK_Res[0]@1: value is not UTF-8" in malformed.warning
    assert m.match(0, 2, answer({"data": ["ours"]})).verdict is Verdict.ANSWER
    assert (m.ignored, m.malformed) == (1, 1)


def test_an_answer_before_the_start_positions_is_not_taken_by_token():
    m = matcher(Wait(RID, TOKEN, False, start_positions={0: 1}))
    assert m.match(0, 0, answer({"data": ["an earlier request's"]})).verdict is Verdict.UNCLAIMED
    assert m.skipped == 1
    assert m.match(0, 1, answer({"data": ["ours"]})).verdict is Verdict.ANSWER


@pytest.mark.parametrize(
    ("outcome", "token", "why"),
    [
        ({"data": ["forged"]}, "another-token", "addressed to another token"),
        ({"data": ["wrong kind"]}, TOKEN, "a list answer to a write"),
    ],
)
def test_an_answer_that_names_our_request_but_does_not_fit_it_is_set_aside(outcome, token, why):
    m = matcher(Wait(RID, TOKEN, True, expect=WRITE))
    found = m.match(0, 0, answer(outcome, token=token, request_id=RID))
    assert found.verdict is Verdict.FORGED, why
    assert found.warning is not None and f"names request {RID} but does not fit it" in found.warning
    assert m.forged == 1
    assert m.match(0, 1, answer({"message": "done"}, request_id=RID)).verdict is Verdict.ANSWER


def test_a_request_that_stops_waiting_takes_nothing():
    m = matcher(Wait(RID, TOKEN, False))
    m.remove(RID)
    assert m.match(0, 0, answer({"data": ["unclaimed"]})).verdict is Verdict.IGNORED
    assert m.waiting() == [] and m.needles == ()


def _raw(header: dict, outcome: dict) -> bytes:
    return json.dumps([header, outcome]).encode()


#: Messages anyone can write to ``BLK_Res``; each names our request or holds our token.
HOSTILE = {
    "surrogate auth, no echo": _raw({"auth": "\ud800" + TOKEN}, {"data": []}),
    "surrogate auth, echoed id": _raw({"auth": "\udfff", "request_id": RID}, {"data": []}),
    "surrogate request_id": _raw({"auth": TOKEN, "request_id": RID + "\ud800"}, {"data": []}),
    "raw surrogate bytes": b'[{"auth": "' + TOKEN.encode() + b'\xed\xa0\x80"}, {"data": []}]',
    "NUL": _raw({"auth": TOKEN + "\x00", "request_id": RID}, {"data": ["\x00"]}),
    "invalid UTF-8": b"\xc3\x28" + RID.encode(),
    "1 MiB literal": json.dumps(repr([{"auth": TOKEN}, {"data": ["x" * (1024 * 1024)]}])).encode(),
    "wrong types": _raw({"auth": 5, "request_id": 7}, {"data": RID}),
    "header not an object": json.dumps([RID, {"data": []}]).encode(),
    "not bytes": RID,
    "None": None,
}


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("echo", [True, False])
def test_no_message_makes_the_matcher_raise_nor_take_it(name, echo):
    m = matcher(Wait(RID, TOKEN, echo, expect=WRITE))
    found = m.match(0, 0, HOSTILE[name])
    assert found.verdict is not Verdict.ANSWER, name
    assert m.ignored + m.malformed + m.skipped + m.forged == 1
    assert m.match(0, 1, answer({"message": "done"}, request_id=RID)).request_id == RID


def test_a_failure_the_decoder_does_not_foresee_is_counted_as_malformed(monkeypatch):
    m = matcher(Wait(RID, TOKEN, False))

    def failing(value):
        raise RuntimeError("a failure the decoder does not foresee")

    monkeypatch.setattr(protocol, "decode_response", failing)
    found = m.match(0, 0, answer({"data": []}))
    assert found.verdict is Verdict.MALFORMED and m.malformed == 1
    assert found.warning is not None and "unreadable (RuntimeError)" in found.warning


def test_warnings_are_rate_limited():
    m = matcher(Wait(RID, TOKEN, True))
    warned = [m.match(0, i, b"{" + RID.encode()).warning is not None for i in range(200)]
    assert warned[:10] == [True] * 10 and sum(warned) == 12  # then the 100th and the 200th
