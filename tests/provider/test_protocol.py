"""The wire format, without a broker."""

from __future__ import annotations

import ast
import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockchain_provider import protocol
from blockchain_provider.exceptions import (
    BlockchainProtocolError,
    InvalidIdentifierError,
    MalformedResponseError,
)

TOKEN = "s3cr3t-token"
RID = "0123456789abcdef0123456789abcdef"
ITEMS = [{"note": "Operator's note", "ok": True, "nothing": None, "n": 3, "x": 1.5, "l": ["a"]}]


def as_json(envelope):
    return json.dumps(envelope).encode()


def as_json_string(envelope):
    return json.dumps(json.dumps(envelope)).encode()


def as_python_literal(envelope):
    return json.dumps(repr(envelope)).encode()


@pytest.mark.parametrize("encode", [as_json, as_json_string, as_python_literal])
def test_decodes_the_three_encodings_with_apostrophes_true_and_none(encode):
    response = protocol.decode_response(encode([{"auth": TOKEN}, {"data": ITEMS}]))
    assert response.kind == "data"
    assert response.value == ITEMS
    assert response.auth == TOKEN
    assert response.request_id is None


def test_python_literal_with_double_quoted_values_and_request_id():
    raw = json.dumps(
        "[{'auth': 'T', 'request_id': '" + RID + "'}, {'message': \"Partner's request accepted\"}]"
    )
    response = protocol.decode_response(raw.encode())
    assert (response.kind, response.value, response.request_id) == (
        "message",
        "Partner's request accepted",
        RID,
    )


def test_the_seeds_quote_replacement_would_corrupt_what_we_decode():
    raw = as_python_literal([{"auth": "T"}, {"data": [{"description": "Operator's note"}]}])
    with pytest.raises(json.JSONDecodeError):
        json.loads(json.loads(raw).replace("'", '"'))
    assert protocol.decode_response(raw).value == [{"description": "Operator's note"}]


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe not utf-8",
        b"not json",
        b"{}",
        b'"just a string"',
        as_json([{"auth": "T"}]),
        as_json([{"auth": "T"}, {"data": 1}, {}]),
        as_json([{"no_auth": "T"}, {"data": 1}]),
        as_json([{"auth": ""}, {"data": 1}]),
        as_json([{"auth": "T"}, {"nothing": 1}]),
        as_json([{"auth": "T"}, {"data": 1, "error": "x"}]),
        as_json([{"auth": "T", "request_id": "short"}, {"data": 1}]),
        json.dumps("[{'auth': 'T'}, {'data': {1, 2}}]").encode(),
        json.dumps("[{'auth': 'T'}, {'data': __import__('os')}]").encode(),
        json.dumps("[{'auth': 'T'}, {'data': b'bytes'}]").encode(),
        b'[{"auth": "T"}, {"data": ' + b"9" * 5000 + b"}]",  # beyond Python's integer parsing limit
        json.dumps("[{'auth': 'T'}, {'data': " + "9" * 5000 + "}]").encode(),
        None,
    ],
)
def test_malformed_values_are_refused_without_quoting_them(raw):
    with pytest.raises(MalformedResponseError) as info:
        protocol.decode_response(raw)
    assert "T'" not in str(info.value)


def test_deeply_nested_literal_is_refused():
    raw = json.dumps("[{'auth': 'T'}, {'data': " + "[" * 5000 + "]" * 5000 + "}]").encode()
    with pytest.raises(MalformedResponseError):
        protocol.decode_response(raw)


JSON_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(JSON_LIKE)
def test_python_literals_take_the_json_rewrite_and_decode_as_the_literal_parser_does(value):
    text = repr(value)
    assert protocol.decoder._literal_as_json(text) is not None  # the fast path, not the literal parser
    assert protocol.decoder._decode_inner(text) == ast.literal_eval(text)


LITERAL_PIECES = [
    *"'\"\\[]{},: -.eE0x/\t\x01é😀",
    "'a'", '"b"', "'it\\'s'", '"q\\"q"', "\\x41", "\\u00e9", "\\U0001F600", "\\U00110000",
    "\\n", "\\'", '\\"', "\\\\", "\\/", "\\a", "True", "False", "None", "true", "null",
    "NaN", "12", "-3.5e2", "1_0", "0x1F", ".5", "()", "u", "b", "#",
]  # fmt: skip


#: what may stand between the quotes of a Python string literal: plain text, non-ASCII, the
#: escapes Python and JSON both read (the rewrite's common case, weighted up), and rarer ones it
#: leaves to the literal parser: control characters, escapes JSON lacks or reads otherwise
STRING_PIECES = [
    *["a", "it", " ", "é", "😀", "/", "\\\\", "\\n", "\\t", "\\x41", "\\u00e9", "\\U0001F600", "\\'", '\\"'] * 6,
    "\t", "\x01", "\\/", "\\a", "\\0", "\\N{BULLET}", "\\U00110000",
]  # fmt: skip


def quoted(quote: str) -> st.SearchStrategy[str]:
    body = st.lists(st.sampled_from([*STRING_PIECES, "'" if quote == '"' else '"']), max_size=6)
    return body.map(lambda parts: quote + "".join(parts) + quote)


KEYS = quoted("'") | quoted('"')
SEPARATORS = st.sampled_from([", ", ",", " , "])

#: Python literals as the gateway may write them: strings in either quote, every number
#: spelling, True/False/None, nested lists and dicts (string keys, as the gateway's), the spacing
#: varied; mostly ones the JSON rewrite takes, so that the comparison below is reached
LITERALS = st.recursive(
    KEYS
    | st.sampled_from(["True", "False", "None", "12", "-3.5e2", "1_0", "0x1F", ".5", "-0", "1e400", "0.1"])
    | st.integers().map(str)
    | st.floats(allow_nan=False, allow_infinity=False).map(repr),
    lambda children: (
        st.tuples(SEPARATORS, st.lists(children, max_size=3)).map(lambda t: "[" + t[0].join(t[1]) + "]")
        | st.tuples(SEPARATORS, st.lists(st.tuples(KEYS, children), max_size=3)).map(
            lambda t: "{" + t[0].join(f"{key}: {value}" for key, value in t[1]) + "}"
        )
    ),
    max_leaves=8,
)


@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")
@settings(max_examples=1000)  # about a third reach the comparison
@given(LITERALS | st.lists(st.sampled_from(LITERAL_PIECES), max_size=12).map("".join))
def test_the_json_rewrite_never_decodes_a_literal_differently(text):
    rewritten = protocol.decoder._literal_as_json(text)
    if rewritten is None:
        return  # the literal parser decides, as before
    try:
        fast = json.loads(rewritten)
    except (ValueError, RecursionError):
        return
    try:
        expected = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return  # JSON's own true/null/NaN, which the literal parser does not know
    assert fast == expected and type(fast) is type(expected)


@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")
def test_python_literal_escapes_decode_as_python_reads_them():
    text = repr([{"auth": "T"}, {"data": ['it\'s "quoted"', "tab\tnew\nline\\", "\x07\x00é😀\ud800"]}])
    assert protocol.decode_response(json.dumps(text).encode()).value == ast.literal_eval(text)[1]["data"]
    # an escape repr never writes still goes to the literal parser, and means what Python says
    assert protocol.decoder._literal_as_json("['a\\/b']") is None
    assert protocol.decoder._decode_inner("['a\\/b']") == ["a\\/b"]


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_another_exception(raw):
    with contextlib.suppress(MalformedResponseError):
        protocol.decode_response(raw)


def test_envelope_of_a_list_request_matches_the_seed_plus_request_id():
    request = protocol.envelope(protocol.list_call(protocol.PARTNER_LIST, 0, 10), RID, TOKEN)
    assert json.loads(request.encode()) == [{"auth": TOKEN, "start": 0, "limit": 10, "request_id": RID}]
    assert request.kafka_headers() == [("blk-request-id", RID.encode())]
    assert request.kafka_key() == RID.encode()
    assert TOKEN not in repr(request)


def test_answer_and_record_bodies():
    pid = "9df8888dea6df991f86e0e61b2379e46"
    answer = protocol.envelope(protocol.answer_call(protocol.ORDER_ANSWER, pid, False), RID, TOKEN)
    assert json.loads(answer.encode())[1] == {"id": pid, "response": 0}


PROPS = [
    {"name": "Code", "data_type": "STRING", "dynamic": False},
    {"name": "Status", "data_type": "STRING", "dynamic": True},
]


def test_record_type_message_is_exactly_the_long_sources():
    request = protocol.envelope(
        protocol.record_type_create_call("ProductionUnit", "Units", PROPS), RID, TOKEN
    )
    assert request.topic == "BLK_Rty"
    assert json.loads(request.encode()) == [
        {"auth": TOKEN, "isRecord": False, "request_id": RID},
        {"name": "ProductionUnit", "description": "Units", "properties": PROPS},
    ]


def test_record_messages_are_exactly_the_long_sources():
    indicator = protocol.record_create_call(
        "614f24586a93d2db8f59b323_101", "DayReportIndicator", "d", {"Value": 0.9}
    )
    assert indicator.topic == "BLK_Rec_DayReportIndicator"
    assert json.loads(protocol.envelope(indicator, RID, TOKEN).encode()) == [
        {"auth": TOKEN, "isRecord": True, "request_id": RID},
        {
            "record_id": "614f24586a93d2db8f59b323_101",
            "record_type": "DayReportIndicator",
            "description": "d",
            "dynamic": False,
            "password": "",
            "properties": [{"name": "Value", "value": 0.9}],
        },
    ]
    unit = protocol.record_create_call(
        "PU_PT10",
        "ProductionUnit",
        "PT10",
        {"Code": "PT10", "Status": "IDLE"},
        dynamic=True,
        password="p" * 43,
    )
    assert unit.topic == "BLK_Rec_ProductionUnit"
    header, body = json.loads(protocol.envelope(unit, RID, TOKEN).encode())
    assert header == {"auth": TOKEN, "isRecord": True, "request_id": RID}
    assert (body["dynamic"], body["password"]) == (True, "p" * 43)
    assert body["properties"] == [{"name": "Code", "value": "PT10"}, {"name": "Status", "value": "IDLE"}]
    assert "p" * 43 not in repr(unit) and "p" * 43 not in repr(protocol.envelope(unit, RID, TOKEN))
    update = protocol.envelope(
        protocol.record_update_call("ProductionUnit", "PU_PT10", {"Status": "RUNNING"}), RID, "RT"
    )
    assert update.topic == "BLK_Rec_ProductionUnit"
    assert json.loads(update.encode()) == [
        {"auth": "RT", "isRecord": False, "request_id": RID},
        {"record_id": "PU_PT10", "properties": [{"name": "Status", "value": "RUNNING"}]},
    ]


def test_reads_go_on_their_own_topics():
    assert json.loads(protocol.envelope(protocol.record_type_get_call("T"), RID, TOKEN).encode()) == [
        {"auth": TOKEN, "request_id": RID},
        {"name": "T"},
    ]
    assert protocol.record_type_get_call("T").topic == "BLK_Rty_Get"
    assert protocol.record_get_call("R1").topic == "BLK_Rec_Get"
    assert dict(protocol.record_get_call("R1").body) == {"record_id": "R1"}


def test_record_topics_follow_the_base_topics_override():
    topics = protocol.TopicMap({"BLK_Rec": "p_BLK_Rec", "BLK_Rec_ProductionUnit": "units"})
    assert topics["BLK_Rec_DayReportIndicator"] == "p_BLK_Rec_DayReportIndicator"
    assert topics["BLK_Rec_ProductionUnit"] == "units"
    assert protocol.TopicMap()["BLK_Rec_DayReportIndicator"] == "BLK_Rec_DayReportIndicator"
    with pytest.raises(InvalidIdentifierError, match="Get"):
        protocol.record_topic("Get")


def test_reporter_answer_is_read_and_its_token_hidden():
    pk = "02" + "ab" * 32
    reporter = protocol.reporter_from_answer(
        {"record_id": "PU_PT10", "public_key": pk, "token": "RT"}, "PU_PT10"
    )
    assert (reporter.public_key, reporter.token) == (pk, "RT")
    assert "RT" not in repr(reporter)
    with pytest.raises(MalformedResponseError, match="no reporter token"):
        protocol.reporter_from_answer({"public_key": pk}, "PU_PT10")
    # the gateway's answer is wrong, not our input: a protocol error, not an invalid argument
    with pytest.raises(BlockchainProtocolError, match="reporter public key") as info:
        protocol.reporter_from_answer({"public_key": "x", "token": "RT"}, "PU_PT10")
    assert not isinstance(info.value, InvalidIdentifierError)


def test_paging_stops_at_an_empty_page_only():
    assert protocol.next_start(0, 5) == 5
    assert protocol.next_start(5, 3) == 8  # a short page is not the end
    assert protocol.next_start(8, 0) is None


def test_agent_requests_carry_no_auth():
    create = protocol.envelope(protocol.agent_create_call("MES", "a-long-password"), RID, None)
    assert json.loads(create.encode()) == [
        {"request_id": RID},
        {"action": "create", "name": "MES", "password": "a-long-password"},
    ]
    pk = "03" + "1f" * 32
    token = protocol.envelope(protocol.agent_token_call(pk, "a-long-password"), RID, None)
    assert json.loads(token.encode())[0] == {"public_key": pk, "request_id": RID}
    assert "a-long-password" not in repr(token)


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: protocol.answer_call(protocol.PARTNER_ANSWER, "XYZ", True), "partner request id"),
        (lambda: protocol.answer_call(protocol.ORDER_ANSWER, "ab" * 16, "yes"), "decision"),
        (lambda: protocol.list_call(protocol.ORDER_LIST, -1, 10), "start"),
        (lambda: protocol.list_call(protocol.ORDER_LIST, 0, 0), "limit"),
        (
            lambda: protocol.record_type_create_call("T", "d", [{"name": "a", "data_type": "DATE"}]),
            "data_type",
        ),
        (
            lambda: protocol.record_type_create_call("T", "", [{"name": "a", "data_type": "STRING"}]),
            "description",
        ),
        (lambda: protocol.record_create_call("R 1", "T", "d", {"a": 1}), "record id"),
        (
            lambda: protocol.record_create_call("R1", "T", "d", {"a": 1}, dynamic=True, password="short"),
            "password",
        ),
        (lambda: protocol.record_create_call("R1", "T", "d", {"a": 1}, password="x" * 20), "password"),
        (lambda: protocol.record_create_call("R1", "T:x", "d", {"a": 1}), "cannot name a topic"),
        (lambda: protocol.record_update_call("T", "R1", {"a": [1]}), "property 'a'"),
        (lambda: protocol.Call("BLK_Rec"), "request topic"),
        (lambda: protocol.agent_create_call("MES", "short"), "password"),
        (lambda: protocol.Call("BLK_Res"), "request topic"),
        (lambda: protocol.Call("BLK_Part_Lst", {"auth": "x"}), "auth"),
        (lambda: protocol.envelope(protocol.list_call(protocol.PARTNER_LIST, 0, 1), RID, ""), "token"),
    ],
)
def test_bad_input_names_the_input(make, named):
    with pytest.raises(InvalidIdentifierError, match=named):
        make()


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("02" + "a" * 64, True),
        ("03" + "0" * 64, True),
        ("04" + "a" * 64, False),
        ("02" + "a" * 63, False),
        ("02" + "A" * 64, False),
        (None, False),
    ],
)
def test_public_key_format(value, ok):
    if ok:
        assert protocol.validate_public_key(value) == value
    else:
        with pytest.raises(InvalidIdentifierError):
            protocol.validate_public_key(value)


@given(st.text(max_size=40))
def test_request_id_validation_accepts_exactly_32_lowercase_hex(value):
    valid = len(value) == 32 and all(c in "0123456789abcdef" for c in value)
    try:
        protocol.validate_request_id(value)
        assert valid
    except InvalidIdentifierError:
        assert not valid


def test_topic_overrides():
    topics = protocol.TopicMap.parse('{"BLK_Act_Lst": "BLK_ACT_Lst"}')
    assert topics["BLK_Act_Lst"] == "BLK_ACT_Lst"
    assert topics.responses == "BLK_Res"
    with pytest.raises(InvalidIdentifierError, match="BLK_Nope"):
        protocol.TopicMap.parse({"BLK_Nope": "x"})
    with pytest.raises(InvalidIdentifierError, match="JSON"):
        protocol.TopicMap.parse("{not json")


def test_error_text_redacts_secrets():
    response = protocol.Response(auth="A", kind="error", value=f"unknown token {TOKEN}\n  here")
    assert protocol.error_text(response, (TOKEN,)) == "unknown token *** here"


LONG_TOKEN = "tok_4f9a2c7e1b8d3f6a0c5e9b2d7f1a4c8e"


@pytest.mark.parametrize(
    "quoted",
    [
        LONG_TOKEN[:8],  # a prefix the gateway cut
        LONG_TOKEN[5:19],  # a middle
        LONG_TOKEN[-9:],  # a suffix
        LONG_TOKEN + "x",
    ],
)
def test_error_text_removes_every_run_of_eight_characters_of_a_secret(quoted):
    response = protocol.Response(auth="A", kind="error", value=f"bad token '{quoted}' refused")
    text = protocol.error_text(response, (LONG_TOKEN, "agent-password-1234"))
    assert "***" in text
    for start in range(len(LONG_TOKEN) - 7):
        assert LONG_TOKEN[start : start + 8] not in text
    assert text.startswith("bad token '***") and text.endswith("refused")


def test_error_text_escapes_losslessly_and_is_always_encodable():
    response = protocol.Response(auth="A", kind="error", value="bad \ud800 \x1b]0;x\x07 \u202e a\\x1b")
    text = protocol.error_text(response)
    text.encode("utf-8")  # a lone surrogate kept as such could not be
    assert text == "bad \\ud800 \\x1b]0;x\\x07 \\u202e a\\\\x1b"
    # escaped, ESC and a backslash followed by "x1b" stay two different texts
    assert protocol.error_text(
        protocol.Response(auth="A", kind="error", value="\\x1b")
    ) != protocol.error_text(protocol.Response(auth="A", kind="error", value="\x1b"))


@pytest.mark.parametrize(
    "raw",
    [
        b'[{"auth": "T"}, {"data": [1e999]}]',
        b'[{"auth": "T"}, {"data": -1E400}]',
        json.dumps("[{'auth': 'T'}, {'data': [1e999]}]").encode(),
        json.dumps("[{'auth': 'T'}, {'data': (1e999,)}]").encode(),  # the literal parser's path
    ],
)
def test_non_finite_numbers_are_malformed(raw):
    with pytest.raises(MalformedResponseError):
        protocol.decode_response(raw)
