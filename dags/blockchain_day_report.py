"""
### Day report to the blockchain

Every day at **09:30** plant time, each production unit's report of the **previous day**
becomes 28 records of type `DayReportIndicator` on the ledger: four shifts (A, B, C and the
day average T) times seven indicators (availability, performance, quality, OEE, MTBF, MTTR,
production time). Record ids follow PROTOCOL.md §3.5 (`<report id>_<shift><indicator>`).

- The record type is created once per gateway: the MES remembers it (table
  `gateway_record_types`) and later runs send no `BLK_Rty`. A refusal of a type the MES has no
  memory of (a restored database) is taken as "it exists", remembered and logged as a warning.
- Units are mapped dynamically: one task per unit with a report that day.
- Each indicator is one non-dynamic record with a one-element properties list (its value),
  described with the sources' labels (`001_21_01_02_PT10 Turno A Disponibilty`).
- A gateway that takes more than a second to answer: with request-id echo a unit's records are
  sent at once and awaited in the triggerer; without, the triggerer sends them one at a time as
  the answers come, and the unit's task resumes once, not once per record.
- Re-running a day (a retry, a clear, a backfill) creates nothing twice: the records the MES
  noted written are skipped; the gateway may refuse any second creation.
- No catch-up; a past day is reported with a backfill
  (`airflow backfill create --dag-id blockchain_day_report --from-date ... --to-date ...`) or a
  manual run with the `day` parameter.
- A deadline alert fires if the run has not finished by 10:30.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from airflow.sdk import (
    AsyncCallback,
    CronTriggerTimetable,
    DeadlineAlert,
    DeadlineReference,
    Param,
    dag,
    task,
)
from blockchain_common import (
    PLANT_TIMEZONE,
    START_DATE,
    TAGS,
    deadline_alerts_on,
    default_args,
    gateway_args,
    mes_repository,
    record_type_memory,
)

from blockchain_provider.operators import CreateRecordsOperator, EnsureRecordTypeOperator
from include.day_report_keys import DAY_REPORT_RECORD_TYPE, DAY_REPORT_RECORD_TYPE_DECLARATION

log = logging.getLogger(__name__)


def unit_records(context: Mapping[str, Any], report_id: str, **_: Any) -> tuple[list[dict[str, Any]], int]:
    """The unit's indicator records not yet on the ledger, and how many already are."""
    from include.mes.day_report_records import records_to_write

    return records_to_write(mes_repository(), report_id)


def note_written(record_ids: list[str], context: Mapping[str, Any], report_id: str, **_: Any) -> None:
    """Note in the MES the records written, so a retry or rerun sends only what is missing."""
    from include.mes.day_report_records import note_written

    note_written(mes_repository(), report_id, record_ids)


@dag(
    dag_id="blockchain_day_report",
    schedule=CronTriggerTimetable("30 9 * * *", timezone=PLANT_TIMEZONE),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=[*TAGS, "day-report"],
    doc_md=__doc__,
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Report day",
            description="The day to report (YYYY-MM-DD). Empty: the day before the run's date.",
        )
    },
    # BLOCKCHAIN_DEADLINE_ALERTS=off for `airflow dags test` on Airflow 3.3.2 (apache/airflow#73428)
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=1),
        callback=AsyncCallback(
            "blockchain_provider.notifications.deadline_missed",
            kwargs={"message": "The day report has not finished by 10:30 (run started 09:30)"},
        ),
    )
    if deadline_alerts_on()
    else None,
)
def blockchain_day_report() -> None:
    @task
    def report_day(**context: Any) -> str:
        """The day to report: the `day` parameter, else the day before the run's date (plant time)."""
        chosen = context["params"].get("day")
        if chosen:
            return date.fromisoformat(chosen).isoformat()
        run_date = context["logical_date"] or context["dag_run"].run_after
        return run_date.in_timezone(PLANT_TIMEZONE).subtract(days=1).date().isoformat()

    ensure_record_type = EnsureRecordTypeOperator(
        task_id="ensure_record_type",
        doc_md="Create record type `DayReportIndicator` unless the MES created it on this gateway already.",
        **DAY_REPORT_RECORD_TYPE_DECLARATION,
        record_types=record_type_memory,
        **gateway_args(),
    )

    @task
    def reports_of_the_day(day: str) -> list[dict[str, str]]:
        """The units that have a report for the day: one mapped task each."""
        reports = mes_repository().day_reports(date.fromisoformat(day))
        log.info("%d unit(s) have a report for %s", len(reports), day)
        return [{"report_id": r.report_id, "unit": r.unit_code, "day": day} for r in reports]

    reports = reports_of_the_day(report_day())
    ensure_record_type >> reports
    # deferred: answers that take longer than a second are awaited in the triggerer (without echo,
    # the rest of the unit's records are sent from there, one at a time: one deferral per unit)
    CreateRecordsOperator.partial(
        task_id="send_unit_report",
        doc_md="Write the unit's 28 indicator records, skipping those already on the ledger.",
        map_index_template="{{ task.records_kwargs['unit'] }}",
        record_type=DAY_REPORT_RECORD_TYPE,
        records=unit_records,
        on_written=note_written,
        **gateway_args(),
    ).expand(records_kwargs=reports)


blockchain_day_report()
