"""Thirty days of ``make run``'s schedule on the embedded broker, in accelerated time.

Usage (from the repository root):
``.venv/bin/python bench/soak_stack.py [--days 31] [--partitions 8] [--stop-p99-ms 1000] [--write]``

It starts tansu and the gateway sandbox (its own process, the original gateway's behaviour: no
echo, Python-literal answers) on the stack's topic layout (the default ``BLK_*`` names, with
``--partitions`` partitions each, as ``scripts/run_stack.py`` creates them), an MES database with
5 production units, and then runs each simulated day's work as the DAGs do, without waiting
between the runs:

* 96 slots of 15 minutes, each running the partner sync and the order sync
  (``flows.sync_requests``: one page each while there are fewer than 100);
* at 09:30, the day report: 28 records for each unit;
* once a day, the token check (one request).

One hook serves a day's work (its start, which reads ``BLK_Res`` to its end, is timed apart
once a day): a new hook per task, as the DAGs make, adds tansu's wait for the idempotent
producer's id (0.5-1 s) to every task and would take most of an hour for 31 days.

That is 333 requests a day, 10,323 in 31 days. Every request is timed (``p50``/``p99`` per window
of 1,000) and every timeout counted. It stops early when a window's p99 passes
``--stop-p99-ms``: that is the stall (on one partition, tansu's fetch takes seconds past about
1,900 batches per partition). ``--write`` puts the figures in ``bench/RESULTS.md``'s soak
section (``make bench`` keeps that section).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "dags"))
from bench.scratch_home import use_scratch_airflow_home  # noqa: E402

use_scratch_airflow_home("soak-airflow-home-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"

from bench.harness import percentile  # noqa: E402
from bench.measurements import (  # noqa: E402
    SharedHook,
    ensure_day_report_type,
    run_task,
    submit_day_reports,
)
from bench.results import RESULTS, SOAK_HEADING, write_section  # noqa: E402
from gateway_sandbox.broker import DEFAULT_TOPICS, TansuBroker, ensure_topics  # noqa: E402
from gateway_sandbox.ledger import Ledger  # noqa: E402
from local_services.termination import stop_on_termination  # noqa: E402
from scripts.stack.settings import EMBEDDED_TOPIC_PARTITIONS  # noqa: E402

SLOTS_PER_DAY = 96
UNITS = 5
WINDOW = 1000
START = date(2026, 11, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument(
        "--partitions",
        type=int,
        default=EMBEDDED_TOPIC_PARTITIONS,
        help=f"partitions of every BLK topic (default: the stack's, {EMBEDDED_TOPIC_PARTITIONS})",
    )
    parser.add_argument("--write", action="store_true", help=f"record the run in {RESULTS.name}")
    parser.add_argument(
        "--stop-p99-ms", type=float, default=1000.0, help="stop when a window's p99 passes this"
    )
    args = parser.parse_args()
    # a SIGTERM (timeout, kill) stops what the script started, as Ctrl-C does
    stop_on_termination()

    from blockchain_provider.exceptions import BlockchainError
    from blockchain_provider.hooks import gateway_client
    from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
    from blockchain_provider.operators import ListOrderRequestsOperator, ListPartnerRequestsOperator
    from gateway_sandbox import crypto
    from include.mes.db import engine_from_url
    from include.mes.repository import MesRepository
    from include.sample_data import generate_plant

    def sync(hook: Any, operator_class: Any, kind: str) -> None:
        """What a sync DAG's task runs, on the day's hook: every page stored in the MES."""
        operator = operator_class(
            task_id=f"{kind}_sync",
            apply_function_batch=lambda items, context: {
                "inserted": repository.upsert_requests(kind, items).inserted
            },
            deferrable=False,
        )
        operator.__dict__["hook"] = SharedHook(hook)  # the operators' hook is a cached property
        run_task(operator)

    samples: list[float] = []
    starts: list[float] = []
    timeouts = 0
    exchange = gateway_client.GatewayClient._exchange

    def timed_exchange(self, *a, **kw):  # every request of every hook method
        started = time.perf_counter()
        try:
            return exchange(self, *a, **kw)
        finally:
            samples.append(time.perf_counter() - started)

    gateway_client.GatewayClient._exchange = timed_exchange

    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    ledger_path = workdir / "ledger.sqlite3"
    crypto.SCRYPT_N = 2  # demo agents' passwords are never checked here
    with Ledger(str(ledger_path)) as ledger:
        public_key, token = ledger.create_agent("MES", "soak-mes-password")
        for i in range(20):  # some partner requests and orders, as seed-demo makes
            erp, _ = ledger.create_agent(f"ERP {i}", "soak-erp-password")
            pid = ledger.create_partner_request(erp, public_key)
            if i % 2:
                ledger.answer_partner_request(public_key, pid, True)
                ledger.create_order(erp, public_key, "part", f"Order {i}", {"Size": i})
    end = START + timedelta(days=args.days - 1)
    engine = engine_from_url(f"sqlite:///{workdir / 'mes.sqlite3'}")
    repository = MesRepository(engine)
    repository.create_schema()
    generate_plant(engine, units=UNITS, weeks=(args.days + 6) // 7, end_date=end)

    broker = TansuBroker(log_path=workdir / "tansu.log").start()
    ensure_topics(broker.bootstrap_servers, list(DEFAULT_TOPICS), args.partitions)
    os.environ["AIRFLOW_CONN_KAFKA_DEFAULT"] = json.dumps(
        {"conn_type": "kafka", "extra": {"bootstrap.servers": broker.bootstrap_servers}}
    )
    os.environ["AIRFLOW_CONN_BLOCKCHAIN_MASTER"] = json.dumps(
        {"conn_type": "blockchain_token", "login": public_key, "password": token, "extra": {"timeout": 30}}
    )
    command = [
        sys.executable,
        "-m",
        "gateway_sandbox",
        "serve",
        "--bootstrap-servers",
        broker.bootstrap_servers,
    ]
    command += ["--db", str(ledger_path), "--partitions", str(args.partitions), "--log-level", "WARNING"]
    with open(workdir / "sandbox.log", "ab") as log:
        sandbox = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    print(f"tansu, {args.partitions} partition(s) per topic, {args.days} days; work in {workdir}", flush=True)
    print(f"{'requests':>9} {'day':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'timeouts':>8}", flush=True)
    windows: list[tuple[int, float, float]] = []
    started = time.monotonic()
    stalled = False

    def report(day: int) -> bool:
        nonlocal stalled
        while len(samples) >= (len(windows) + 1) * WINDOW:
            window = samples[len(windows) * WINDOW : (len(windows) + 1) * WINDOW]
            p50, p99 = percentile(window, 50) * 1e3, percentile(window, 99) * 1e3
            windows.append((len(samples), p50, p99))
            print(
                f"{(len(windows)) * WINDOW:>9} {day:>4} {p50:8.2f} {p99:8.2f} {max(window) * 1e3:8.1f} {timeouts:>8}",
                flush=True,
            )
            if p99 > args.stop_p99_ms:
                stalled = True
        return stalled

    try:
        time.sleep(2)  # the sandbox positions itself
        with KafkaBlockchainHook() as hook:
            ensure_day_report_type(hook)
        for day in range(args.days):
            today = START + timedelta(days=day)
            try:
                with KafkaBlockchainHook() as hook:
                    begin = time.perf_counter()
                    hook.get_conn()  # positions the reader: reads BLK_Res to its end
                    starts.append(time.perf_counter() - begin)
                    for slot in range(SLOTS_PER_DAY):
                        sync(hook, ListPartnerRequestsOperator, "partner")
                        sync(hook, ListOrderRequestsOperator, "order")
                        if slot == 0:
                            hook.list_partner_requests(0, 1)  # the token check
                        if slot == 38:  # 09:30: the day report
                            submit_day_reports(
                                hook, repository, [r.report_id for r in repository.day_reports(today)]
                            )
                        if report(day):
                            break
            except BlockchainError as exc:
                timeouts += 1
                print(f"  day {day}: {type(exc).__name__}: {exc}", flush=True)
            if stalled:
                break
    finally:
        sandbox.terminate()
        sandbox.wait(15)
        broker.stop()
    took = time.monotonic() - started
    rest = samples[len(windows) * WINDOW :]
    if len(rest) >= 100 or not windows:  # the last, partial window
        windows.append((len(samples), percentile(rest, 50) * 1e3, percentile(rest, 99) * 1e3))
        print(f"{len(samples):>9} {'end':>4} {windows[-1][1]:8.2f} {windows[-1][2]:8.2f}", flush=True)
    flat = bool(windows) and max(p99 for *_, p99 in windows) <= 2 * windows[0][2] + 5
    print(
        f"{len(samples):,} requests in {took / 60:.1f} minutes; {timeouts} timeouts; "
        f"p99 per 1,000 from {windows[0][2]:.1f} to {windows[-1][2]:.1f} ms (max {max(p for *_, p in windows):.1f}); "
        f"{'flat' if flat and not stalled else 'NOT flat'}" + (" (stopped: stall)" if stalled else ""),
        flush=True,
    )
    print(
        f"hook start per day (reading BLK_Res to its end): first {starts[0] * 1e3:.0f} ms, "
        f"last {starts[-1] * 1e3:.0f} ms, max {max(starts) * 1e3:.0f} ms",
        flush=True,
    )
    if args.write:
        rows = "\n".join(f"| {n:,} | {p50:.1f} | {p99:.1f} |" for n, p50, p99 in windows)
        section = (
            f"{SOAK_HEADING}\n\n"
            f"`bench/soak_stack.py --partitions {args.partitions} --days {args.days}`, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: tansu with {args.partitions} partition(s) "
            f"per BLK topic, the sandbox without echo, {len(samples):,} requests in {took / 60:.1f} minutes, "
            f"{timeouts} timeout(s); {'flat' if flat and not stalled else 'NOT flat'} p99"
            f"{' (stopped at the stall)' if stalled else ''}. Hook start per day (reading BLK_Res to its "
            f"end): first {starts[0] * 1e3:.0f} ms, last {starts[-1] * 1e3:.0f} ms.\n\n"
            "| requests so far | p50 ms | p99 ms |\n|---|---|---|\n" + rows + "\n"
        )
        write_section(SOAK_HEADING, section)
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
