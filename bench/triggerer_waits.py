"""100 deferred gateway waits held at once by one triggerer, on the production shape.

Usage (from the repository root; about 10 minutes on two cores, needs what ``make production``
needs)::

    .venv/bin/python bench/triggerer_waits.py [--waits 100] [--no-write]

It starts the production shape (:mod:`scripts.production_stack`: CeleryExecutor, two workers,
PostgreSQL metadata, 3 Apache Kafka brokers) with request-id echo and a request pool big enough
for every wait, and the gateway sandbox holding every answer (its ``--hold-file`` knob). A DAG of
100 deferrable ``ListPartnerRequestsOperator`` tasks sends its requests from the workers and
defers: the waits move to the triggerer, and the workers' slots are free. With all of them
deferred it measures, over 30 s, the triggerer's CPU and memory (its whole process tree, from
``/proc``) and the task instances running on workers (0 expected); then it releases the answers
(removes the hold file) and times how long until every task left the deferred state (its trigger
fired with its answer), and until the run succeeded.

Prints the figures and writes them into the "Production shape" section of ``bench/RESULTS.md``
(``make bench`` keeps that section).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402
from bench.stack_api import StackApi  # noqa: E402
from local_services.ports import free_port  # noqa: E402
from local_services.termination import stop_on_termination  # noqa: E402
from scripts.production_stack import ProductionStack  # noqa: E402
from scripts.stack.airflow_api import connection_json  # noqa: E402
from scripts.stack.processes import session_members  # noqa: E402
from scripts.stack.settings import TOKEN_CONN_ID, Settings  # noqa: E402

DAG_ID = "bench_deferred_waits"

DAG_SOURCE = '''
"""Benchmark only: {waits} deferrable gateway waits at once."""
from airflow.sdk import dag

from blockchain_provider.operators import ListPartnerRequestsOperator
from blockchain_provider.pools import pool_name


@dag(dag_id="{dag_id}", schedule=None, max_active_tasks={waits}, tags=["bench"])
def {dag_id}():
    for number in range({waits}):
        ListPartnerRequestsOperator(
            task_id=f"wait_{{number:03d}}", deferrable=True, summary=True, pool=pool_name(), retries=0
        )


{dag_id}()
'''


def proc_tree_usage(pids: list[int]) -> tuple[float, float]:
    """CPU seconds (user + system) and RSS MiB of *pids*."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpu, rss = 0.0, 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / ticks
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, IndexError, ValueError):
            continue
    return cpu, rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waits", type=int, default=100)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    # a SIGTERM (timeout, kill) stops what the script started, as Ctrl-C does
    stop_on_termination()
    waits = args.waits
    tmp = Path(tempfile.mkdtemp(prefix="bench-triggerer-"))
    dags = tmp / "dags"
    dags.mkdir()
    for entry in (ROOT / "dags").iterdir():
        if entry.name != "__pycache__":
            (dags / entry.name).symlink_to(entry)
    (dags / f"{DAG_ID}.py").write_text(DAG_SOURCE.format(waits=waits, dag_id=DAG_ID))
    hold = tmp / "hold"
    stack = ProductionStack(
        Settings(root=ROOT, stack_dir=tmp / "stack", airflow_port=free_port(), kafka="apache", timeout=600),
        echo=True,
        pool_slots=waits + 8,
        worker_concurrency=4,
        sandbox_options=("--hold-file", str(hold)),
        extra_env={
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        },
    )
    figures: dict[str, Any] = {}
    began = time.monotonic()
    try:
        stack.up()
        # the waits are held for minutes: the token connection's answer timeout must outlast them
        token_conn = stack.read_connection(TOKEN_CONN_ID)
        if not token_conn:
            raise SystemExit(f"the stack has no {TOKEN_CONN_ID} connection")
        conn = connection_json(token_conn)
        conn["extra"] = {**conn.get("extra", {}), "timeout": 3600}
        stack.import_connections({TOKEN_CONN_ID: conn})
        api = StackApi.connect(stack)
        api.unpause_when_parsed(DAG_ID)
        hold.write_text("")  # every answer waits from now on
        run_id = api(f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {}})["dag_run_id"]
        triggered = time.monotonic()
        deadline = triggered + 1800
        while (counts := api.task_state_counts(DAG_ID, run_id)).get("deferred", 0) < waits:
            if time.monotonic() > deadline or counts.get("failed"):
                raise SystemExit(f"the waits did not all defer: {counts}")
            time.sleep(2)
        figures["all deferred after"] = time.monotonic() - triggered
        triggerer = next(s for s in stack.services if s.name == "airflow-triggerer")
        pids = session_members(triggerer.pid)
        cpu0, _ = proc_tree_usage(pids)
        window_start = time.monotonic()
        rss_samples, running_samples = [], []
        while time.monotonic() - window_start < 30:
            rss_samples.append(proc_tree_usage(pids)[1])
            counts = api.task_state_counts(DAG_ID, run_id)
            running_samples.append(counts.get("running", 0) + counts.get("queued", 0))
            time.sleep(3)
        cpu1, _ = proc_tree_usage(pids)
        window = time.monotonic() - window_start
        figures["triggerer cpu"] = 100 * (cpu1 - cpu0) / window
        figures["triggerer rss"] = max(rss_samples)
        figures["worker slots used"] = max(running_samples)
        released = time.monotonic()
        hold.unlink()
        while api.task_state_counts(DAG_ID, run_id).get("deferred", 0) > 0:
            if time.monotonic() - released > 600:
                raise SystemExit("answers not delivered within 600 s")
            time.sleep(0.25)
        figures["delivered"] = time.monotonic() - released
        from urllib.parse import quote

        while (state := api(f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}")["state"]) not in (
            "success",
            "failed",
        ):
            if time.monotonic() - released > 1800:
                raise SystemExit("the run did not finish within 1800 s of the release")
            time.sleep(1)
        figures["run done"] = time.monotonic() - released
        figures["run state"] = state
        figures["final states"] = api.task_state_counts(DAG_ID, run_id)
    finally:
        stack.down()
        # the stack's ledger holds the agents' private keys, its Airflow home the Fernet key
        shutil.rmtree(tmp, ignore_errors=True)
    figures["whole run"] = time.monotonic() - began
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"- {waits} deferred `ListPartnerRequestsOperator` waits (echo on, pool {waits + 8} slots), "
        f"all deferred {figures['all deferred after']:.0f} s after the trigger (2 workers x 4 slots start them)",
        f"- while all {waits} were held: triggerer (its process tree) CPU {figures['triggerer cpu']:.1f}% of one "
        f"core over 30 s, RSS {figures['triggerer rss']:.0f} MiB; task instances running or queued on "
        f"workers: {figures['worker slots used']}",
        f"- answers released at once: every task out of the deferred state {figures['delivered']:.1f} s later; "
        f"the run finished ({figures['run state']}) {figures['run done']:.0f} s after the release "
        f"(the {waits} resumed tasks finish on 2 x 4 worker slots); final task states {figures['final states']}",
        "- how: task states polled through the REST API every 0.25 s "
        "(so the delivery figure is within about half a second); CPU and RSS summed over the triggerer's process tree from /proc; the project's scheduled DAGs are unpaused on the same stack, and their answers are held too",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        results.write_run(
            results.PRODUCTION_HEADING, "bench/triggerer_waits.py", load, figures["whole run"] / 60, text
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
