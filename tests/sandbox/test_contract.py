"""Contract tests: the sandbox driven over a real broker by plain confluent-kafka clients.

Every topic and action of PROTOCOL.md section 3, the error rules of the issue, both response
encodings, and request_id echo on and off.
"""

from __future__ import annotations

import json
import re

import pytest

from gateway_sandbox import wire
from gateway_sandbox.ledger import Ledger
from tests.sandbox.conftest import ERP_PASSWORD, MES_PASSWORD

pytestmark = pytest.mark.broker

PUBLIC_KEY = re.compile(r"^0[23][0-9a-f]{64}$")
TXID = re.compile(r"^[0-9a-f]{128}$")
ITEM_ID = re.compile(r"^[0-9a-f]{32}$")
#: The fields of a partner request's or order's item after its own: who asked whom, and the answer.
ANSWERED_ITEM_FIELDS = {
    "issuing_agent",
    "receiving_agent",
    "status",
    "timestamp",
    "answer_timestamp",
    "transaction_ids",
}

#: Every topic that takes a token, among them the record topic of ProductionUnit (created by the test).
REQUEST_TOPICS = (*wire.TOKEN_TOPICS, wire.record_topic("ProductionUnit"))


def _partners(ledger: Ledger, mes_pk: str, count: int, accept: bool | None = None) -> list[tuple[str, str]]:
    """*count* ERP agents, each with a partner request to the MES; ``[(erp public key, request id)]``."""
    made = []
    for index in range(count):
        erp, _ = ledger.create_agent(f"ERP {index}", ERP_PASSWORD)
        item = ledger.create_partner_request(erp, mes_pk)
        if accept is not None:
            ledger.answer_partner_request(mes_pk, item, accept)
        made.append((erp, item))
    return made


# ---- BLK_Agt ---------------------------------------------------------------------------------


def test_agent_create_then_token_echoes_request_id_even_without_echo(make_server, make_client, ledger):
    make_server(echo=False)
    client = make_client()

    rid = client.send("BLK_Agt", {}, {"action": "create", "name": "MES plant 1", "password": MES_PASSWORD})
    created = client.response_to(rid)
    data = created.outcome["data"]
    assert PUBLIC_KEY.match(data["public_key"])
    # no token in the header: an agent answer is matched by request_id, the token is only in data
    assert created.header == {"auth": data["public_key"], "public_key": data["public_key"], "request_id": rid}
    assert ledger.agent_for_token(data["token"]) == data["public_key"]
    assert ledger.agent(data["public_key"])["name"] == "MES plant 1"

    rid = client.send(
        "BLK_Agt", {"public_key": data["public_key"]}, {"action": "token", "password": MES_PASSWORD}
    )
    fresh = client.response_to(rid)
    token = fresh.outcome["data"]["token"]
    assert token != data["token"]
    assert fresh.header == {"auth": data["public_key"], "public_key": data["public_key"], "request_id": rid}
    assert ledger.agent_for_token(token) == data["public_key"]
    # the fresh token revokes the earlier one
    assert ledger.agent_for_token(data["token"]) is None
    client.send("BLK_Part_Lst", {"auth": data["token"]})
    assert client.next_for_token(data["token"]).outcome == {"error": "unknown token"}

    # the fresh token works on the other topics
    client.send("BLK_Part_Lst", {"auth": token})
    assert client.next_for_token(token).outcome == {"data": []}


def test_agent_errors(make_server, make_client, ledger, mes):
    make_server()
    client = make_client()
    mes_pk, _ = mes

    wrong = client.response_to(
        client.send("BLK_Agt", {"public_key": mes_pk}, {"action": "token", "password": "not the password"})
    )
    assert wrong.outcome == {"error": "unknown agent or wrong password"}
    assert wrong.header["auth"] == mes_pk  # no token to address: the named agent

    unknown = client.response_to(
        client.send(
            "BLK_Agt", {"public_key": "02" + "ab" * 32}, {"action": "token", "password": MES_PASSWORD}
        )
    )
    assert unknown.outcome == {"error": "unknown agent or wrong password"}

    no_key = client.response_to(client.send("BLK_Agt", {}, {"action": "token", "password": MES_PASSWORD}))
    assert "public_key" in no_key.outcome["error"]
    assert no_key.header["auth"] == "anonymous"
    bad_key = client.response_to(
        client.send("BLK_Agt", {"public_key": "not a key"}, {"action": "token", "password": MES_PASSWORD})
    )
    assert "public_key (66 hex)" in bad_key.outcome["error"]
    assert bad_key.header == {"auth": "anonymous", "request_id": bad_key.header["request_id"]}

    for body, expected in (
        ({"action": "create", "name": "", "password": "x" * 12}, "invalid agent name"),
        ({"action": "create", "name": "A", "password": ""}, "invalid password"),
        ({"action": "delete"}, "unknown action 'delete' on BLK_Agt"),
        (None, "needs a body"),
    ):
        answer = client.response_to(client.send("BLK_Agt", {}, body))
        assert expected in answer.outcome["error"]
    # a malformed agent request with a readable request id is answered, not left to time out
    rid = client.send("BLK_Agt", raw=b'{"request_id": "x"}', request_id="c" * 32)
    malformed = client.response_to(rid)
    assert malformed.header == {"auth": "anonymous", "request_id": rid}
    assert malformed.outcome["error"].startswith("malformed request")
    assert len(ledger.agents()) == 1


# ---- partner requests ---------------------------------------------------------------------------


def test_partner_requests_list_pages_in_a_stable_order(make_server, make_client, ledger, mes):
    mes_pk, token = mes
    made = _partners(ledger, mes_pk, 5)
    make_server(echo=True)
    client = make_client()

    pages = []
    for start in (0, 2, 4, 6):
        answer = client.request("BLK_Part_Lst", {"auth": token, "start": start, "limit": 2})
        pages.append(answer.outcome["data"])
    assert [len(p) for p in pages] == [2, 2, 1, 0]  # an empty page is a valid answer
    listed = [item for page in pages for item in page]
    assert [item["partner_request_id"] for item in listed] == [item for _, item in made]
    first = listed[0]
    assert set(first) == {"partner_request_id", *ANSWERED_ITEM_FIELDS}
    assert first["issuing_agent"] == made[0][0]
    assert first["receiving_agent"] == mes_pk
    assert first["status"] == "OPEN"
    assert first["answer_timestamp"] == 0
    assert isinstance(first["timestamp"], int) and first["timestamp"] > 1_600_000_000
    assert len(first["transaction_ids"]) == 1 and TXID.match(first["transaction_ids"][0])

    # the seed's request carries no paging: start 0, limit 10
    default = client.request("BLK_Part_Lst", {"auth": token})
    assert len(default.outcome["data"]) == 5

    for header, text in (
        ({"start": -1}, "invalid start"),
        ({"limit": 0}, "invalid limit"),
        ({"limit": "10"}, "invalid limit"),
        ({"start": True}, "invalid start"),
    ):
        answer = client.request("BLK_Part_Lst", {"auth": token, **header})
        assert text in answer.outcome["error"]


def test_partner_request_answers_and_their_errors(make_server, make_client, ledger, mes):
    mes_pk, token = mes
    (erp_a, first), (erp_b, second) = _partners(ledger, mes_pk, 2)
    other_pk, other_token = ledger.create_agent("Other MES", MES_PASSWORD)
    make_server(echo=True)
    client = make_client()

    accepted = client.request("BLK_Part_Ans", {"auth": token}, {"id": first, "response": 1})
    assert accepted.outcome == {"message": f"partner request {first} ACCEPTED"}
    item = ledger.partner_request(first)
    assert item["status"] == "ACCEPTED" and item["answer_timestamp"] >= item["timestamp"]
    assert len(item["transaction_ids"]) == 2

    rejected = client.request("BLK_Part_Ans", {"auth": token}, {"id": second, "response": 0})
    assert rejected.outcome == {"message": f"partner request {second} REJECTED"}
    assert ledger.partner_request(second)["status"] == "REJECTED"

    twice = client.request("BLK_Part_Ans", {"auth": token}, {"id": first, "response": 0})
    assert twice.outcome == {"error": f"partner request {first} is already ACCEPTED"}

    ((_, third),) = _partners(ledger, mes_pk, 1)
    not_yours = client.request("BLK_Part_Ans", {"auth": other_token}, {"id": third, "response": 1})
    assert not_yours.outcome == {"error": f"partner request {third} is addressed to another agent"}

    unknown = client.request("BLK_Part_Ans", {"auth": token}, {"id": "f" * 32, "response": 1})
    assert unknown.outcome == {"error": f"partner request {'f' * 32} not found"}

    for body, text in (
        ({"id": "not-an-id", "response": 1}, "invalid partner request id"),
        ({"id": third, "response": 2}, "invalid response"),
        ({"id": third}, "invalid response"),
        ({"id": third, "response": [1]}, "invalid response"),
        ({"id": [third], "response": {"a": 1}}, "invalid partner request id"),
    ):
        answer = client.request("BLK_Part_Ans", {"auth": token}, body)
        assert text in answer.outcome["error"]
    no_body = client.request("BLK_Part_Ans", {"auth": token})
    assert "needs a body" in no_body.outcome["error"]
    assert ledger.partner_request(third)["status"] == "OPEN"
    assert ledger.partner_request(first)["status"] == "ACCEPTED"  # the refused answers changed nothing
    assert not ledger.verify()
    assert erp_a != erp_b != other_pk


# ---- orders -----------------------------------------------------------------------------------


def test_orders_list_and_answers(make_server, make_client, ledger, mes):
    mes_pk, token = mes
    ((erp, _),) = _partners(ledger, mes_pk, 1, accept=True)
    metadata = {"Part": "steering wheel", "Size": 3, "Special_Parameters": ["Operator's note", None, True]}
    first = ledger.create_order(erp, mes_pk, "production", "Steering wheels", metadata, ["drawing.pdf"])
    second = ledger.create_order(erp, mes_pk, "rework", "Gear knobs", {})
    make_server(echo=True)
    client = make_client()

    listed = client.request("BLK_Act_Lst", {"auth": token, "start": 0, "limit": 10}).outcome["data"]
    assert [o["abs_action_id"] for o in listed] == [first, second]
    order = listed[0]
    assert set(order) == {"abs_action_id", "type", "description", "metadata", "files", *ANSWERED_ITEM_FIELDS}
    assert order["metadata"] == metadata  # an apostrophe, None and True survive the literal encoding
    assert order["files"] == ["drawing.pdf"]
    assert (order["issuing_agent"], order["receiving_agent"], order["status"]) == (erp, mes_pk, "OPEN")
    assert ITEM_ID.match(order["abs_action_id"])
    assert (
        client.request("BLK_Act_Lst", {"auth": token, "start": 1, "limit": 10}).outcome["data"][0][
            "abs_action_id"
        ]
        == second
    )

    assert client.request("BLK_Act_Ans", {"auth": token}, {"id": first, "response": 1}).outcome == {
        "message": f"order request {first} ACCEPTED"
    }
    assert client.request("BLK_Act_Ans", {"auth": token}, {"id": second, "response": 0}).outcome == {
        "message": f"order request {second} REJECTED"
    }
    assert client.request("BLK_Act_Ans", {"auth": token}, {"id": second, "response": 1}).outcome == {
        "error": f"order request {second} is already REJECTED"
    }
    assert client.request("BLK_Act_Ans", {"auth": token}, {"id": "0" * 32, "response": 1}).outcome == {
        "error": f"order request {'0' * 32} not found"
    }
    erp_token = ledger.issue_token(erp, ERP_PASSWORD)
    third = ledger.create_order(erp, mes_pk, "production", "Bumper clips", {})
    assert client.request("BLK_Act_Ans", {"auth": erp_token}, {"id": third, "response": 1}).outcome == {
        "error": f"order request {third} is addressed to another agent"
    }
    assert ledger.order(first)["status"] == "ACCEPTED"
    assert ledger.order(third)["status"] == "OPEN"


def test_orders_only_from_accepted_partners(ledger, mes):
    from gateway_sandbox.ledger import LedgerError

    mes_pk, _ = mes
    ((open_erp, _),) = _partners(ledger, mes_pk, 1)
    ((rejected_erp, _),) = _partners(ledger, mes_pk, 1, accept=False)
    for erp in (open_erp, rejected_erp):
        with pytest.raises(LedgerError, match="not an accepted partner"):
            ledger.create_order(erp, mes_pk, "production", "x", {})
    assert ledger.orders() == []


# ---- record types and records (PROTOCOL.md 3.3) ---------------------------------------------------

UNIT_TYPE = [
    {"name": "Code", "data_type": "STRING", "dynamic": False},
    {"name": "Status", "data_type": "STRING", "dynamic": True},
    {"name": "ProcessName", "data_type": "STRING", "dynamic": True},
    {"name": "Capacity", "data_type": "NUMBER", "dynamic": False},
    {"name": "Active", "data_type": "BOOLEAN", "dynamic": True},
]
REPORTER_PASSWORD = "reporter-password-0123456789"


def _values(values: dict) -> list[dict]:
    return [{"name": name, "value": value} for name, value in values.items()]


def _unit_creation(values: dict, description: str, *, dynamic: bool, password: str) -> dict:
    """The body creating the ProductionUnit record ``PU_<Code>`` with these property *values*."""
    return {
        "record_id": f"PU_{values['Code']}",
        "record_type": "ProductionUnit",
        "description": description,
        "dynamic": dynamic,
        "password": password,
        "properties": _values(values),
    }


def test_record_types_create_and_read(make_server, make_client, mes):
    _, token = mes
    server = make_server(echo=True)
    client = make_client()
    header = {"auth": token, "isRecord": False}
    body = {"name": "ProductionUnit", "description": "Units of the plant", "properties": UNIT_TYPE}

    missing = client.request("BLK_Rty_Get", {"auth": token}, {"name": "ProductionUnit"})
    assert missing.outcome == {"error": "record type ProductionUnit not found"}
    assert client.request("BLK_Rty", header, body).outcome == {
        "message": "record type ProductionUnit created"
    }
    # its records' topic exists (and is read) before the answer is sent
    assert client.prefix + "BLK_Rec_ProductionUnit" in client.consumer.list_topics(timeout=10).topics
    got = client.request("BLK_Rty_Get", {"auth": token}, {"name": "ProductionUnit"})
    assert got.outcome == {"data": body}
    again = client.request("BLK_Rty", header, body)
    assert again.outcome == {"message": "record type ProductionUnit exists with identical values"}
    other = client.request("BLK_Rty", header, {**body, "description": "other"})
    assert other.outcome == {"error": "record type ProductionUnit exists with different values"}

    for request_header, request_body, text in (
        (header, {**body, "name": "T1", "properties": []}, "non-empty list of properties"),
        (
            header,
            {**body, "name": "T2", "properties": [{"name": "a", "data_type": "DATE"}]},
            "invalid data_type",
        ),
        (
            header,
            {**body, "name": "T3", "properties": [{"name": "a", "data_type": "STRING"}] * 2},
            "declared twice",
        ),
        (header, {**body, "name": "bad name!"}, "invalid record type name"),
        (header, {"name": "T4", "properties": UNIT_TYPE}, "description"),
        ({"auth": token, "isRecord": True}, {**body, "name": "T5"}, "isRecord false"),
        ({"auth": token}, {**body, "name": "T6"}, "isRecord"),
    ):
        answer = client.request("BLK_Rty", request_header, request_body)
        assert text in answer.outcome["error"], answer.outcome
    assert server.ledger is not None


def test_dynamic_record_creates_its_reporter_who_alone_updates_it(make_server, make_client, ledger, mes):
    mes_pk, token = mes
    stranger_pk, stranger_token = ledger.create_agent("Stranger", MES_PASSWORD)
    ledger.create_record_type(mes_pk, "ProductionUnit", UNIT_TYPE, "Units")
    make_server(echo=True)
    client = make_client()
    topic = "BLK_Rec_ProductionUnit"

    values = {"Code": "PT10", "Capacity": 12.5, "Status": "idle", "Active": True}
    create = _unit_creation(
        values, "Production unit PT10 Press line 10", dynamic=True, password=REPORTER_PASSWORD
    )
    created = client.request(topic, {"auth": token, "isRecord": True}, create)
    data = created.outcome["data"]
    assert set(data) == {"record_id", "public_key", "token"} and data["record_id"] == "PU_PT10"
    reporter_pk, reporter_token = data["public_key"], data["token"]
    assert PUBLIC_KEY.match(reporter_pk) and reporter_pk != mes_pk
    assert created.header["auth"] == token  # addressed to the creator
    assert ledger.agent_for_token(reporter_token) == reporter_pk
    assert ledger.check_password(reporter_pk, REPORTER_PASSWORD)

    got = client.request("BLK_Rec_Get", {"auth": token}, {"record_id": "PU_PT10"}).outcome["data"]
    assert set(got) == {"record_id", "record_type", "owner", "reporters", "properties", "transaction_ids"}
    assert (got["owner"], got["reporters"], got["properties"]) == (mes_pk, [reporter_pk], values)

    def update(auth: str, properties: dict, record_id: str = "PU_PT10") -> dict:
        body = {"record_id": record_id, "properties": _values(properties)}
        return client.request(topic, {"auth": auth, "isRecord": False}, body).outcome

    assert update(reporter_token, {"Status": "running"}) == {"message": "record PU_PT10 updated"}
    assert "neither the reporter nor the owner" in update(stranger_token, {"Status": "stolen"})["error"]
    assert update(token, {"ProcessName": "milling"}) == {"message": "record PU_PT10 updated"}  # the owner may
    assert "not dynamic" in update(reporter_token, {"Code": "X"})["error"]
    assert "is a BOOLEAN" in update(reporter_token, {"Active": "yes"})["error"]
    assert "has no property" in update(reporter_token, {"Colour": "r"})["error"]
    assert update(reporter_token, {"Status": "x"}, "PU_PT99") == {"error": "record PU_PT99 not found"}

    # the same creation with the same password answers the same reporter, with a fresh token
    again = client.request(topic, {"auth": token, "isRecord": True}, create).outcome["data"]
    assert again["public_key"] == reporter_pk and again["token"] != reporter_token
    assert "unknown token" in update(reporter_token, {"Status": "old token"})["error"]
    assert update(again["token"], {"Status": "new token"}) == {"message": "record PU_PT10 updated"}
    for changed in (
        {**create, "password": "another-password-0123"},
        {**create, "dynamic": False, "password": ""},
    ):
        refused = client.request(topic, {"auth": token, "isRecord": True}, changed).outcome
        assert refused == {"error": "record PU_PT10 exists with different values"}

    got = client.request("BLK_Rec_Get", {"auth": token}, {"record_id": "PU_PT10"}).outcome["data"]
    assert got["properties"] == {**values, "Status": "new token", "ProcessName": "milling"}
    assert len(got["transaction_ids"]) == 4  # create, reporter's update, owner's update, reporter's update
    assert [a["public_key"] for a in ledger.agents()] == [mes_pk, stranger_pk, reporter_pk]
    assert ledger.verify() == []


def test_record_creation_errors(make_server, make_client, ledger, mes):
    mes_pk, token = mes
    ledger.create_record_type(mes_pk, "ProductionUnit", UNIT_TYPE, "Units")
    make_server(echo=True)
    client = make_client()
    values = {"Code": "PT11", "Capacity": 1, "Status": "idle", "Active": True}
    create = _unit_creation(values, "d", dynamic=False, password="")
    header = {"auth": token, "isRecord": True}
    for topic, body, text in (
        ("BLK_Rec_Nope", {**create, "record_type": "Nope"}, "record type Nope not found"),
        (
            "BLK_Rec_ProductionUnit",
            {**create, "record_type": "Other"},
            "this topic serves record type ProductionUnit",
        ),
        (
            "BLK_Rec_ProductionUnit",
            {**create, "properties": _values({"Status": "idle"})},
            "lacks the non-dynamic",
        ),
        (
            "BLK_Rec_ProductionUnit",
            {**create, "properties": _values({**values, "Capacity": "big"})},
            "is a NUMBER",
        ),
        ("BLK_Rec_ProductionUnit", {**create, "properties": []}, "non-empty list"),
        (
            "BLK_Rec_ProductionUnit",
            {**create, "properties": _values({"Colour": "r", **values})},
            "has no property",
        ),
        ("BLK_Rec_ProductionUnit", {**create, "properties": {"Code": "x"}}, "list of {name, value}"),
        ("BLK_Rec_ProductionUnit", {**create, "record_id": "PU 11"}, "invalid record id"),
        ("BLK_Rec_ProductionUnit", {**create, "password": "x" * 20}, "password must be empty"),
        ("BLK_Rec_ProductionUnit", {**create, "dynamic": "yes"}, "dynamic: true or false"),
        ("BLK_Rec_ProductionUnit", {**create, "dynamic": True, "password": ""}, "reporter's password"),
        ("BLK_Rec", create, "records travel on BLK_Rec_<record type>"),
    ):
        answer = client.request(topic, header, body)
        assert text in answer.outcome["error"], (topic, answer.outcome)
    no_flag = client.request("BLK_Rec_ProductionUnit", {"auth": token}, create)
    assert "isRecord" in no_flag.outcome["error"]
    assert client.request("BLK_Rec_Get", {"auth": token}, {"record_id": "PU_PT11"}).outcome == {
        "error": "record PU_PT11 not found"
    }
    assert ledger.count_records() == 0
    assert ledger.record_type("Nope") is None


@pytest.mark.also_tansu
def test_day_report_records_are_final_and_idempotent(make_server, make_client, ledger, mes):
    """The day-report flow: 28 non-dynamic records of one property each, re-run without creating
    anything twice."""
    _, token = mes
    make_server(echo=True)
    client = make_client()
    rtype = {
        "name": "DayReportIndicator",
        "description": "One indicator",
        "properties": [{"name": "Value", "data_type": "NUMBER", "dynamic": False}],
    }
    assert (
        "created" in client.request("BLK_Rty", {"auth": token, "isRecord": False}, rtype).outcome["message"]
    )
    ids = [
        f"614f24586a93d2db8f59b323_{shift}{indicator:02d}"
        for shift in range(1, 5)
        for indicator in range(1, 8)
    ]
    for run in range(2):
        sent = {
            client.send(
                "BLK_Rec_DayReportIndicator",
                {"auth": token, "isRecord": True},
                {
                    "record_id": record_id,
                    "record_type": "DayReportIndicator",
                    "description": "001_21_01_02_PT10 Turno A Disponibilty",
                    "dynamic": False,
                    "password": "",
                    "properties": [{"name": "Value", "value": 0.5 + i}],
                },
                flush=False,
            ): record_id
            for i, record_id in enumerate(ids)
        }
        client.producer.flush(10)
        messages = {client.response_to(rid).outcome["message"] for rid in sent}
        expected = "created" if run == 0 else "exists with identical values"
        assert messages == {f"record {record_id} {expected}" for record_id in ids}
    assert ledger.count_records("DayReportIndicator") == 28
    update = {"record_id": ids[0], "properties": [{"name": "Value", "value": 1}]}
    refused = client.request("BLK_Rec_DayReportIndicator", {"auth": token, "isRecord": False}, update)
    assert "not dynamic" in refused.outcome["error"]


def test_pages_capped_by_the_gateway_are_read_to_the_empty_page(make_server, make_client, ledger, mes):
    mes_pk, token = mes
    made = _partners(ledger, mes_pk, 12)
    make_server(echo=True, page_cap=5)
    client = make_client()
    start, sizes, listed = 0, [], []
    while True:
        page = client.request("BLK_Part_Lst", {"auth": token, "start": start, "limit": 10}).outcome["data"]
        sizes.append(len(page))
        listed += page
        if not page:
            break
        start += len(page)
    assert sizes == [5, 5, 2, 0]
    assert [item["partner_request_id"] for item in listed] == [item for _, item in made]


# ---- tokens and malformed requests ---------------------------------------------------------------


@pytest.mark.parametrize("echo", [False, True])
def test_unknown_token_gets_an_error_on_every_topic(make_server, make_client, ledger, mes, echo):
    ledger.create_record_type(mes[0], "ProductionUnit", UNIT_TYPE, "Units")  # its topic is served
    make_server(echo=echo)
    client = make_client()
    bodies = {
        "BLK_Part_Ans": {"id": "a" * 32, "response": 1},
        "BLK_Act_Ans": {"id": "a" * 32, "response": 1},
        "BLK_Rty": {"name": "X", "description": "x", "properties": []},
        "BLK_Rty_Get": {"name": "X"},
        "BLK_Rec_Get": {"record_id": "X"},
        "BLK_Rec_ProductionUnit": {"record_id": "X", "properties": [{"name": "Status", "value": "x"}]},
    }
    blocks_before = len(ledger.blocks())
    for topic in REQUEST_TOPICS:
        wrong = f"wrong-token-for-{topic}"
        rid = client.send(topic, {"auth": wrong}, bodies.get(topic))
        answer = client.next_for_token(wrong)
        assert answer.outcome == {"error": "unknown token"}
        assert answer.header == ({"auth": wrong, "request_id": rid} if echo else {"auth": wrong})
    assert len(ledger.blocks()) == blocks_before


def test_malformed_requests_answer_the_token_when_readable_else_are_dropped(make_server, make_client, mes):
    _, token = mes
    server = make_server(echo=True)
    client = make_client()

    dropped = [
        b"\xff\xfe not utf-8",
        b"not json at all",
        b"[]",
        b'["header is a string"]',
        b'[{"start": 0}]',  # no auth
        b'[{"auth": 42}]',
        b'{"no": "auth"}',
        b"NaN",
    ]
    for raw in dropped:
        client.send("BLK_Part_Lst", raw=raw)
    addressed = {
        b'{"auth": "%s"}' % token.encode(): "malformed request: request is not a JSON array",
        b'[{"auth": "%s"}, {"id": 1}, {"extra": 2}]'
        % token.encode(): "malformed request: request has 3 elements",
    }
    rids = {client.send("BLK_Part_Ans", raw=raw): text for raw, text in addressed.items()}
    for text in rids.values():
        answer = client.next_for_token(token)
        assert answer.outcome["error"].startswith(text)
        assert answer.header["auth"] == token
    assert server.wait_for(lambda c: c.get("malformed", 0) >= len(dropped) and c["requests"] >= 10)
    # the malformed requests are answered by request id too, from the Kafka header
    assert {r.header.get("request_id") for r in client.received if r.envelope} == set(rids)
    assert len(client.quiet_for(0.3)) == 0
    assert server.counters["malformed"] == len(dropped)

    # the gateway still serves after all that
    assert client.request("BLK_Part_Lst", {"auth": token}).outcome == {"data": []}


# ---- encodings and echo -------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["python-literal", "json"])
def test_both_encodings(make_server, make_client, ledger, mes, encoding):
    mes_pk, token = mes
    ledger.create_record_type(
        mes_pk,
        "Flags",
        [
            {"name": "note", "data_type": "STRING", "dynamic": True},
            {"name": "on", "data_type": "BOOLEAN", "dynamic": True},
        ],
    )
    ledger.create_record(mes_pk, "F1", "Flags", {"note": 'Operator\'s "note"', "on": True})
    make_server(encoding=encoding, echo=True)
    client = make_client(encoding)

    rid = client.send("BLK_Rec_Get", {"auth": token}, {"record_id": "F1"})
    raw = client.response_to(rid)
    outer = json.loads(raw.value)
    if encoding == "python-literal":
        assert isinstance(outer, str) and outer.startswith("[{'auth': ")
        assert "True" in outer and f"'request_id': '{rid}'" in outer
        with pytest.raises(json.JSONDecodeError):
            json.loads(outer)
    else:
        assert isinstance(outer, list)
    assert raw.envelope == [
        {"auth": token, "request_id": rid},
        {"data": ledger.record("F1")},
    ]
    assert raw.outcome["data"]["properties"] == {"note": 'Operator\'s "note"', "on": True}


@pytest.mark.also_tansu
def test_echo_off_is_the_original_gateway(make_server, make_client, mes):
    _, token = mes
    make_server()  # defaults: python-literal, no echo
    client = make_client()
    client.send("BLK_Part_Lst", {"auth": token, "start": 0, "limit": 10})
    answer = client.next_for_token(token)
    assert answer.header == {"auth": token}
    assert answer.key is None and "blk-request-id" not in answer.headers
    assert json.loads(answer.value).startswith("[{'auth'")


@pytest.mark.also_tansu
def test_echo_on_allows_pipelining(make_server, make_client, ledger, mes):
    mes_pk, token = mes
    _partners(ledger, mes_pk, 3)
    make_server(echo=True)
    client = make_client()
    sent = [
        client.send("BLK_Part_Lst", {"auth": token, "start": i % 4, "limit": 1}, flush=False)
        for i in range(60)
    ]
    client.producer.flush(10)
    for i, rid in enumerate(sent):
        answer = client.response_to(rid)
        assert answer.key == rid.encode() and answer.headers["blk-request-id"] == rid.encode()
        assert len(answer.outcome["data"]) == (0 if i % 4 == 3 else 1)


@pytest.mark.also_tansu
def test_the_fetch_wait_follows_the_broker(make_server, kafka_bootstrap):
    """Short fetches only where tansu holds each one for its whole wait; on Apache Kafka an idle
    sandbox must not ask hundreds of times a second."""
    from confluent_kafka.admin import AdminClient

    from gateway_sandbox.broker import TANSU_CLUSTER_ID, fetch_wait_for

    assert fetch_wait_for(TANSU_CLUSTER_ID) == 2
    assert fetch_wait_for("MkU3OEVBNTcwNTJENDM2Qg") == 100
    cluster_id = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).cluster_id
    by_broker = make_server()
    assert by_broker.fetch_wait_max_ms == fetch_wait_for(cluster_id)
    by_broker.stop()
    assert make_server(fetch_wait_max_ms=7).fetch_wait_max_ms == 7
