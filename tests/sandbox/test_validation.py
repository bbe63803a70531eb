"""The ledger's checks of incoming values, with no ledger and no broker: what each accepts, what it
refuses, and that a refusal quotes at most a shortened value."""

from __future__ import annotations

import math

import pytest

from gateway_sandbox import broker, handlers, ledger, validation, wire
from gateway_sandbox.validation import LedgerError

PUBLIC_KEY = "02" + "ab" * 32
ITEM_ID = "0123456789abcdef" * 2


@pytest.mark.parametrize("value", [PUBLIC_KEY, "03" + "0" * 64])
def test_a_compressed_public_key_is_accepted(value):
    assert validation.check_public_key(value) == value


@pytest.mark.parametrize(
    "value", ["04" + "ab" * 32, "02" + "AB" * 32, "02" + "ab" * 31, PUBLIC_KEY + "\n", None, 2]
)
def test_anything_else_is_not_a_public_key(value):
    with pytest.raises(LedgerError, match=r"invalid reporter public key .*66 lowercase hex"):
        validation.check_public_key(value, "reporter public key")


def test_an_item_id_is_32_lowercase_hex():
    assert validation.check_item_id(ITEM_ID, "order request id") == ITEM_ID
    for bad in (ITEM_ID.upper(), ITEM_ID[:-1], ITEM_ID + "0", 7):
        with pytest.raises(LedgerError, match=r"invalid order request id .*32 lowercase hex"):
            validation.check_item_id(bad, "order request id")


@pytest.mark.parametrize("value", ["Unit", "a.b:c-d_e", "x" * 128])
def test_names_of_letters_digits_and_punctuation_are_accepted(value):
    assert validation.check_name(value, "record id") == value


@pytest.mark.parametrize("value", ["", "x" * 129, "with space", "slash/", None])
def test_other_names_are_refused(value):
    with pytest.raises(LedgerError, match="invalid record id"):
        validation.check_name(value, "record id")


def test_a_refusal_quotes_a_long_value_shortened():
    with pytest.raises(LedgerError) as refused:
        validation.check_name("secret" * 100, "record id")
    assert "secret" * 10 not in str(refused.value)
    assert validation.shown("x" * 100) == "x" * 37 + "..."
    assert validation.shown(["a"]) == "['a']"
    assert validation.short(PUBLIC_KEY) == PUBLIC_KEY[:12] + "..."
    assert validation.short("PT10") == "PT10"


def test_descriptions_are_text_of_at_most_1000_characters():
    assert validation.check_description("x" * 1000) == "x" * 1000
    for bad in ("x" * 1001, None, 3):
        with pytest.raises(LedgerError, match="invalid description"):
            validation.check_description(bad)


def test_agent_names_and_passwords():
    assert validation.check_agent_name("MES") == "MES"
    for bad in ("", "   ", "n" * 201, None):
        with pytest.raises(LedgerError, match="invalid agent name"):
            validation.check_agent_name(bad)
    assert validation.check_agent_password("p" * 12) == "p" * 12
    for bad in ("p" * 11, "p" * 1025, None):
        with pytest.raises(LedgerError, match="invalid password: expected 12-1024"):
            validation.check_agent_password(bad)
    assert validation.check_reporter_password("p") == "p"
    for bad in ("", "p" * 1025, None):
        with pytest.raises(LedgerError, match="reporter's password"):
            validation.check_reporter_password(bad)


@pytest.mark.parametrize("value", [0, 1, True, False])
def test_a_response_is_one_or_zero(value):
    assert validation.check_response(value) == value


@pytest.mark.parametrize("value", [2, -1, "1", 1.0, None])
def test_any_other_response_is_refused(value):
    with pytest.raises(LedgerError, match=r"invalid response .*expected 1 \(accept\) or 0 \(reject\)"):
        validation.check_response(value)


def test_an_order_is_normalised():
    assert validation.check_order("Widget", "", None, ()) == ("Widget", "", {}, [])
    checked = validation.check_order("Widget", "ten", {"b": (1, 2), "a": 1.5}, ("spec.pdf",))
    assert checked == ("Widget", "ten", {"a": 1.5, "b": [1, 2]}, ["spec.pdf"])


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (("  ", "d", {}, ()), "non-empty type"),
        (("T", None, {}, ()), "description must be text"),
        (("T", "d", ["a"], ()), "metadata must be an object"),
        (("T", "d", {}, "spec.pdf"), "files must be a list of strings"),
        (("T", "d", {}, [1]), "files must be a list of strings"),
        (("T", "d", {"x": math.nan}, ()), "plain JSON"),
        (("T", "d", {"x": object()}, ()), "plain JSON"),
    ],
)
def test_a_bad_order_is_refused(fields, reason):
    with pytest.raises(LedgerError, match=reason):
        validation.check_order(*fields)


def test_property_declarations_get_their_dynamic_flag():
    declared = validation.check_property_declarations(
        [{"name": "Status", "data_type": "STRING", "dynamic": True}, {"name": "Size", "data_type": "NUMBER"}]
    )
    assert declared == [
        {"name": "Status", "data_type": "STRING", "dynamic": True},
        {"name": "Size", "data_type": "NUMBER", "dynamic": False},
    ]


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ([], "non-empty list"),
        ({"name": "S"}, "non-empty list"),
        (["S"], "expected an object"),
        ([{"name": "bad name", "data_type": "STRING"}], "invalid property name"),
        ([{"name": "S", "data_type": "STRING"}] * 2, "declared twice"),
        ([{"name": "S", "data_type": "DATE"}], "invalid data_type"),
        ([{"name": "S", "data_type": "STRING", "dynamic": 1}], "invalid dynamic flag"),
    ],
)
def test_bad_property_declarations_are_refused(properties, reason):
    with pytest.raises(LedgerError, match=reason):
        validation.check_property_declarations(properties)


@pytest.mark.parametrize(
    ("data_type", "value"), [("STRING", "idle"), ("NUMBER", 3), ("NUMBER", 2.5), ("BOOLEAN", False)]
)
def test_a_value_of_its_declared_type_is_accepted(data_type, value):
    validation.check_value("Unit", "P", data_type, value)


@pytest.mark.parametrize(
    ("data_type", "value"),
    [("STRING", 1), ("NUMBER", True), ("NUMBER", math.inf), ("NUMBER", "3"), ("BOOLEAN", 0)],
)
def test_a_value_of_another_type_is_refused(data_type, value):
    with pytest.raises(LedgerError, match=f"property P of record type Unit is a {data_type}"):
        validation.check_value("Unit", "P", data_type, value)


def test_property_values_come_as_a_list_of_name_and_value_or_an_object():
    wire_form = [{"name": "Status", "value": "idle"}, {"name": "Size", "value": 3}]
    assert validation.check_property_values(wire_form) == {"Status": "idle", "Size": 3}
    assert validation.check_property_values({"Status": "idle"}) == {"Status": "idle"}


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ([{"name": "S"}], "expected {name, value}"),
        ([{"name": "S", "value": 1, "extra": 2}], "expected {name, value}"),
        ([{"name": 1, "value": 1}], "is not a name, or is given twice"),
        ([{"name": "S", "value": 1}, {"name": "S", "value": 2}], "is not a name, or is given twice"),
        ([], "non-empty list of {name, value}"),
        ({}, "non-empty list of {name, value}"),
        ("S=1", "non-empty list of {name, value}"),
    ],
)
def test_bad_property_values_are_refused(properties, reason):
    with pytest.raises(LedgerError, match=reason):
        validation.check_property_values(properties)


def test_the_topics_and_patterns_are_the_wire_modules():
    """Defined once: the broker module's topic list and the ledger's names are the wire module's."""
    assert broker.DEFAULT_TOPICS is wire.DEFAULT_TOPICS
    assert ledger.PUBLIC_KEY_RE is wire.PUBLIC_KEY_RE
    assert ledger.LedgerError is LedgerError
    assert ledger.check_item_id is validation.check_item_id
    served = {t for kind in handlers.REQUEST_TOPICS for t in (kind.list_topic, kind.answer_topic)}
    assert served == {wire.PARTNER_LIST, wire.PARTNER_ANSWER, wire.ORDER_LIST, wire.ORDER_ANSWER}
