"""Untrusted bytes on BLK_Res: caps, the literal parser's twin, and who decodes what where."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockchain_provider import protocol
from blockchain_provider.exceptions import MalformedResponseError
from blockchain_provider.hooks import kafka_blockchain
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from local_services.responder import ScriptedResponder, encode
from tests.provider.test_hook import paging_handler, partner


def _literal(size: int) -> str:
    """A Python literal of nested tuples of about *size* characters: costly for a literal parser."""
    unit = "((1, 2), (3, (4, 5)))"
    body = ", ".join([unit] * (size // (len(unit) + 2)))
    return "[{'auth': 'T'}, {'data': [" + body + "]}]"


def test_a_large_literal_never_reaches_the_literal_parser(monkeypatch):
    def refuse(text):
        raise AssertionError(f"literal parser called with {len(text)} characters")

    monkeypatch.setattr(protocol.decoder.ast, "literal_eval", refuse)
    raw = json.dumps(_literal(300 * 1024)).encode()
    assert len(raw) < protocol.MAX_RESPONSE_BYTES
    with pytest.raises(MalformedResponseError, match="literal"):
        protocol.decode_response(raw)


def test_a_sync_page_as_the_original_gateway_writes_it_is_read_whole():
    """A page of SYNC_PAGE_SIZE answered partner requests, in the Python-literal form of the
    original gateway, is over 256 KiB: it is an answer, not a malformed message (a cap of 256 KiB
    on literals once dropped it, and the sync timed out on every try from then on)."""
    from dags.blockchain_common.factories import SYNC_PAGE_SIZE

    item = {
        "partner_request_id": "dd0ce107bdbe5203218363bce5abd8cc",
        "issuing_agent": "03" + "d7" * 32,
        "receiving_agent": "02" + "09" * 32,
        "status": "ACCEPTED",
        "timestamp": 1796600407,
        "answer_timestamp": 1796600417,
        "transaction_ids": ["5b" * 64, "6c" * 64],
    }
    literal = repr([{"auth": "T" * 64}, {"data": [item] * SYNC_PAGE_SIZE}])
    raw = json.dumps(literal).encode()
    assert 256 * 1024 < len(raw) < protocol.MAX_RESPONSE_BYTES
    response = protocol.decode_response(raw)
    assert response.value == [item] * SYNC_PAGE_SIZE
    # the literal parser's own cap stays small: a page is read by the rewrite, never by it
    assert protocol.MAX_SLOW_LITERAL_CHARS <= 8 * 1024
    small = _literal(2 * 1024)
    assert protocol.decode_response(json.dumps(small).encode()).value[0] == [[1, 2], [3, [4, 5]]]


def test_a_literal_the_rewrite_cannot_read_reaches_the_literal_parser_only_while_small(monkeypatch):
    """Tuples are cheap to write and slow to parse: past a few KiB they are refused unparsed, so
    a message that names a waiting request cannot hold the reader for seconds."""
    calls = []
    parse = protocol.decoder.ast.literal_eval
    monkeypatch.setattr(
        protocol.decoder.ast, "literal_eval", lambda text: calls.append(len(text)) or parse(text)
    )
    assert protocol.MAX_SLOW_LITERAL_CHARS <= 8 * 1024
    large = _literal(200 * 1024).replace("'T'", "'T', 'request_id': '" + "ab" * 16 + "'")
    with pytest.raises(MalformedResponseError, match="exceeds"):
        protocol.decode_response(json.dumps(large).encode())
    assert calls == []
    protocol.decode_response(json.dumps(_literal(2 * 1024)).encode())
    assert len(calls) == 1


def test_whole_messages_are_capped_in_bytes_and_in_text():
    value = [{"auth": "T"}, {"data": ["x" * 1024] * 1100}]  # over 1 MiB of plain JSON
    raw = json.dumps(value).encode()
    with pytest.raises(MalformedResponseError, match="exceeds"):
        protocol.decode_response(raw)
    with pytest.raises(MalformedResponseError, match="exceeds"):
        protocol.decode_response(raw.decode())
    # a str counts its UTF-8 bytes, not its characters
    wide = json.dumps(
        [{"auth": "T"}, {"data": "é" * (protocol.MAX_RESPONSE_BYTES // 2 + 10)}], ensure_ascii=False
    )
    assert len(wide) < protocol.MAX_RESPONSE_BYTES
    with pytest.raises(MalformedResponseError, match="exceeds"):
        protocol.decode_response(wide)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_malformed_on_every_path(constant):
    plain = f'[{{"auth": "T"}}, {{"data": [{constant}]}}]'
    literal = f"[{{'auth': 'T'}}, {{'data': [{constant}]}}]"
    with pytest.raises(ValueError):
        ast.literal_eval(literal)
    for raw in (plain, json.dumps(plain), json.dumps(literal)):
        with pytest.raises(MalformedResponseError):
            protocol.decode_response(raw.encode())


def test_escaped_surrogate_pairs_decode_as_the_literal_parser_reads_them():
    text = "[{'auth': 'T'}, {'data': ['\\ud83d\\ude00', 'a\\ud800', \"it's \\udfff\"]}]"
    expected = ast.literal_eval(text)[1]["data"]
    assert expected[0] == "\ud83d\ude00" and len(expected[0]) == 2  # two lone surrogates, no emoji
    assert protocol.decode_response(json.dumps(text).encode()).value == expected


SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
TEXTS = st.text(st.characters(codec=None) | SURROGATES | st.sampled_from("'\"\\\n\x00"), max_size=12)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXTS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(TEXTS, children, max_size=3)
    ),
    max_leaves=15,
)


@settings(max_examples=400)
@given(VALUES)
def test_a_python_literal_decodes_exactly_as_the_literal_parser_reads_it(value):
    text = repr([{"auth": "T"}, {"data": value}])
    with contextlib.suppress(ValueError):
        json.loads(text)
        return  # valid JSON too: JSON's reading applies
    try:
        expected = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        with pytest.raises(MalformedResponseError):
            protocol.decoder._decode_inner(text)
        return
    decoded = protocol.decoder._decode_inner(text)
    assert decoded == protocol.decoder._plain(expected)
    assert repr(decoded) == repr(protocol.decoder._plain(expected))  # no surrogate pair joined, no -0.0 lost


@pytest.mark.broker
def test_the_reader_does_not_decode_what_does_not_name_us(gateway_env, monkeypatch):
    decoded = []
    decode = protocol.decode_response

    def counting(raw):
        decoded.append(raw)
        return decode(raw)

    monkeypatch.setattr(kafka_blockchain.protocol, "decode_response", counting)

    def noise(producer, topic, header):
        producer.produce(topic, json.dumps(_literal(900 * 1024)).encode())
        producer.produce(topic, encode([{"auth": "other-token"}, {"data": ["not yours"]}], "json"))
        producer.produce(topic, b"\xff\xfe garbage")
        producer.flush(5)

    items = [partner(7)]
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, paging_handler(items), before=noise):
        with KafkaBlockchainHook(timeout=10) as hook:
            assert hook.list_partner_requests() == items
            assert hook._reader.ignored == 3
    assert len(decoded) == 1
    assert gateway_env.token.encode() in decoded[0]


@pytest.mark.broker
def test_the_trigger_decodes_off_the_event_loop_and_skips_what_does_not_name_us(gateway_env, monkeypatch):
    from blockchain_provider.operators import ListPartnerRequestsOperator
    from tests.operator_runs import run_operator

    threads = []  # where the trigger decoded
    resumed = []  # where the resumed task decoded (its answer, read back from the topic)
    decode = protocol.decode_response
    waiting = threading.Event()

    def recording(raw):
        (threads if waiting.is_set() else resumed).append(threading.current_thread())
        return decode(raw)

    monkeypatch.setattr(protocol, "decode_response", recording)
    loop_threads = []
    original_run = asyncio.run

    def run(coroutine):
        async def wrapped():
            loop_threads.append(threading.current_thread())
            waiting.set()
            try:
                return await coroutine
            finally:
                waiting.clear()

        return original_run(wrapped())

    monkeypatch.setattr(asyncio, "run", run)

    def noise(producer, topic, header):
        producer.produce(topic, json.dumps(_literal(900 * 1024)).encode())
        producer.produce(topic, encode([{"auth": "other-token"}, {"data": ["not yours"]}], "json"))
        producer.flush(5)

    items = [partner(3)]
    responder = ScriptedResponder(
        gateway_env.bootstrap, gateway_env.prefix, paging_handler(items), before=noise
    )
    with responder:
        summary = run_operator(ListPartnerRequestsOperator(task_id="lp", deferrable=True))
    assert summary == {"count": 1, "by_status": {"OPEN": 1}}
    # only our answers were decoded: the page and the empty page that ends the list
    assert len(responder.seen) == 2
    assert len(threads) == len(responder.seen)
    assert loop_threads and not set(threads) & set(loop_threads)
    assert len(resumed) == len(responder.seen)
