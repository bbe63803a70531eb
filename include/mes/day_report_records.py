"""The ledger records of one day report that are still to be written, and noting those written.

The MES remembers each record it wrote (``submitted_records``), so a retry or a rerun of a day
sends only what is missing; a record sent twice anyway (a crash between the answer and the note)
is confirmed by the gateway as identical, not duplicated.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from include.day_report_keys import (
    day_report_keys,
    day_report_record_description,
    day_report_record_properties,
)
from include.mes.repository import DayReportNotFoundError, MesRepository


def records_to_write(repository: MesRepository, report_id: str) -> tuple[list[dict[str, Any]], int]:
    """The records of report *report_id* not yet on the ledger, and how many already are.

    Each record is one indicator of one shift, with a one-element properties list (its value).

    :raises DayReportNotFoundError: the MES has no such report.
    """
    report = repository.day_report_by_id(report_id)
    if report is None:
        raise DayReportNotFoundError(f"Day report {report_id} is not in the MES")
    done = repository.submitted_record_ids(report.report_id)
    records = [
        {
            "record_id": key.record_id,
            "description": day_report_record_description(report, key),
            "properties": day_report_record_properties(report, key),
        }
        for key in day_report_keys(report.report_id)
        if key.record_id not in done
    ]
    return records, len(done)


def note_written(repository: MesRepository, report_id: str, record_ids: Iterable[str]) -> int:
    """Note that these records of report *report_id* are on the ledger; returns how many are new."""
    return repository.mark_submitted(report_id, record_ids)
