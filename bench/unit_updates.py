"""20 production-unit updates for 5 units at once, echo off (pool 1 slot) then echo on (8 slots).

Usage (from the repository root; about 5 minutes on two cores, needs what ``make production``
needs)::

    .venv/bin/python bench/unit_updates.py [--no-write] [--delay-ms 1000]

It starts the production shape (:mod:`scripts.production_stack`: CeleryExecutor, two workers of
2 slots each, PostgreSQL metadata and MES database, 3 Apache Kafka brokers) without echo and
with a 1-slot request pool, unpauses ``blockchain_production_unit_update`` and gives each of 5
units its first update (which creates its record and reporter; not timed). Then, as the MES's
PATCH view does (:func:`include.mes_client.patch_production_unit`: save, note, trigger through the
REST API), 5 threads make 4 changes each, one unit per thread, and it times from the first
trigger until all 20 runs have finished (run states polled every 0.5 s). The same again after the
gateway sandbox restarts with echo and the pool has 8 slots. It checks that every change was
applied, in order per unit, and counts the changes a later run of the unit applied (a drain).
``--delay-ms D`` has the sandbox answer every write D ms late (as a real gateway answers once its
transaction is committed): the waits are then deferred, and the figures are printed, not written.

Prints the figures and writes them into the "Production-unit updates" section of
``bench/RESULTS.md`` (``make bench`` keeps that section).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402
from bench.harness import load_average  # noqa: E402
from bench.stack_api import StackApi, running_stack, scratch_stack_settings  # noqa: E402
from gateway_sandbox.ledger import Ledger  # noqa: E402
from include.mes.repository import MesRepository  # noqa: E402
from include.mes_client import PRODUCTION_UNIT_UPDATE_DAG_ID, MesAirflowClient, patch_production_unit  # noqa: E402
from local_services.termination import stop_on_termination  # noqa: E402
from scripts.production_stack import ProductionStack  # noqa: E402
from scripts.stack.airflow_api import admin_password  # noqa: E402
from scripts.stack.settings import ADMIN_USER  # noqa: E402

UNITS, PER_UNIT = 5, 4


def wait_for(api: StackApi, run_ids: set[str], timeout: float = 1200, poll: float = 0.5) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = api.run_states(PRODUCTION_UNIT_UPDATE_DAG_ID, run_ids)
        if len(states) == len(run_ids) and all(s in ("success", "failed") for s in states.values()):
            return states
        time.sleep(poll)
    raise SystemExit(f"runs not finished within {timeout:.0f} s")


def twenty_updates(
    api: StackApi, client: MesAirflowClient, repository: MesRepository, ledger: Ledger, tag: str
) -> dict[str, Any]:
    """Make 4 changes of each of 5 units at once through the MES's path; time until all ran."""
    units = repository.production_units()[:UNITS]
    sent = {unit.id: [f"{tag}-{n}" for n in range(1, PER_UNIT + 1)] for unit in units}
    run_ids: set[str] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def post(unit_id: int) -> None:
        try:
            for status in sent[unit_id]:
                run_id = patch_production_unit(repository, client, unit_id, status, f"P {status}")
                with lock:
                    run_ids.add(run_id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    begin = time.monotonic()
    threads = [threading.Thread(target=post, args=(unit.id,)) for unit in units]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"a trigger failed: {errors[0]}")
    triggered = time.monotonic() - begin
    states = wait_for(api, run_ids)
    elapsed = time.monotonic() - begin
    succeeded = list(states.values()).count("success")
    drained = 0
    for unit in units:
        changes = [c for c in repository.unit_changes(unit.id) if c.dag_run_id in run_ids]
        applied = [
            u["Status"] for u in ledger.record_updates(f"PU_{unit.code}") if u["Status"] in sent[unit.id]
        ]
        if applied != sent[unit.id] or any(c.outcome != "applied" for c in changes):
            raise SystemExit(f"unit {unit.code}: applied {applied}, sent {sent[unit.id]}")
        drained += sum(c.applied_by_run != c.dag_run_id for c in changes)
    return {"elapsed": elapsed, "triggered": triggered, "succeeded": succeeded, "drained": drained}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--delay-ms", type=int, default=0, help="answer every write this late (default: 0)")
    args = parser.parse_args(argv)
    # a SIGTERM (timeout, kill) stops what the script started, as Ctrl-C does
    stop_on_termination()
    delay = ("--delay-ms", str(args.delay_ms)) if args.delay_ms else ()
    figures: dict[str, dict[str, Any]] = {}
    with scratch_stack_settings("bench-unit-updates-") as (_tmp, settings):
        stack = ProductionStack(settings, echo=False, pool_slots=1, sandbox_options=delay)
        began = time.monotonic()
        with running_stack(stack, PRODUCTION_UNIT_UPDATE_DAG_ID) as (api, engine):
            repository = MesRepository(engine)
            ledger = Ledger(str(settings.ledger))
            client = MesAirflowClient(settings.url, ADMIN_USER, admin_password(settings))
            # each unit's first update creates its record and reporter: done before anything is timed
            first = {
                patch_production_unit(repository, client, unit.id, "WARM", "")
                for unit in repository.production_units()[:UNITS]
            }
            if list(wait_for(api, first).values()).count("success") != UNITS:
                raise SystemExit("the warm-up updates did not all succeed")
            figures["echo off, pool 1 slot"] = twenty_updates(api, client, repository, ledger, "OFF")
            stack.restart_sandbox(echo=True, pool_slots=8)
            figures["echo on, pool 8 slots"] = twenty_updates(api, client, repository, ledger, "ON")
    whole = time.monotonic() - began
    load = load_average()
    off, on = figures["echo off, pool 1 slot"], figures["echo on, pool 8 slots"]
    late = f", gateway {args.delay_ms / 1000:g} s late" if args.delay_ms else ""
    lines = [
        f"- {name}{late}: 20 updates (4 for each of 5 units, triggered at once through the MES's path) all "
        f"finished {f['elapsed']:.1f} s after the first trigger ({f['succeeded']}/20 runs succeeded; the "
        f"20 triggers took {f['triggered']:.1f} s; {f['drained']} changes applied by a later run of their unit)"
        for name, f in figures.items()
    ]
    lines.append(
        f"- echo on with 8 slots took {on['elapsed'] / off['elapsed']:.0%} of the echo-off time "
        f"({off['elapsed'] - on['elapsed']:.1f} s less); with runs queued one at a time "
        "(`max_active_runs=1`, before the per-unit drain) both took about 45 s"
    )
    lines.append(
        "- how: CeleryExecutor, 2 workers x 2 slots; each unit's first update (record and reporter "
        "created) made before the timing; run states polled through the REST API every 0.5 s"
    )
    text = "\n".join(lines)
    print(text)
    if not args.no_write and not args.delay_ms:
        results.write_run(results.UNIT_UPDATES_HEADING, "bench/unit_updates.py", load, whole / 60, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
