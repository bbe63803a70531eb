"""
### Day report to the blockchain

Every day at **09:30** plant time, each production unit's report of the **previous day**
becomes 28 records of type `DayReportIndicator` on the ledger: four shifts (A, B, C and the
day average T) times seven indicators (availability, performance, quality, OEE, MTBF, MTTR,
production time). Record ids follow PROTOCOL.md §3.5 (`<report id>_<shift><indicator>`).

- The record type is created unless the MES remembers creating it (no read of the ledger).
- Units are mapped dynamically: one task per unit with a report that day.
- Each indicator is one non-dynamic record with a one-element properties list (its value),
  described with the sources' labels (`001_21_01_02_PT10 Turno A Disponibilty`).
- Re-running a day (a retry, a clear, a backfill) creates nothing twice: records already
  written are skipped, and the gateway confirms an identical record instead of duplicating it.
- No catch-up; a past day is reported with a backfill
  (`airflow backfill create --dag-id blockchain_day_report --from-date ... --to-date ...`) or a
  manual run with the `day` parameter.
- A deadline alert fires if the run has not finished by 10:30.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from airflow.sdk import (
    AsyncCallback,
    CronTriggerTimetable,
    DeadlineAlert,
    DeadlineReference,
    Param,
    dag,
    get_current_context,
    task,
)
from blockchain_common import (
    PLANT_TIMEZONE,
    REQUEST_POOL,
    START_DATE,
    TAGS,
    default_args,
    flows,
    gateway,
    mes,
)

log = logging.getLogger(__name__)


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
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=1),
        callback=AsyncCallback(
            "blockchain_provider.notifications.deadline_missed",
            kwargs={"message": "The day report has not finished by 10:30 (run started 09:30)"},
        ),
    ),
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

    @task(pool=REQUEST_POOL)
    def ensure_record_type() -> None:
        """Create record type `DayReportIndicator` unless the MES remembers creating it."""
        from include.day_report_keys import (
            DAY_REPORT_RECORD_PROPERTIES,
            DAY_REPORT_RECORD_TYPE,
            DAY_REPORT_RECORD_TYPE_DESCRIPTION,
        )

        with gateway() as hook:
            flows.ensure_record_type(
                hook,
                mes(),
                DAY_REPORT_RECORD_TYPE,
                DAY_REPORT_RECORD_TYPE_DESCRIPTION,
                DAY_REPORT_RECORD_PROPERTIES,
            )

    @task
    def reports_of_the_day(day: str) -> list[dict[str, str]]:
        """The units that have a report for the day: one mapped task each."""
        reports = mes().day_reports(date.fromisoformat(day))
        log.info("%d unit(s) have a report for %s", len(reports), day)
        return [{"report_id": r.report_id, "unit": r.unit_code, "day": day} for r in reports]

    @task(pool=REQUEST_POOL, map_index_template="{{ unit }}")
    def send_unit_report(report: dict[str, str]) -> dict[str, int]:
        """Write the unit's 28 indicator records, skipping those already on the ledger."""
        get_current_context()["unit"] = report["unit"]
        with gateway() as hook:
            result = flows.submit_day_report(hook, mes(), report["report_id"])
        return {"written": result.written, "already_done": result.already_done}

    reports = reports_of_the_day(report_day())
    ensure_record_type() >> reports
    send_unit_report.expand(report=reports)


blockchain_day_report()
