"""Day-report flow ids, record ids and ledger record types (PROTOCOL.md section 3.5)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from include.day_report_keys import (
    DAY_REPORT_RECORD_PROPERTIES,
    DAY_REPORT_RECORD_TYPE,
    INDICATORS,
    PRODUCTION_UNIT_RECORD_PROPERTIES,
    PRODUCTION_UNIT_RECORD_TYPE,
    SHIFTS,
    day_report_keys,
    day_report_record_description,
    day_report_record_properties,
    flow_id,
    production_unit_dynamic_properties,
    production_unit_record_id,
    production_unit_record_properties,
    record_id,
)

SOURCE_REPORT_ID = "614f24586a93d2db8f59b323"


def test_flow_id_of_the_sources_example() -> None:
    assert flow_id(date(2021, 1, 11), "PT10") == "001_21_01_02_PT10"


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        # Friday of ISO week 53 of ISO year 2020.
        (date(2021, 1, 1), "001_20_05_53_PT10"),
        (date(2020, 12, 31), "001_20_04_53_PT10"),
        (date(2021, 1, 3), "001_20_07_53_PT10"),
        (date(2021, 1, 4), "001_21_01_01_PT10"),
        # Monday 2024-12-30 already belongs to ISO week 1 of 2025.
        (date(2024, 12, 30), "001_25_01_01_PT10"),
        # The Sunday of that week is in the calendar year 2025 too, weekday 07.
        (date(2025, 1, 5), "001_25_07_01_PT10"),
        (date(2024, 12, 29), "001_24_07_52_PT10"),
        (date(2000, 1, 1), "001_99_06_52_PT10"),
    ],
)
def test_flow_id_uses_the_iso_calendar(day: date, expected: str) -> None:
    assert flow_id(day, "PT10") == expected


def test_record_id_of_the_sources_example() -> None:
    assert record_id(SOURCE_REPORT_ID, "A", "D") == "614f24586a93d2db8f59b323_101"
    assert record_id(SOURCE_REPORT_ID, "T", "ProductionTime") == "614f24586a93d2db8f59b323_407"
    assert record_id(SOURCE_REPORT_ID, "C", "OEE") == "614f24586a93d2db8f59b323_304"


def test_the_28_keys_are_unique_ordered_and_labelled() -> None:
    keys = day_report_keys(SOURCE_REPORT_ID)
    assert len(keys) == 28
    assert len({key.record_id for key in keys}) == 28
    assert keys[0].record_id == "614f24586a93d2db8f59b323_101"
    assert keys[0].shift_label == "Turno A"
    assert keys[0].indicator_label == "Disponibilty"  # the sources' spelling
    assert keys[-1].record_id == "614f24586a93d2db8f59b323_407"
    assert keys[-1].shift_label == "Day Average"
    assert keys[-1].indicator_label == "Production Time"
    assert [key.shift for key in keys[::7]] == ["A", "B", "C", "T"]
    assert [key.indicator for key in keys[:7]] == ["D", "P", "Q", "OEE", "MTBF", "MTTR", "ProductionTime"]
    suffixes = [key.record_id.rsplit("_", 1)[1] for key in keys]
    assert suffixes == [f"{shift}{number:02d}" for shift in range(1, 5) for number in range(1, 8)]
    for key in keys:
        assert key.record_id == record_id(SOURCE_REPORT_ID, key.shift, key.indicator)
        assert key.shift_label == SHIFTS[key.shift].label
        assert key.indicator_label == INDICATORS[key.indicator].label


def test_shift_and_indicator_tables_match_the_protocol() -> None:
    assert {code: (s.digit, s.label) for code, s in SHIFTS.items()} == {
        "A": (1, "Turno A"),
        "B": (2, "Turno B"),
        "C": (3, "Turno C"),
        "T": (4, "Day Average"),
    }
    assert {code: i.number for code, i in INDICATORS.items()} == {
        "D": 1,
        "P": 2,
        "Q": 3,
        "OEE": 4,
        "MTBF": 5,
        "MTTR": 6,
        "ProductionTime": 7,
    }
    assert INDICATORS["D"].description == "availability"


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: flow_id(date(2021, 1, 11), "pt10"), "production unit code 'pt10'"),
        (lambda: flow_id(date(2021, 1, 11), ""), "production unit code ''"),
        (lambda: flow_id(date(2021, 1, 11), "PT_10"), "production unit code 'PT_10'"),
        (lambda: flow_id(date(2021, 1, 11), "P" * 17), "production unit code"),
        (lambda: flow_id(datetime(2021, 1, 11, 9, 30), "PT10"), "report date datetime"),
        (lambda: flow_id("2021-01-11", "PT10"), "report date '2021-01-11'"),
        (lambda: record_id("614F24586A93D2DB8F59B323", "A", "D"), "report id '614F24586A93D2DB8F59B323'"),
        (lambda: record_id(SOURCE_REPORT_ID[:-1], "A", "D"), "report id"),
        (lambda: record_id(SOURCE_REPORT_ID, "E", "D"), "shift 'E'"),
        (lambda: record_id(SOURCE_REPORT_ID, "A", "OEE2"), "indicator 'OEE2'"),
        (lambda: day_report_keys(12345), "report id 12345"),
    ],
)
def test_bad_inputs_are_rejected_naming_the_input(call, named: str) -> None:
    with pytest.raises(ValueError, match="Invalid " + re.escape(named)):
        call()


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2999, 12, 31)))
def test_flow_id_agrees_with_the_iso_calendar_for_any_date(day: date) -> None:
    prefix, yy, dd, ww, unit = flow_id(day, "PT10").split("_")
    iso = day.isocalendar()
    assert (prefix, unit) == ("001", "PT10")
    assert int(yy) == iso.year % 100 and len(yy) == 2
    assert int(dd) == iso.weekday and len(dd) == 2
    assert int(ww) == iso.week and len(ww) == 2
    # The Monday of that ISO week is six days or fewer back, and in the same ISO week.
    monday = day - timedelta(days=iso.weekday - 1)
    assert monday.isocalendar()[:2] == iso[:2]


@given(st.text(alphabet="0123456789abcdef", min_size=24, max_size=24))
def test_any_report_id_gives_28_distinct_record_ids_that_embed_it(report_id: str) -> None:
    ids = [key.record_id for key in day_report_keys(report_id)]
    assert len(set(ids)) == 28
    assert all(re.fullmatch(re.escape(report_id) + r"_[1-4]0[1-7]", rid) for rid in ids)


@given(st.text(max_size=30).filter(lambda s: re.fullmatch(r"[0-9a-f]{24}", s) is None))
def test_anything_but_24_lowercase_hex_is_not_a_report_id(bad: str) -> None:
    with pytest.raises(ValueError, match="Invalid report id"):
        day_report_keys(bad)


@dataclass(frozen=True)
class _Report:
    report_id: str = SOURCE_REPORT_ID
    unit_code: str = "PT10"
    report_date: date = date(2021, 1, 11)
    values: dict = field(default_factory=dict)


def test_day_report_record_properties() -> None:
    values = {(k.shift, k.indicator): 0.5 + n / 100 for n, k in enumerate(day_report_keys(SOURCE_REPORT_ID))}
    report = _Report(values=values)
    key = day_report_keys(SOURCE_REPORT_ID)[9]  # B / Q
    props = day_report_record_properties(report, key)
    assert props == {"Value": 0.59}  # one property per indicator record, as the sources send it
    assert day_report_record_description(report, key) == "001_21_01_02_PT10 Turno B Quality"
    first, oee, last = (day_report_keys(SOURCE_REPORT_ID)[i] for i in (0, 3, 27))
    assert day_report_record_description(report, first) == "001_21_01_02_PT10 Turno A Disponibilty"
    assert (
        day_report_record_description(report, oee)
        == "001_21_01_02_PT10 Turno A Overall Equipment Effectiveness"
    )
    assert day_report_record_description(report, last) == "001_21_01_02_PT10 Day Average Production Time"
    declared = {p["name"] for p in DAY_REPORT_RECORD_PROPERTIES}
    assert set(props) == declared
    assert DAY_REPORT_RECORD_TYPE == "DayReportIndicator"
    assert not any(p["dynamic"] for p in DAY_REPORT_RECORD_PROPERTIES)
    assert {p["name"]: p["data_type"] for p in DAY_REPORT_RECORD_PROPERTIES}["Value"] == "NUMBER"


def test_day_report_record_properties_refuses_a_foreign_key_or_a_missing_value() -> None:
    other = day_report_keys("0" * 24)[0]
    with pytest.raises(ValueError, match="does not belong to day report"):
        day_report_record_properties(_Report(values={("A", "D"): 0.9}), other)
    key = day_report_keys(SOURCE_REPORT_ID)[1]  # A / P
    with pytest.raises(ValueError, match="no finite value for shift A indicator P"):
        day_report_record_properties(_Report(values={("A", "D"): 0.9}), key)
    with pytest.raises(ValueError, match="no finite value"):
        day_report_record_properties(_Report(values={("A", "P"): float("nan")}), key)


@dataclass(frozen=True)
class _Unit:
    code: str = "PT10"
    name: str = "Press line 10"
    status: str = "Running"
    process_name: str = "Stamping"


def test_production_unit_record() -> None:
    assert PRODUCTION_UNIT_RECORD_TYPE == "ProductionUnit"
    assert production_unit_record_id(_Unit()) == "PU_PT10"
    assert production_unit_record_id("PT11") == "PU_PT11"
    dynamic = {p["name"] for p in PRODUCTION_UNIT_RECORD_PROPERTIES if p["dynamic"]}
    assert dynamic == {"Status", "ProcessName"}
    props = production_unit_record_properties(_Unit())
    assert props == {"Code": "PT10", "Name": "Press line 10", "Status": "Running", "ProcessName": "Stamping"}
    assert set(props) == {p["name"] for p in PRODUCTION_UNIT_RECORD_PROPERTIES}
    assert production_unit_dynamic_properties("Stopped", "") == {"Status": "Stopped", "ProcessName": ""}
    with pytest.raises(ValueError, match="Invalid production unit code 'pt10'"):
        production_unit_record_id("pt10")
    with pytest.raises(ValueError, match="Invalid status"):
        production_unit_dynamic_properties(" ", "Stamping")
