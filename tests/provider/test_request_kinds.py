"""Request kinds: declared once, configured by the deployment, taken by the protocol from there."""

from __future__ import annotations

import pytest

from blockchain_provider import protocol
from blockchain_provider.configured import ConfiguredObjectError
from blockchain_provider.exceptions import InvalidIdentifierError
from blockchain_provider.operators import ListRequestsOperator
from blockchain_provider.operators.requests import AnswerRequestOperator
from blockchain_provider.request_kinds import ORDER, PARTNER, RequestKind, request_kind, request_kinds
from include.mes.request_kinds import LEDGER_KINDS
from tests.third_kind import QUOTE

OPTION = "AIRFLOW__BLOCKCHAIN__REQUEST_KINDS"
#: a kind of this module's, for the configuration to name
CLASHING = RequestKind("offer", "BLK_Act_Lst", "BLK_Off_Ans", "offer_id", "offer")
ON_A_PROTOCOL_TOPIC = RequestKind("typo", "BLK_Rty", "BLK_Typ_Ans", "typo_id", "typo")
NOT_A_KIND = "partner"
#: the kinds of a deployment, named once by the option
SEVERAL = (QUOTE, RequestKind("offer", "BLK_Off_Lst", "BLK_Off_Ans", "offer_id", "offer"))
SEVERAL_AND_NOT_A_KIND = (QUOTE, "offer")


def test_the_protocol_takes_the_built_in_kinds_topics_from_their_declaration():
    assert (PARTNER.list_topic, PARTNER.answer_topic) == (protocol.PARTNER_LIST, protocol.PARTNER_ANSWER)
    assert (ORDER.list_topic, ORDER.answer_topic) == (protocol.ORDER_LIST, protocol.ORDER_ANSWER)
    assert list(request_kinds()) == ["partner", "order"]


def test_a_configured_kind_is_known_to_the_protocol(monkeypatch):
    with pytest.raises(InvalidIdentifierError, match="not a list topic"):
        protocol.list_call("BLK_Quo_Lst", 0, 10)
    monkeypatch.setenv(OPTION, "tests.third_kind.QUOTE")
    assert list(request_kinds()) == ["partner", "order", "quote"]
    assert request_kind("quote") is QUOTE
    assert protocol.list_call("BLK_Quo_Lst", 0, 10).header == {"start": 0, "limit": 10}
    assert protocol.expectation(protocol.list_call("BLK_Quo_Lst", 0, 10)).kinds == ("data",)
    assert protocol.answer_call("BLK_Quo_Ans", "a" * 32, False).body == {"id": "a" * 32, "response": 0}
    with pytest.raises(InvalidIdentifierError, match="Invalid quote request id"):
        protocol.answer_call("BLK_Quo_Ans", "A" * 32, True)
    assert protocol.TopicMap({"BLK_Quo_Lst": "plant1.quotes"})["BLK_Quo_Lst"] == "plant1.quotes"
    assert protocol.protocol_topics()[-2:] == ("BLK_Quo_Lst", "BLK_Quo_Ans")


def test_the_generic_operators_take_a_kind_by_name(monkeypatch):
    monkeypatch.setenv(OPTION, "tests.third_kind.QUOTE")
    assert ListRequestsOperator(task_id="sync", kind="quote").kind is QUOTE
    assert (
        AnswerRequestOperator(task_id="a", kind=QUOTE, request_id="b" * 32, decision="accept").kind is QUOTE
    )
    with pytest.raises(ValueError, match="Unknown request kind 'quot'"):
        ListRequestsOperator(task_id="sync", kind="quot")
    with pytest.raises(ValueError, match="needs a request kind"):
        ListRequestsOperator(task_id="sync")


@pytest.mark.parametrize(
    ("configured", "refused"),
    [
        ("tests.provider.test_request_kinds.CLASHING", "takes the name or a topic of kind order"),
        ("tests.provider.test_request_kinds.NOT_A_KIND", "is or holds a str, not a RequestKind"),
        ("tests.provider.no_such_module.KIND", "cannot import tests.provider.no_such_module.KIND"),
    ],
)
def test_a_configured_kind_that_cannot_be_used_is_refused_naming_the_option(monkeypatch, configured, refused):
    monkeypatch.setenv(OPTION, configured)
    with pytest.raises(ConfiguredObjectError, match=r"\[blockchain\] request_kinds") as info:
        request_kinds()
    assert refused in str(info.value)


def test_a_kind_on_a_topic_the_protocol_uses_otherwise_is_refused(monkeypatch):
    monkeypatch.setenv(OPTION, "tests.provider.test_request_kinds.ON_A_PROTOCOL_TOPIC")
    with pytest.raises(ConfiguredObjectError, match=r"takes the protocol's topic\(s\) BLK_Rty"):
        request_kinds()


def test_a_broken_option_fails_only_what_concerns_the_kinds_it_adds(monkeypatch):
    monkeypatch.setenv(OPTION, "tests.provider.no_such_module.KIND")
    # the protocol's own topics and record topics are told without the configuration
    creation = protocol.record_type_create_call("T", "d", [{"name": "a", "data_type": "STRING"}])
    assert protocol.expectation(creation).kinds == ("message",)
    assert protocol.TopicMap({"BLK_Rty": "plant1.types"})["BLK_Rty"] == "plant1.types"
    assert protocol.TopicMap()["BLK_Rec_ProductionUnit"] == "BLK_Rec_ProductionUnit"
    assert protocol.list_call("BLK_Part_Lst", 0, 5).topic == "BLK_Part_Lst"
    with pytest.raises(ConfiguredObjectError, match="No module named"):
        protocol.list_call("BLK_Quo_Lst", 0, 5)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (("Quote", "BLK_Quo_Lst", "BLK_Quo_Ans", "quote_id", "quote"), "name"),
        (("quote", "Quo_Lst", "BLK_Quo_Ans", "quote_id", "quote"), "list_topic"),
        (("quote", "BLK_Quo_Lst", "BLK_Rec_Quo", "quote_id", "quote"), "answer_topic"),
        (("quote", "BLK_Quo_Lst", "BLK_Quo_Lst", "quote_id", "quote"), "one topic"),
        (("quote", "BLK_Quo_Lst", "BLK_Quo_Get", "quote_id", "quote"), "answer_topic"),
        (("quotation_requests", "BLK_Quo_Lst", "BLK_Quo_Ans", "quote_id", "quote"), "name"),
        (("quote", "BLK_Quo_Lst", "BLK_Quo_Ans", "quote id", "quote"), "id_field"),
        (("quote", "BLK_Quo_Lst", "BLK_Quo_Ans", "quote_id", " "), "label"),
    ],
)
def test_a_kind_out_of_shape_is_refused_naming_the_field(fields, named):
    with pytest.raises(ValueError, match=named):
        RequestKind(*fields)


def test_a_kind_is_named_or_given_as_it_is(monkeypatch):
    monkeypatch.delenv(OPTION, raising=False)
    assert request_kind("order") is ORDER
    assert request_kind(PARTNER) is PARTNER
    with pytest.raises(ValueError, match="Unknown request kind 'quote': expected one of partner, order"):
        request_kind("quote")


def test_the_option_names_a_tuple_of_kinds_once(monkeypatch):
    monkeypatch.setenv(OPTION, "include.mes.request_kinds.LEDGER_KINDS")
    assert list(request_kinds()) == ["partner", "order", *(kind.name for kind in LEDGER_KINDS)]
    monkeypatch.setenv(OPTION, "tests.provider.test_request_kinds.SEVERAL")
    assert list(request_kinds()) == ["partner", "order", "quote", "offer"]
    assert protocol.answer_call("BLK_Off_Ans", "c" * 32, True).body == {"id": "c" * 32, "response": 1}
    monkeypatch.setenv(OPTION, "tests.provider.test_request_kinds.SEVERAL_AND_NOT_A_KIND")
    with pytest.raises(ConfiguredObjectError, match="SEVERAL_AND_NOT_A_KIND is or holds a str"):
        request_kinds()
