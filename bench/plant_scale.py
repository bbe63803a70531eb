"""Plant scale: a hundred production units whose changes reach a gateway that answers every write
a second late, on the production shape.

Usage (from the repository root; needs what ``make production`` needs)::

    .venv/bin/python bench/plant_scale.py [--units 100] [--busy-units 5] [--extra-changes 4]
        [--delay-ms 1000] [--echo] [--day-report] [--no-write]

It starts the production shape (:mod:`scripts.production_stack`: CeleryExecutor, two workers of
2 slots each, PostgreSQL metadata and MES database, 3 Apache Kafka brokers, the triggerer) with
the gateway sandbox in its ``original`` profile (a second creation refused, no read topics),
tracing what it answers. The MES gets ``--units`` production units, and each unit's first update
(its record and reporter created) is made with a gateway that answers at once: not timed. Then the
sandbox restarts answering every write ``--delay-ms`` late (concurrently; lists at once), and the
timed part begins: one change of every unit, plus ``--extra-changes`` more for each of
``--busy-units`` of them, all triggered at once through the MES's path
(:func:`include.mes_client.patch_production_unit`: save, note, trigger through the REST API; one
thread per unit, each unit's changes in the order they are made).

It waits until every change is on the ledger, and checks
- that each unit's changes were applied in the order they were made;
- from the sandbox's trace, that no two requests of one token were in flight at once (without
  echo an answer is matched by its token: one request in flight per token is the protocol's rule);
- from the metadata database (sampled every 0.2 s from the first trigger until the last change is
  on the ledger), how many worker slots the update DAG's tasks held (state ``running``; a deferred
  task holds none).

``--day-report`` then runs the day report of the same units (28 records each) for the last day
of the sample reports, with the same delay (:func:`bench.serial_day_report.day_report`).

The last line is::

    plant scale: applied A/N changes on U units, gateway delay D s: all applied in S s, order kept: yes|no, peak busy worker slots W

The figures are written into the "Plant scale" section of ``bench/RESULTS.md`` (one without
echo, one with) unless
``--no-write``; the exit status is 1 when a change is missing or out of order.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402
from bench.harness import load_average  # noqa: E402
from bench.serial_day_report import day_report  # noqa: E402
from bench.stack_api import StackApi, running_stack, scratch_stack_settings  # noqa: E402
from gateway_sandbox.ledger import Ledger  # noqa: E402
from gateway_sandbox.trace import in_flight_overlaps, read_trace  # noqa: E402
from include.mes.models import ProductionUnit  # noqa: E402
from include.mes.repository import MesRepository  # noqa: E402
from include.mes_client import PRODUCTION_UNIT_UPDATE_DAG_ID, MesAirflowClient, patch_production_unit  # noqa: E402
from include.sample_data import generate_plant  # noqa: E402
from local_services.termination import stop_on_termination  # noqa: E402
from scripts.production_stack import AIRFLOW_DATABASE, ProductionStack  # noqa: E402
from scripts.stack.airflow_api import admin_password  # noqa: E402
from scripts.stack.settings import ADMIN_USER  # noqa: E402

DAG_IDS = (PRODUCTION_UNIT_UPDATE_DAG_ID, "blockchain_day_report")
#: The trace's topic of a unit's record updates (each signed by the unit's reporter)
UNIT_TOPIC = "BLK_Rec_ProductionUnit"


class SlotSampler(threading.Thread):
    """The most task instances of *dag_id* in state ``running`` at once (each holds a worker
    slot), sampled from the metadata database until stopped."""

    def __init__(self, metadata_url: str, dag_id: str, every: float = 0.2) -> None:
        super().__init__(name="slot-sampler", daemon=True)
        self.metadata_url, self.dag_id, self.every = metadata_url, dag_id, every
        self.peak = 0
        self.samples = 0
        self.error: BaseException | None = None
        self._done = threading.Event()

    def run(self) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(self.metadata_url)
        query = sa.text("SELECT count(*) FROM task_instance WHERE dag_id = :dag_id AND state = 'running'")
        try:
            with engine.connect() as conn:
                while not self._done.is_set():
                    busy = conn.execute(query, {"dag_id": self.dag_id}).scalar_one()
                    conn.commit()
                    self.peak = max(self.peak, busy)
                    self.samples += 1
                    self._done.wait(self.every)
        except BaseException as exc:  # raised again by stop(): no silent peak of 0
            self.error = exc
        finally:
            engine.dispose()

    def stop(self) -> int:
        """The peak; raises what ended the sampling early, if anything did."""
        self._done.set()
        self.join(30)
        if self.error is not None:
            raise RuntimeError(f"sampling the metadata database failed: {self.error}") from self.error
        return self.peak


def wait_for_runs(metadata_url: str, run_ids: set[str], timeout: float) -> dict[str, str]:
    """The final state of each run of the update DAG in *run_ids*, read from the metadata database
    (the REST API pages at 100 runs)."""
    import sqlalchemy as sa

    engine = sa.create_engine(metadata_url)
    query = sa.text("SELECT run_id, state FROM dag_run WHERE dag_id = :dag_id").bindparams(
        dag_id=PRODUCTION_UNIT_UPDATE_DAG_ID
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                states = {run_id: state for run_id, state in conn.execute(query) if run_id in run_ids}
            if len(states) == len(run_ids) and all(s in ("success", "failed") for s in states.values()):
                return states
            if time.monotonic() > deadline:
                raise SystemExit(f"{sum(s not in ('success', 'failed') for s in states.values())} runs "
                                 f"not finished within {timeout:.0f} s")  # fmt: skip
            time.sleep(1)
    finally:
        engine.dispose()


def trigger_all(
    client: MesAirflowClient, repository: MesRepository, changes: dict[int, list[str]]
) -> tuple[set[str], float]:
    """Make every unit's changes through the MES's path, units at once and each unit's in order;
    the run ids and when the first trigger began (``time.monotonic``)."""
    run_ids: set[str] = set()
    lock = threading.Lock()

    def post(unit_id: int) -> None:
        for status in changes[unit_id]:
            run_id = patch_production_unit(repository, client, unit_id, status, f"P {status}")
            with lock:
                run_ids.add(run_id)

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(32, len(changes))) as pool:
        for future in [pool.submit(post, unit_id) for unit_id in changes]:
            future.result()  # a failed trigger ends the benchmark, naming its error
    return run_ids, began


def applied(ledger: Ledger, unit: ProductionUnit, sent: list[str]) -> list[str]:
    """The statuses of *sent* on the ledger for *unit*, in ledger order."""
    return [u["Status"] for u in ledger.record_updates(f"PU_{unit.code}") if u.get("Status") in sent]


def plant_changes(
    api: StackApi,
    stack: ProductionStack,
    repository: MesRepository,
    ledger: Ledger,
    trace: Path,
    units: list[ProductionUnit],
    busy_units: int,
    extra: int,
    timeout: float,
) -> dict[str, Any]:
    """The timed part: every unit's changes at once, until all are on the ledger."""
    changes = {
        unit.id: [f"S{n}-{unit.code}" for n in range(1 + (extra if i < busy_units else 0))]
        for i, unit in enumerate(units)
    }
    total = sum(map(len, changes.values()))
    metadata = stack.postgres.url(AIRFLOW_DATABASE)  # type: ignore[union-attr]
    sampler = SlotSampler(metadata, PRODUCTION_UNIT_UPDATE_DAG_ID)
    traced_before = time.time()
    sampler.start()
    client = MesAirflowClient(stack.settings.url, ADMIN_USER, admin_password(stack.settings))
    run_ids, began = trigger_all(client, repository, changes)
    triggered = time.monotonic() - began
    deadline = began + timeout
    done = 0
    while True:
        done = sum(len(applied(ledger, unit, changes[unit.id])) for unit in units)
        if done >= total or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    elapsed = time.monotonic() - began
    peak = sampler.stop()
    states = wait_for_runs(metadata, run_ids, timeout=max(60.0, deadline - time.monotonic()))
    in_order = all(applied(ledger, unit, changes[unit.id]) == changes[unit.id] for unit in units)
    entries = [e for e in read_trace(trace) if e["received"] >= traced_before and e["topic"] == UNIT_TOPIC]
    same_token, across = in_flight_overlaps(entries)
    tokens_at_once = max((sum(e["received"] <= x["received"] < e["answered"] for e in entries)
                          for x in entries), default=0)  # fmt: skip
    return {
        "total": total,
        "applied": done,
        "elapsed": elapsed,
        "triggered": triggered,
        "in_order": in_order,
        "peak_slots": peak,
        "samples": sampler.samples,
        "succeeded": list(states.values()).count("success"),
        "runs": len(states),
        "same_token": len(same_token),
        "token_pairs": len(across),
        "in_flight": tokens_at_once,
        "requests": len(entries),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--busy-units", type=int, default=5, help="units with more than one change")
    parser.add_argument("--extra-changes", type=int, default=4, help="more changes of each busy unit")
    parser.add_argument("--delay-ms", type=float, default=1000.0, help="answer every write this late")
    parser.add_argument("--echo", action="store_true", help="a gateway that echoes request ids (8-slot pool)")
    parser.add_argument("--day-report", action="store_true", help="then the day report of the same units")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give the changes this long")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.busy_units <= args.units:
        parser.error(f"--busy-units {args.busy_units}: expected 1 to --units ({args.units})")
    stop_on_termination()  # a SIGTERM (timeout, kill) stops what the script started, as Ctrl-C does
    pool_slots = 8 if args.echo else 1
    figures: dict[str, Any] = {}
    report: dict[str, Any] | None = None
    with scratch_stack_settings("bench-plant-scale-") as (tmp, settings):
        trace = tmp / "trace.jsonl"
        gateway = ("--profile", "original", "--trace", str(trace))
        stack = ProductionStack(
            settings,
            echo=args.echo,
            pool_slots=pool_slots,
            sandbox_options=(*gateway, "--write-delay-ms", "0"),
        )
        began = time.monotonic()
        with running_stack(stack, *DAG_IDS) as (api, engine):
            repository = MesRepository(engine)
            day = date.today() - timedelta(days=1)  # the sample reports' last day
            generate_plant(engine, units=args.units, weeks=1, end_date=day)
            units = repository.production_units()[: args.units]
            ledger = Ledger(str(settings.ledger))
            # not timed: each unit's first update creates its record and reporter
            started = time.monotonic()
            client = MesAirflowClient(settings.url, ADMIN_USER, admin_password(settings))
            warm, _ = trigger_all(client, repository, {unit.id: ["WARM"] for unit in units})
            states = wait_for_runs(stack.postgres.url(AIRFLOW_DATABASE), warm, timeout=3600)  # type: ignore[union-attr]
            if list(states.values()).count("success") != len(units):
                raise SystemExit(f"the first updates did not all succeed: {sorted(set(states.values()))}")
            print(f"first updates of {len(units)} units in {time.monotonic() - started:.0f} s (not timed)")
            stack.sandbox_options = (*gateway, "--write-delay-ms", f"{args.delay_ms:g}")
            stack.restart_sandbox(echo=args.echo, pool_slots=pool_slots)
            figures = plant_changes(
                api,
                stack,
                repository,
                ledger,
                trace,
                units,
                args.busy_units,
                args.extra_changes,
                args.timeout,
            )
            if args.day_report:
                report = day_report(api, ledger, trace, day, len(units))
    whole = time.monotonic() - began
    load = load_average()
    f = figures
    delay = args.delay_ms / 1000
    matching = "echo on, pool 8 slots" if args.echo else "no echo (matched by token), pool 1 slot"
    lines = [
        f"- {matching}, `--profile original --write-delay-ms {args.delay_ms:g}`: {f['total']} changes "
        f"({args.units} units, {args.extra_changes} more for {args.busy_units} of them) triggered in "
        f"{f['triggered']:.1f} s, on the ledger {f['elapsed']:.1f} s after the first trigger "
        f"({f['total'] / f['elapsed']:.2f} changes/s); {f['succeeded']}/{f['runs']} runs succeeded; "
        f"{f['requests']} unit requests at the gateway, at most {f['in_flight']} in flight at once, "
        f"{f['same_token']} of one token in flight at once; peak busy worker slots {f['peak_slots']} "
        f"({f['samples']} samples)"
    ]
    if report is not None:
        floor = report["expected"] * delay
        lines.append(
            f"- day report of {args.units} units: {report['written']}/{report['expected']} records, run "
            f"{report['state']}, {report['elapsed']:.1f} s from the trigger ({report['written'] / report['elapsed']:.1f} "
            f"records/s); protocol floor without echo {floor:.0f} s ({report['elapsed'] / floor:.2f}x); "
            f"{report['overlaps']} record requests sent before the answer to the one before"
        )
    lines.append(
        f"plant scale: applied {f['applied']}/{f['total']} changes on {args.units} units, gateway delay "
        f"{delay:g} s: all applied in {f['elapsed']:.1f} s, order kept: {'yes' if f['in_order'] else 'no'}, "
        f"peak busy worker slots {f['peak_slots']}"
    )
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        results.write_run(
            results.PLANT_SCALE_HEADINGS[args.echo], "bench/plant_scale.py", load, whole / 60, text
        )
    return 0 if f["applied"] == f["total"] and f["in_order"] else 1


if __name__ == "__main__":
    sys.exit(main())
