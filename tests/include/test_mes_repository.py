"""The MES database layer, run against SQLite and PostgreSQL alike (the ``engine`` fixture)."""

from __future__ import annotations

import random
import re
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.day_report_keys import day_report_keys
from include.mes import schema
from include.mes.models import ProductionUnitNotFoundError
from include.mes.repository import DayReportNotFoundError, MesRepository

ISSUER = "025e451e2caf44821d0fb262c1cfd2e8c02fb37c989adf548aede227283126d5cb"
RECEIVER = "032f3f2b5424d6d3058a69972e6986aaff57a57ba79d43700bd4fa5763c5774ee4"
TX = "562987f54f8f05a045b159101da4dec7138084a171a4a578bb05bbd43b322cbd2542c3d3a98028a1948dffa61c6bc4d862895334e6e43bcacd8ba338cba5caef"


def partner(pid: str, status: str = "OPEN", **overrides) -> dict:
    item = {
        "partner_request_id": pid,
        "issuing_agent": ISSUER,
        "receiving_agent": RECEIVER,
        "status": status,
        "timestamp": 1638789671,
        "answer_timestamp": 0 if status == "OPEN" else 1638790000,
        "transaction_ids": [TX],
    }
    item.update(overrides)
    return item


def order(aid: str, status: str = "OPEN", **overrides) -> dict:
    item = {
        "abs_action_id": aid,
        "type": "dummy_action",
        "description": "Operator's note: 3 wheels",
        "metadata": {"Part": "steering wheel", "Size": 3, "Special_Parameters": ["leather"]},
        "files": [],
        "issuing_agent": ISSUER,
        "receiving_agent": RECEIVER,
        "status": status,
        "timestamp": 1638789846,
        "answer_timestamp": 0,
        "transaction_ids": [TX],
    }
    item.update(overrides)
    return item


def hex32(n: int) -> str:
    return f"{n:032x}"


def all_values(base: float = 0.5) -> dict[tuple[str, str], float]:
    keys = day_report_keys("0" * 24)
    return {(k.shift, k.indicator): base + n / 1000 for n, k in enumerate(keys)}


# ------------------------------------------------------------------------------------------
# Schema
# ------------------------------------------------------------------------------------------


def test_schema_is_created_idempotently(engine: Engine) -> None:
    schema.create_schema(engine)
    repo = MesRepository(engine)
    unit = repo.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    schema.create_schema(engine)  # a second time: nothing dropped, nothing duplicated
    inspector = sa.inspect(engine)
    assert {
        "production_units",
        "day_reports",
        "partner_requests",
        "order_requests",
        "day_report_submissions",
    } <= set(inspector.get_table_names())
    columns = {c["name"] for c in inspector.get_columns("day_reports")}
    assert set(schema.VALUE_COLUMNS.values()) <= columns
    assert len(schema.VALUE_COLUMNS) == 28
    assert {"a_availability", "t_production_time", "c_oee"} <= columns
    assert repo.production_units() == [unit]


# ------------------------------------------------------------------------------------------
# Production units
# ------------------------------------------------------------------------------------------


def test_production_units_read_and_state_update(repo: MesRepository) -> None:
    pt10 = repo.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    pt11 = repo.add_production_unit("PT11", "Press line 11", "Stopped")
    assert [u.code for u in repo.production_units()] == ["PT10", "PT11"]
    assert repo.production_unit(pt11.id).process_name == ""
    assert repo.production_unit_by_code("PT10") == pt10
    assert repo.production_unit(pt11.id + 100) is None

    updated = repo.set_production_unit_state(pt10.id, "Maintenance", "Die change")
    assert (updated.status, updated.process_name) == ("Maintenance", "Die change")
    assert repo.production_unit(pt10.id) == updated
    assert updated.updated_at is not None and updated.updated_at.tzinfo is not None
    assert updated.updated_at >= pt10.updated_at
    assert repo.production_unit(pt11.id) == pt11  # the other unit is untouched

    with pytest.raises(ProductionUnitNotFoundError, match=f"Production unit {pt11.id + 100} does not exist"):
        repo.set_production_unit_state(pt11.id + 100, "Running", "Stamping")
    with pytest.raises(ValueError, match="Invalid status"):
        repo.set_production_unit_state(pt10.id, "", "Stamping")
    with pytest.raises(ValueError, match="Invalid production unit id 0"):
        repo.production_unit(0)
    with pytest.raises(sa.exc.IntegrityError):
        repo.add_production_unit("PT10", "Another", "Running")


# ------------------------------------------------------------------------------------------
# Day reports
# ------------------------------------------------------------------------------------------


def test_day_report_returns_its_28_values_in_one_query(repo: MesRepository, engine: Engine) -> None:
    unit = repo.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    values = all_values()
    values[("A", "D")] = 0.1 + 0.2  # not exactly representable: must come back bit for bit
    day = date(2021, 1, 11)
    added = repo.add_day_report(unit.id, day, values, report_id="614f24586a93d2db8f59b323")
    repo.add_day_report(unit.id, day + timedelta(days=1), all_values(0.6))

    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    report = repo.day_report(unit.id, day)
    sa.event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 1

    assert report == added
    assert report.report_id == "614f24586a93d2db8f59b323"
    assert report.unit_code == "PT10" and report.report_date == day
    assert len(report.values) == 28
    assert report.values == values
    assert report.value("A", "D") == 0.1 + 0.2
    assert repo.day_report(unit.id, day - timedelta(days=1)) is None
    assert [r.report_date for r in repo.day_reports(day)] == [day]
    with pytest.raises(ValueError, match="Invalid report date datetime"):
        repo.day_report(unit.id, datetime(2021, 1, 11, 9, 30))
    with pytest.raises(sa.exc.IntegrityError):
        repo.add_day_report(unit.id, day, values)
    incomplete = dict(values)
    del incomplete[("T", "MTTR")]
    with pytest.raises(ValueError, match=r"\('T', 'MTTR'\)"):
        repo.add_day_report(unit.id, day + timedelta(days=5), incomplete)


def test_submitted_records_are_remembered(repo: MesRepository) -> None:
    unit = repo.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    report = repo.add_day_report(unit.id, date(2021, 1, 1), all_values())
    keys = day_report_keys(report.report_id)
    assert repo.submitted_record_ids(report.report_id) == set()
    assert repo.mark_submitted(report.report_id, [k.record_id for k in keys[:3]]) == 3
    assert repo.mark_submitted(report.report_id, [k.record_id for k in keys[2:5]]) == 2
    assert repo.submitted_record_ids(report.report_id) == {k.record_id for k in keys[:5]}
    with pytest.raises(ValueError, match="is not one of the 28 records"):
        repo.mark_submitted(report.report_id, [keys[0].record_id.replace("_101", "_108")])
    other = "a" * 24
    with pytest.raises(DayReportNotFoundError, match=other):
        repo.mark_submitted(other, [day_report_keys(other)[0].record_id])
    assert repo.submitted_record_ids(other) == set()


# ------------------------------------------------------------------------------------------
# Partner and order requests
# ------------------------------------------------------------------------------------------


def test_partner_request_upsert_inserts_updates_and_keeps(repo: MesRepository) -> None:
    first = repo.upsert_partner_requests(
        [partner(hex32(1)), partner(hex32(2), "ACCEPTED"), partner(hex32(3))]
    )
    assert (first.inserted, first.updated, first.unchanged) == (3, 0, 0)
    assert first.new_open_ids == [hex32(1), hex32(3)]
    assert first.new_open[0] == partner(hex32(1))
    stored = repo.partner_request(hex32(1))
    assert stored.status == "OPEN" and stored.transaction_ids == (TX,)
    assert stored.timestamp == 1638789671 and stored.answer_timestamp == 0

    again = repo.upsert_partner_requests(
        [partner(hex32(1)), partner(hex32(2), "ACCEPTED"), partner(hex32(3))]
    )
    assert (again.inserted, again.updated, again.unchanged, again.new_open) == (0, 0, 3, [])

    # 1 is accepted, 2 reopened (not newly seen: not in new_open), 4 is new and open.
    third = repo.upsert_partner_requests(
        [
            partner(hex32(1), "ACCEPTED", transaction_ids=[TX, "f" * 128]),
            partner(hex32(2), "OPEN"),
            partner(hex32(3)),
            partner(hex32(4)),
        ]
    )
    assert (third.inserted, third.updated, third.unchanged) == (1, 2, 1)
    assert third.new_open_ids == [hex32(4)]
    accepted = repo.partner_request(hex32(1))
    assert accepted.status == "ACCEPTED"
    assert accepted.answer_timestamp == 1638790000
    assert accepted.transaction_ids == (TX, "f" * 128)
    assert accepted.first_seen_at == stored.first_seen_at
    assert accepted.updated_at > stored.updated_at
    assert repo.partner_request(hex32(9)) is None
    assert [p.partner_request_id for p in repo.partner_requests("OPEN")] == [hex32(2), hex32(3), hex32(4)]
    assert len(repo.partner_requests()) == 4


def test_requests_first_seen_since_a_time_are_those_stored_after_it(repo: MesRepository) -> None:
    """What a sync run announces: the OPEN requests stored during the run, by whichever try."""
    repo.upsert_partner_requests([partner(hex32(1)), partner(hex32(2))])
    run_started = datetime.now(UTC)
    repo.upsert_partner_requests([partner(hex32(1)), partner(hex32(3))])  # a try's first page
    repo.upsert_partner_requests([partner(hex32(3)), partner(hex32(4), "ACCEPTED"), partner(hex32(5))])
    seen = repo.requests_first_seen("partner", run_started)
    assert [p.partner_request_id for p in seen] == [hex32(3), hex32(5)]
    assert [p.partner_request_id for p in repo.requests_first_seen("partner", run_started, None)] == [
        hex32(3),
        hex32(4),
        hex32(5),
    ]
    assert repo.requests_first_seen("order", run_started) == []
    with pytest.raises(ValueError, match="request kind"):
        repo.requests_first_seen("agent", run_started)


def test_an_item_given_twice_in_one_batch_counts_once_and_the_last_wins(repo: MesRepository) -> None:
    result = repo.upsert_partner_requests([partner(hex32(1)), partner(hex32(1), "REJECTED")])
    assert (result.inserted, result.updated, result.unchanged, result.new_open) == (1, 0, 0, [])
    assert repo.partner_request(hex32(1)).status == "REJECTED"


def test_order_request_upsert_round_trips_json_fields(repo: MesRepository) -> None:
    result = repo.upsert_order_requests([order(hex32(10)), order(hex32(11), "REJECTED")])
    assert (result.inserted, result.new_open_ids) == (2, [hex32(10)])
    stored = repo.order_request(hex32(10))
    assert stored.metadata == {"Part": "steering wheel", "Size": 3, "Special_Parameters": ["leather"]}
    assert stored.description == "Operator's note: 3 wheels"
    assert stored.files == [] and stored.type == "dummy_action"
    # The same metadata with its keys in another order is not a change.
    reordered = order(
        hex32(10), metadata={"Special_Parameters": ["leather"], "Size": 3, "Part": "steering wheel"}
    )
    same = repo.upsert_order_requests([reordered, order(hex32(11), "REJECTED")])
    assert (same.inserted, same.updated, same.unchanged) == (0, 0, 2)
    changed = repo.upsert_order_requests([order(hex32(10), "ACCEPTED", files=["drawing.pdf"])])
    assert (changed.inserted, changed.updated, changed.unchanged) == (0, 1, 0)
    assert repo.order_request(hex32(10)).files == ["drawing.pdf"]
    assert [o.abs_action_id for o in repo.order_requests("ACCEPTED")] == [hex32(10)]


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"partner_request_id": "9DF8888DEA6DF991F86E0E61B2379E46"}, "field partner_request_id"),
        ({"partner_request_id": "abc"}, "field partner_request_id 'abc'"),
        ({"status": "open"}, "field status 'open'"),
        ({"status": None}, "field status None"),
        ({"issuing_agent": "04" + "a" * 64}, "field issuing_agent"),
        ({"receiving_agent": ""}, "field receiving_agent"),
        ({"timestamp": "yesterday"}, "field timestamp 'yesterday'"),
        ({"timestamp": -1}, "field timestamp -1"),
        ({"answer_timestamp": True}, "field answer_timestamp True"),
        ({"transaction_ids": ["abc"]}, "field transaction_ids"),
        ({"transaction_ids": TX}, "field transaction_ids"),
    ],
)
def test_bad_partner_items_are_set_aside_naming_the_field_and_the_good_ones_stored(
    repo: MesRepository, bad: dict, named: str
) -> None:
    items = [partner(hex32(1)), partner(hex32(2), **bad)]
    result = repo.upsert_partner_requests(items)
    assert [p.partner_request_id for p in repo.partner_requests()] == [hex32(1)]
    assert (result.inserted, result.rejected) == (1, 1)
    assert len(result.new_rejected) == 1
    assert re.search(f"partner request #1.*{re.escape(named)}", result.new_rejected[0]["reason"])
    assert [r["reason"] for r in repo.rejected_items("partner")] == [result.new_rejected[0]["reason"]]


def test_bad_order_items_are_set_aside_naming_the_field(repo: MesRepository) -> None:
    cases = [
        (order(hex32(1), metadata="Part=wheel"), r"order request #0 .*field metadata"),
        (order(hex32(1), type=None), "field type"),
        (partner(hex32(1)), "field abs_action_id"),
        ("not an item", "expected an object"),
    ]
    for item, reason in cases:
        result = repo.upsert_order_requests([item])
        assert result.rejected == 1 and result.inserted == 0
        assert re.search(reason, result.new_rejected[0]["reason"])
    assert repo.order_requests() == []


POISON = [
    ({"description": "NUL \x00 in the middle"}, "field description"),
    ({"description": "lone surrogate \ud800"}, "field description"),
    ({"type": "x" * 300}, "field type"),
    ({"description": "d" * 20_000}, "field description"),
    ({"metadata": {"Part": "NUL \x00"}}, "field metadata"),
    ({"metadata": {"Part\udfff": 1}}, "field metadata"),
    ({"files": ["a" * 70_000]}, "field files"),
]


@pytest.mark.parametrize(("poison", "named"), POISON)
def test_a_poisoned_item_is_set_aside_once_and_the_good_ones_stored(
    repo: MesRepository, poison: dict, named: str
) -> None:
    items = [order(hex32(1)), order(hex32(2), **poison), order(hex32(3))]
    first = repo.upsert_order_requests(items)
    assert (first.inserted, first.rejected) == (2, 1)
    assert [o.abs_action_id for o in repo.order_requests()] == [hex32(1), hex32(3)]
    assert len(first.new_rejected) == 1
    assert first.new_rejected[0]["item_id"] == hex32(2)
    assert named in first.new_rejected[0]["reason"]
    # the ledger keeps listing it: set aside again, but not new (alerted once)
    again = repo.upsert_order_requests(items)
    assert (again.unchanged, again.rejected, again.new_rejected) == (2, 1, [])
    (stored,) = repo.rejected_items("order")
    assert stored["item_id"] == hex32(2) and stored["times_seen"] == 2 and named in stored["reason"]


def test_ten_thousand_items_upsert_in_chunks(engine: Engine) -> None:
    repo = MesRepository(engine, chunk_size=700)
    repo.create_schema()
    rng = random.Random(7)
    statuses = ("OPEN", "ACCEPTED", "REJECTED")
    partners = [
        partner(hex32(rng.getrandbits(128)), statuses[n % 3], timestamp=1_600_000_000 + n)
        for n in range(10_000)
    ]
    orders = [
        order(hex32(rng.getrandbits(128)), statuses[n % 3], timestamp=1_600_000_000 + n)
        for n in range(10_000)
    ]

    first = repo.upsert_partner_requests(partners)
    assert (first.inserted, first.updated, first.unchanged) == (10_000, 0, 0)
    assert len(first.new_open) == 3334
    assert repo.upsert_order_requests(orders).inserted == 10_000

    for item in partners[:150]:
        item["status"], item["answer_timestamp"] = "REJECTED", 1_700_000_000
    partners.append(partner(hex32(0)))
    second = repo.upsert_partner_requests(partners)
    assert (second.inserted, second.updated, second.unchanged) == (1, 150, 9850)
    assert second.new_open_ids == [hex32(0)]
    again = repo.upsert_order_requests(orders)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 10_000)
    with engine.connect() as conn:
        counts = dict(
            conn.execute(
                sa.select(schema.partner_requests.c.status, sa.func.count()).group_by(
                    schema.partner_requests.c.status
                )
            ).all()
        )
    assert counts == {"OPEN": 3334 - 50 + 1, "ACCEPTED": 3333 - 50, "REJECTED": 3333 + 100}


def test_concurrent_syncs_report_each_new_item_once(engine: Engine) -> None:
    MesRepository(engine).create_schema()
    items = [partner(hex32(n)) for n in range(1, 501)]
    results, errors = [], []

    def sync() -> None:
        try:
            results.append(MesRepository(engine).upsert_partner_requests(items))
        except Exception as exc:  # collected: a thread's exception would otherwise be lost
            errors.append(exc)

    threads = [threading.Thread(target=sync) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(r.inserted for r in results) == [0, 0, 0, 500]
    assert sum(len(r.new_open) for r in results) == 500
    assert sum(r.unchanged for r in results) == 1500
