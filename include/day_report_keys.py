"""Day-report and production-unit identifiers on the ledger (PROTOCOL.md sections 3.3-3.5 and 4).

Pure functions and constants; no database, Airflow or network access.

* The *flow id* of a unit's day report is ``001_YY_DD_WW_UNIT``: ``001`` marks a day report,
  ``YY`` is the two-digit ISO year, ``DD`` the ISO weekday (``01`` = Monday) and ``WW`` the ISO
  week, both zero-padded, then the unit's code. ``001_21_01_02_PT10`` is Monday of ISO week 2 of
  2021 (2021-01-11) for unit PT10. The ISO year is not always the calendar year: 2021-01-01 is
  the Friday of ISO week 53 of 2020, ``001_20_05_53_<unit>``.
* The *record id* of one indicator of one shift is ``<report id>_<shift digit><indicator two
  digits>``, e.g. ``614f24586a93d2db8f59b323_101`` (shift A, availability). A day report is
  4 shifts x 7 indicators = 28 records of record type :data:`DAY_REPORT_RECORD_TYPE`.
* A production unit is one dynamic record of type :data:`PRODUCTION_UNIT_RECORD_TYPE`, whose id
  is :func:`production_unit_record_id`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from types import MappingProxyType
from typing import Any, Protocol

__all__ = [
    "DAY_REPORT_FLOW_PREFIX",
    "DAY_REPORT_RECORD_PROPERTIES",
    "DAY_REPORT_RECORD_TYPE",
    "DAY_REPORT_RECORD_TYPE_DECLARATION",
    "DAY_REPORT_RECORD_TYPE_DESCRIPTION",
    "INDICATORS",
    "PRODUCTION_UNIT_RECORD_PROPERTIES",
    "PRODUCTION_UNIT_RECORD_TYPE",
    "PRODUCTION_UNIT_RECORD_TYPE_DESCRIPTION",
    "REPORT_ID_PATTERN",
    "SHIFTS",
    "UNIT_CODE_PATTERN",
    "DayReportLike",
    "Indicator",
    "IndicatorKey",
    "ProductionUnitLike",
    "Shift",
    "day_report_keys",
    "day_report_record_description",
    "day_report_record_properties",
    "flow_id",
    "production_unit_dynamic_properties",
    "production_unit_record_description",
    "production_unit_record_id",
    "production_unit_record_properties",
    "record_id",
    "validate_report_date",
    "validate_report_id",
    "validate_unit_code",
]

#: A day report's id in the MES: 24 lowercase hex characters, like a MongoDB ObjectId.
REPORT_ID_PATTERN = r"^[0-9a-f]{24}$"
#: A production unit's code, such as ``PT10``: upper-case letters and digits, at most 16.
UNIT_CODE_PATTERN = r"^[A-Z0-9]{1,16}$"
#: The first element of every day-report flow id.
DAY_REPORT_FLOW_PREFIX = "001"

_REPORT_ID_RE = re.compile(REPORT_ID_PATTERN)
_UNIT_CODE_RE = re.compile(UNIT_CODE_PATTERN)


@dataclass(frozen=True)
class Shift:
    """A shift of a day report: its code (``A``), digit in record ids (1) and label."""

    code: str
    digit: int
    label: str


@dataclass(frozen=True)
class Indicator:
    """An indicator of a day report.

    :param code: the sources' code (``D``, ``P``, ``Q``, ``OEE``, ``MTBF``, ``MTTR``, ``ProductionTime``).
    :param number: its two-digit number in record ids (1-7).
    :param label: the sources' label, spelling included (``Disponibilty`` for availability).
    :param description: what it measures, in plain words.
    :param unit: ``ratio`` (0-1), ``minutes`` or ``hours``.
    """

    code: str
    number: int
    label: str
    description: str
    unit: str


#: The four shifts in record-id order; ``T`` is the day average of ``A``, ``B`` and ``C``.
SHIFTS: dict[str, Shift] = {
    "A": Shift("A", 1, "Turno A"),
    "B": Shift("B", 2, "Turno B"),
    "C": Shift("C", 3, "Turno C"),
    "T": Shift("T", 4, "Day Average"),
}

#: The seven indicators in record-id order.
INDICATORS: dict[str, Indicator] = {
    "D": Indicator("D", 1, "Disponibilty", "availability", "ratio"),
    "P": Indicator("P", 2, "Performance", "performance", "ratio"),
    "Q": Indicator("Q", 3, "Quality", "quality", "ratio"),
    "OEE": Indicator("OEE", 4, "Overall Equipment Effectiveness", "overall equipment effectiveness", "ratio"),
    "MTBF": Indicator("MTBF", 5, "Mean Time Between Failures", "mean time between failures", "minutes"),
    "MTTR": Indicator("MTTR", 6, "Mean Time To recovery", "mean time to recovery", "minutes"),
    "ProductionTime": Indicator("ProductionTime", 7, "Production Time", "production time", "hours"),
}


@dataclass(frozen=True)
class IndicatorKey:
    """One of the 28 records of a day report: which shift, which indicator, and its record id."""

    shift: str
    indicator: str
    record_id: str
    shift_label: str
    indicator_label: str


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_report_id(report_id: object) -> str:
    """Return *report_id* if it is 24 lowercase hex characters, else raise :class:`ValueError`."""
    if not isinstance(report_id, str) or not _REPORT_ID_RE.fullmatch(report_id):
        raise ValueError(f"Invalid report id {_shown(report_id)}: expected 24 lowercase hex characters")
    return report_id


def validate_unit_code(unit_code: object) -> str:
    """Return *unit_code* if it matches :data:`UNIT_CODE_PATTERN` (like ``PT10``), else raise."""
    if not isinstance(unit_code, str) or not _UNIT_CODE_RE.fullmatch(unit_code):
        raise ValueError(
            f"Invalid production unit code {_shown(unit_code)}: expected 1-16 upper-case letters and digits"
        )
    return unit_code


def _shift(shift: object) -> Shift:
    if not isinstance(shift, str) or shift not in SHIFTS:
        raise ValueError(f"Invalid shift {_shown(shift)}: expected one of {', '.join(SHIFTS)}")
    return SHIFTS[shift]


def _indicator(indicator: object) -> Indicator:
    if not isinstance(indicator, str) or indicator not in INDICATORS:
        raise ValueError(f"Invalid indicator {_shown(indicator)}: expected one of {', '.join(INDICATORS)}")
    return INDICATORS[indicator]


def validate_report_date(day: object) -> date:
    """Return *day* if it is a date (and not a datetime), else raise :class:`ValueError`."""
    # A datetime would silently pick a calendar day in whatever time zone it carries; the
    # caller must decide which plant-local day the report is for.
    if isinstance(day, datetime) or not isinstance(day, date):
        raise ValueError(f"Invalid report date {_shown(day)}: expected a date (not a datetime)")
    return day


def flow_id(day: date, unit_code: str) -> str:
    """The day report's flow id ``001_YY_DD_WW_UNIT`` (ISO year, weekday, week; zero-padded).

    >>> flow_id(date(2021, 1, 11), "PT10")
    '001_21_01_02_PT10'
    >>> flow_id(date(2021, 1, 1), "PT10")
    '001_20_05_53_PT10'
    """
    iso = validate_report_date(day).isocalendar()
    code = validate_unit_code(unit_code)
    return f"{DAY_REPORT_FLOW_PREFIX}_{iso.year % 100:02d}_{iso.weekday:02d}_{iso.week:02d}_{code}"


def record_id(report_id: str, shift: str, indicator: str) -> str:
    """The ledger record id of one indicator of one shift: ``<report id>_<shift digit><NN>``.

    >>> record_id("614f24586a93d2db8f59b323", "A", "D")
    '614f24586a93d2db8f59b323_101'
    """
    rid = validate_report_id(report_id)
    return f"{rid}_{_shift(shift).digit}{_indicator(indicator).number:02d}"


def day_report_keys(report_id: str) -> list[IndicatorKey]:
    """The 28 keys of a day report, shift-major (A, B, C, T) then indicator order (D ... ProductionTime)."""
    rid = validate_report_id(report_id)
    return [
        IndicatorKey(
            shift=shift.code,
            indicator=indicator.code,
            record_id=f"{rid}_{shift.digit}{indicator.number:02d}",
            shift_label=shift.label,
            indicator_label=indicator.label,
        )
        for shift in SHIFTS.values()
        for indicator in INDICATORS.values()
    ]


# --------------------------------------------------------------------------------------
# Record types on the ledger (PROTOCOL.md sections 3.3 and 4)
# --------------------------------------------------------------------------------------

#: Record type of one day-report indicator; written once (a non-dynamic record). As in the
#: sources, each indicator record carries one property (its value, ours: ``Value``); which unit,
#: day, shift and indicator it is are in its record id and its description.
DAY_REPORT_RECORD_TYPE = "DayReportIndicator"
DAY_REPORT_RECORD_TYPE_DESCRIPTION = "One indicator of one shift of a production unit's day report"

DAY_REPORT_RECORD_PROPERTIES: list[dict[str, Any]] = [
    {"name": "Value", "data_type": "NUMBER", "dynamic": False},
]

#: The record type as the record-type operator is given it (its ``name``, ``description`` and
#: ``properties``).
DAY_REPORT_RECORD_TYPE_DECLARATION: Mapping[str, Any] = MappingProxyType(
    {
        "name": DAY_REPORT_RECORD_TYPE,
        "description": DAY_REPORT_RECORD_TYPE_DESCRIPTION,
        "properties": DAY_REPORT_RECORD_PROPERTIES,
    }
)

#: Record type of a production unit; its status and process change over time (dynamic).
PRODUCTION_UNIT_RECORD_TYPE = "ProductionUnit"
PRODUCTION_UNIT_RECORD_TYPE_DESCRIPTION = "A production unit of the plant: its status and the process it runs"

PRODUCTION_UNIT_RECORD_PROPERTIES: list[dict[str, Any]] = [
    {"name": "Code", "data_type": "STRING", "dynamic": False},
    {"name": "Name", "data_type": "STRING", "dynamic": False},
    {"name": "Status", "data_type": "STRING", "dynamic": True},
    {"name": "ProcessName", "data_type": "STRING", "dynamic": True},
]


class DayReportLike(Protocol):
    """What :func:`day_report_record_properties` reads from a day report (``include.mes.models.DayReport``)."""

    @property
    def report_id(self) -> str: ...
    @property
    def unit_code(self) -> str: ...
    @property
    def report_date(self) -> date: ...
    @property
    def values(self) -> Mapping[tuple[str, str], float]: ...


class ProductionUnitLike(Protocol):
    """What the production-unit helpers read from a unit (``include.mes.models.ProductionUnit``)."""

    @property
    def code(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def process_name(self) -> str: ...


def day_report_record_description(report: DayReportLike, key: IndicatorKey) -> str:
    """The description of the record *key* of *report*, with the sources' labels: its flow id, shift
    and indicator, e.g. ``001_21_01_02_PT10 Turno A Disponibilty``."""
    if key.record_id != record_id(report.report_id, key.shift, key.indicator):
        raise ValueError(f"Record id {key.record_id!r} does not belong to day report {report.report_id}")
    return (
        f"{flow_id(report.report_date, report.unit_code)} {SHIFTS[key.shift].label} "
        f"{INDICATORS[key.indicator].label}"
    )


def day_report_record_properties(report: DayReportLike, key: IndicatorKey) -> dict[str, Any]:
    """The one property value of the record *key* of *report* (``{"Value": ...}``), for record type
    ``DayReportIndicator``.

    Raises :class:`ValueError` if *key* belongs to another report or the report has no finite
    value for it.
    """
    rid = validate_report_id(report.report_id)
    expected = record_id(rid, key.shift, key.indicator)
    if key.record_id != expected:
        raise ValueError(f"Record id {key.record_id!r} does not belong to day report {rid}")
    value = report.values.get((key.shift, key.indicator))
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(
            f"Day report {rid} has no finite value for shift {key.shift} indicator {key.indicator}: {value!r}"
        )
    return {"Value": float(value)}


def production_unit_record_id(unit: ProductionUnitLike | str) -> str:
    """The ledger record id of a production unit: ``PU_<code>``, e.g. ``PU_PT10``.

    The unit's code, not its database id, names the record: the code is the plant's own,
    stable name of the unit, while database ids differ between MES installations.

    :param unit: a unit (anything with a ``code``) or the code itself.
    """
    code = unit if isinstance(unit, str) else unit.code
    return f"PU_{validate_unit_code(code)}"


def production_unit_record_description(unit: ProductionUnitLike) -> str:
    """The description of a unit's ``ProductionUnit`` record, e.g. ``Production unit PT10 Press line 10``."""
    return f"Production unit {validate_unit_code(unit.code)} {unit.name}"[:1000]


def production_unit_record_properties(unit: ProductionUnitLike) -> dict[str, str]:
    """All property values of a unit's ``ProductionUnit`` record, as written when it is created."""
    return {
        "Code": validate_unit_code(unit.code),
        "Name": unit.name,
        **production_unit_dynamic_properties(unit.status, unit.process_name),
    }


def production_unit_dynamic_properties(status: str, process_name: str) -> dict[str, str]:
    """The dynamic property values of a ``ProductionUnit`` record: what an update sends."""
    if not isinstance(status, str) or not status.strip():
        raise ValueError(f"Invalid status {_shown(status)}: expected a non-empty string")
    if not isinstance(process_name, str):
        raise ValueError(f"Invalid process name {_shown(process_name)}: expected a string")
    return {"Status": status, "ProcessName": process_name}
