"""The day report of 5 units (140 records) with a gateway that answers every write 1 s late, echo
off (pool 1 slot) then echo on (8 slots), on the production shape.

Usage (from the repository root; about 8 minutes on two cores, needs what ``make production``
needs)::

    .venv/bin/python bench/serial_day_report.py [--units 5] [--delay-ms 1000] [--no-write]

It starts the production shape (:mod:`scripts.production_stack`: CeleryExecutor, two workers of
2 slots each, PostgreSQL metadata and MES database, 3 Apache Kafka brokers, the triggerer) with
the gateway sandbox answering every request ``--delay-ms`` late (concurrently) and tracing what it
answers, fills the MES with the units' reports, then triggers ``blockchain_day_report`` for a day
through the REST API and times it until the run has finished. Then the same for the day before,
after the sandbox restarts with echo and the pool has 8 slots. Each run is checked: every record
on the ledger once, and, without echo, no record request reaching the gateway before the answer
to the one before it was out. The protocol's floor without echo is one delay per record (one
request in flight for the master token).

Prints the figures and writes them into the "Day report at the gateway's pace" section of
``bench/RESULTS.md`` (``make bench`` keeps that section).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402
from bench.harness import load_average  # noqa: E402
from bench.stack_api import StackApi, running_stack, scratch_stack_settings  # noqa: E402
from gateway_sandbox.ledger import Ledger  # noqa: E402
from gateway_sandbox.trace import read_trace  # noqa: E402
from include.day_report_keys import DAY_REPORT_RECORD_TYPE  # noqa: E402
from include.sample_data import generate_plant  # noqa: E402
from local_services.termination import stop_on_termination  # noqa: E402
from scripts.production_stack import ProductionStack  # noqa: E402

DAG_ID = "blockchain_day_report"
DAY = date(2026, 11, 27)
RECORDS_PER_UNIT = 28


def traced_records(trace: Path) -> list[dict[str, Any]]:
    """The record requests the sandbox answered, in the order it read them."""
    topic = f"BLK_Rec_{DAY_REPORT_RECORD_TYPE}"
    return [entry for entry in read_trace(trace) if entry["topic"] == topic]


def day_report(api: StackApi, ledger: Ledger, trace: Path, day: date, units: int) -> dict[str, Any]:
    """Run the day report of *day*; time it from the trigger to the run's end."""
    before = ledger.count_records(DAY_REPORT_RECORD_TYPE)
    traced_before = len(traced_records(trace))
    begin = time.monotonic()
    run_id = api(f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"day": day.isoformat()}})[
        "dag_run_id"
    ]
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"
    while (state := api(path)["state"]) not in ("success", "failed"):
        if time.monotonic() - begin > 3 * 3600:
            raise SystemExit("the day report did not finish within 3 hours")
        time.sleep(0.5)
    elapsed = time.monotonic() - begin
    written = ledger.count_records(DAY_REPORT_RECORD_TYPE) - before
    requests = traced_records(trace)[traced_before:]
    overlaps = sum(after["received"] < prior["answered"] for prior, after in itertools.pairwise(requests))
    tries = api(f"{path}/taskInstances?limit=1000")["task_instances"]
    span = requests[-1]["answered"] - requests[0]["received"] if requests else 0.0
    return {
        "state": state,
        "elapsed": elapsed,
        "written": written,
        "sent": len(requests),
        "overlaps": overlaps,
        "span": span,
        "expected": units * RECORDS_PER_UNIT,
        "retries": sum(max(0, int(t.get("try_number") or 1) - 1) for t in tries),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=5)
    parser.add_argument("--delay-ms", type=float, default=1000.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    stop_on_termination()  # a SIGTERM (timeout, kill) stops what the script started, as Ctrl-C does
    delay = args.delay_ms / 1000
    figures: dict[str, dict[str, Any]] = {}
    with scratch_stack_settings("bench-serial-day-report-") as (tmp, settings):
        trace = tmp / "trace.jsonl"
        stack = ProductionStack(
            settings,
            echo=False,
            pool_slots=1,
            sandbox_options=("--delay-ms", f"{args.delay_ms:g}", "--trace", str(trace)),
        )
        began = time.monotonic()
        with running_stack(stack, DAG_ID) as (api, engine):
            generate_plant(engine, units=args.units, weeks=1, end_date=DAY)
            ledger = Ledger(str(settings.ledger))
            figures["echo off, pool 1 slot"] = day_report(api, ledger, trace, DAY, args.units)
            stack.restart_sandbox(echo=True, pool_slots=8)
            figures["echo on, pool 8 slots"] = day_report(
                api, ledger, trace, DAY - timedelta(days=1), args.units
            )
    whole = time.monotonic() - began
    load = load_average()
    lines = []
    for name, f in figures.items():
        floor = f["expected"] * delay
        lines.append(
            f"- {name}: day report of {args.units} units ({f['written']}/{f['expected']} records written, "
            f"{f['sent']} record requests at the gateway, run {f['state']}, {f['retries']} retries) in "
            f"{f['elapsed']:.1f} s from the trigger, {f['elapsed'] / f['expected']:.2f} s a record; the gateway "
            f"saw the records over {f['span']:.1f} s; {f['overlaps']} record requests sent before the answer "
            f"to the one before; protocol floor without echo {floor:.0f} s ({f['elapsed'] / floor:.2f}x)"
        )
    lines.append(
        f"- how: gateway sandbox `--delay-ms {args.delay_ms:g}` (every answer that late, concurrently), "
        "CeleryExecutor with 2 workers x 2 slots, the triggerer; run states polled through the REST API "
        "every 0.5 s; the record type is created in the first run (one more delayed request)"
    )
    text = "\n".join(lines)
    print(text)
    bad = [n for n, f in figures.items() if f["state"] != "success" or f["written"] != f["expected"]]
    if not args.no_write:
        results.write_run(
            results.SERIAL_DAY_REPORT_HEADING, "bench/serial_day_report.py", load, whole / 60, text
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
