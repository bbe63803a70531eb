"""The measurements of ``bench/run_all.py``: each runs one workload on one broker and returns its data.

None of them prints a figure or judges one: ``bench/report.py`` turns the data into rows, targets
and notes. A measurement may report its progress through *log* (one line at a time), and checks
every answer it times: a wrong answer raises ``AssertionError`` rather than becoming a figure.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from bench.harness import (
    ROOT,
    BrokerPass,
    InstantResponder,
    Stopwatch,
    cheap_password_hashes,
    hook,
    mes_repository,
    sandbox,
    time_each,
    use_gateway,
)

Log = Callable[[str], None]

DAY = date(2026, 11, 27)
#: partitions of the instant-responder topics (see bench/request_roundtrip.py)
INSTANT_PARTITIONS = 4
#: tansu's fetches cost more as a partition grows; 10,000 requests on one partition stall it.
RSS_PARTITIONS = 16
#: Requests made through the sandbox before the timed ones (the gateway is up, the clients warm).
ROUND_TRIP_WARM_UP = 20
#: Agents in the small ledger; request ``i`` asks for the page starting at ``i mod`` this.
SMALL_LEDGER_REQUESTS = 10
#: Records a day report writes for one production unit.
RECORDS_PER_UNIT = 28
#: The day report's topic layouts: the project's default, and 4 partitions.
DAY_REPORT_PARTITIONS = (1, 4)

#: The original pattern's consumer: kafka-python's defaults, which the seed's views used.
ORIGINAL_CONSUMER = {
    "group.id": "mes_uninova",
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 3_000,
    "auto.offset.reset": "latest",
    "enable.auto.commit": True,
    "auto.commit.interval.ms": 5_000,
}
#: The original pattern's producer: kafka-python's defaults (acks=1, no linger).
ORIGINAL_PRODUCER = {"acks": 1, "linger.ms": 0}
#: Each original-pattern request gives up after this long (the seed's views wait forever).
ORIGINAL_LIMIT_S = 15.0


@dataclass(frozen=True)
class Plan:
    """How much each measurement does. :data:`FULL` is ``make bench``; :data:`QUICK` only checks
    that every measurement runs end to end (its figures mean nothing).

    :param round_trips: timed requests per round-trip measurement, default 1,000.
    :param baseline_requests: original-pattern requests, default 8.
    :param sync_sizes: partner requests per full sync, default 1,000 / 5,000 / 10,000.
    :param rss_sizes: requests per peak-RSS probe, default 1,000 / 5,000 / 10,000.
    :param day_report_units: production units in the day report, default 100.
    :param dagbag_runs: fresh processes filling the DagBag, default 3.
    :param idle_seconds: idle time per fetch wait, default 10.
    """

    round_trips: int = 1000
    baseline_requests: int = 8
    sync_sizes: tuple[int, ...] = (1000, 5000, 10_000)
    rss_sizes: tuple[int, ...] = (1000, 5000, 10_000)
    day_report_units: int = 100
    dagbag_runs: int = 3
    idle_seconds: float = 10.0


FULL = Plan()
QUICK = Plan(
    round_trips=50,
    baseline_requests=2,
    sync_sizes=(100, 300),
    rss_sizes=(200, 600),
    day_report_units=5,
    dagbag_runs=1,
    idle_seconds=2.0,
)


def _silent(line: str) -> None:
    """The default *log*: progress goes nowhere."""


def run_task(operator: Any) -> Any:
    """Execute *operator* blocking in this process, marked as the running task as Airflow's task
    runner marks it (else every call warns that it runs outside one).

    :param operator: a provider operator, not deferrable.
    """
    from airflow.sdk.bases.operator import ExecutorSafeguard

    token = ExecutorSafeguard.tracker.set(operator)
    try:
        return operator.execute({})
    finally:
        ExecutorSafeguard.tracker.reset(token)


# -------------------------------------------------------------- 0. instant responder
@dataclass
class InstantRoundTrips:
    """The hook against a responder that answers at once, and the broker's floor beside it."""

    broker: str
    #: the hook's ``fetch.wait.max.ms`` on this broker
    hook_wait: int
    #: ``(fetch wait, measurement, samples in seconds)``, as ``request_roundtrip.measure`` returns
    rows: list[tuple[int, str, list[float]]]
    requests: int
    warm_up: int
    partitions: int = INSTANT_PARTITIONS


def instant_round_trips(run: BrokerPass, plan: Plan) -> InstantRoundTrips:
    """The provider's own latency: no gateway work, on a broker of its own (what it stores would
    slow the later measurements' fetches on tansu).

    :param run: the pass: its broker kind, and an outside broker when ``KAFKA_BOOTSTRAP_SERVERS``.
    :param plan: the counts.
    """
    from bench import request_roundtrip
    from bench.harness import start_broker

    hook_wait = request_roundtrip.HOOK_WAIT[run.broker]
    waits = [hook_wait, 1] if run.broker == "tansu" else [hook_wait]
    own = None
    bootstrap = run.bootstrap
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        own = start_broker(run.broker, run.workdir / "instant")
        bootstrap = own.bootstrap
    try:
        rows = request_roundtrip.measure(bootstrap, plan.round_trips, INSTANT_PARTITIONS, waits)
    finally:
        if own is not None:
            own.stop()
    return InstantRoundTrips(run.broker, hook_wait, rows, plan.round_trips, request_roundtrip.WARM_UP)


# ------------------------------------------------------- 1-2. round trips, baseline
@dataclass
class HookRoundTrips:
    """Sequential one-item pages through the sandbox; with echo, the same pipelined."""

    echo: bool
    samples: list[float]
    serial_s: float
    pipelined_s: float | None = None


@dataclass
class OriginalPattern:
    """The seed's pattern per request: seconds, and ``right``, ``wrong``, ``timeout``,
    ``not-for-me`` or ``undecodable``."""

    samples: list[float]
    outcomes: list[str]


@dataclass
class RoundTrips:
    """Round trips through the hook (echo off, on) and the original pattern, on the same gateway."""

    off: HookRoundTrips
    on: HookRoundTrips
    original: OriginalPattern
    requests: int
    baseline_requests: int
    warm_up: int = ROUND_TRIP_WARM_UP


def small_ledger(workdir: Path) -> tuple[Path, str, str, list[str]]:
    """An MES agent with ten partner requests: ``(path, public key, token, ids in list order)``.

    :param workdir: where the ledger goes.
    """
    from gateway_sandbox.ledger import Ledger

    path = workdir / "ledger-small.sqlite3"
    with Ledger(str(path)) as ledger:
        public_key, token = ledger.create_agent("MES", "bench-mes-password")
        for i in range(SMALL_LEDGER_REQUESTS):
            erp, _ = ledger.create_agent(f"ERP {i}", "bench-erp-password")
            ledger.create_partner_request(erp, public_key)
        ids = [item["partner_request_id"] for item in ledger.partner_requests(public_key)]
    return path, public_key, token, ids


def hook_round_trips(
    run: BrokerPass, db: Path, token: str, ids: list[str], count: int, *, echo: bool
) -> HookRoundTrips:
    """*count* sequential one-item pages (``start`` = i mod 10), each checked; with echo, the same
    *count* pipelined too (16 in flight).

    :param run: the pass.
    :param db: the small ledger.
    :param token: its MES agent's token.
    :param ids: its partner request ids, in list order.
    :param count: the timed requests.
    :param echo: the gateway echoes ``request_id``.
    """
    from blockchain_provider import protocol

    n = SMALL_LEDGER_REQUESTS
    prefix = run.prefix(f"rt{'on' if echo else 'off'}")
    use_gateway(run.bootstrap, prefix, token, echo=echo)
    with sandbox(run.workdir, run.bootstrap, db, prefix, echo=echo), hook() as h:

        def page(i: int) -> None:
            assert h.list_partner_requests(i % n, 1)[0]["partner_request_id"] == ids[i % n], "a wrong answer"

        # the warm-up's answers are not checked, as before: only the gateway being up matters
        for i in range(ROUND_TRIP_WARM_UP):
            h.list_partner_requests(i % n, 1)
        with Stopwatch() as serial:
            samples = time_each(page, count)
        result = HookRoundTrips(echo, samples, serial.seconds)
        if echo:
            calls = [protocol.list_call(protocol.PARTNER_LIST, i % n, 1) for i in range(count)]
            with Stopwatch() as pipelined:
                outcomes = h.client.call_many(calls, max_in_flight=16)
            result.pipelined_s = pipelined.seconds
            assert [o.value[0]["partner_request_id"] for o in outcomes] == [ids[i % n] for i in range(count)]
    return result


def original_pattern_request(
    bootstrap: str, prefix: str, token: str, start: int, group: str
) -> tuple[float, str, Any]:
    """One request as the seed's views make it (KafkaPartnerListView), with confluent-kafka:
    a new producer sends, then a new consumer in a fixed group subscribes to ``BLK_Res`` and takes
    the first answer for its token (the seed's decoding: replace ``'`` by ``"``, parse JSON). A
    foreign answer ends the wait with nothing (the seed's ``NotforME``).

    :param bootstrap: the broker.
    :param prefix: the prefix of the BLK topics.
    :param token: the MES agent's token.
    :param start: the page's first item.
    :param group: the consumer group.
    :return: ``(seconds, outcome, data)``; outcome is ``answered``, ``timeout``, ``not-for-me`` or
        ``undecodable``.
    """
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

    started = time.perf_counter()
    producer = Producer({"bootstrap.servers": bootstrap, **ORIGINAL_PRODUCER})
    request = [{"auth": token, "start": start, "limit": 1}]
    producer.produce(prefix + "BLK_Part_Lst", json.dumps(request).encode())
    producer.poll(0)
    consumer = Consumer({"bootstrap.servers": bootstrap, **ORIGINAL_CONSUMER, "group.id": group})
    consumer.subscribe([prefix + "BLK_Res"])
    outcome, data = "timeout", None
    try:
        while time.perf_counter() - started < ORIGINAL_LIMIT_S:
            message = consumer.poll(0.1)
            if message is None or message.error() is not None:
                continue
            try:
                envelope = json.loads(json.loads(message.value()).replace("'", '"'))
            except (ValueError, AttributeError):
                outcome = "undecodable"
                break
            if envelope[0]["auth"] == token:
                outcome, data = "answered", envelope[1].get("data") or envelope[1].get("error")
            else:
                outcome = "not-for-me"
            break
    finally:
        # kafka-python, the seed's client, commits its fetch position when it closes, even if it
        # read nothing; librdkafka commits only what was read (here, on close, the answer read)
        if outcome == "timeout":
            try:
                ends = [
                    TopicPartition(tp.topic, tp.partition, consumer.get_watermark_offsets(tp, timeout=5)[1])
                    for tp in consumer.assignment()
                ]
                if ends:
                    consumer.commit(offsets=ends, asynchronous=False)
            except KafkaException:
                pass
        consumer.close()
        producer.flush(5)
    return time.perf_counter() - started, outcome, data


def original_pattern(
    run: BrokerPass, db: Path, token: str, ids: list[str], count: int, log: Log = _silent
) -> OriginalPattern:
    """*count* requests in the seed's pattern, each judged ``right`` or ``wrong`` against *ids*.

    :param run: the pass.
    :param db: the small ledger.
    :param token: its MES agent's token.
    :param ids: its partner request ids, in list order.
    :param count: the requests.
    :param log: where each request's progress line goes, default nowhere.
    """
    n = SMALL_LEDGER_REQUESTS
    prefix = run.prefix("orig")
    group = f"{ORIGINAL_CONSUMER['group.id']}-{prefix}"
    samples, outcomes = [], []
    with sandbox(run.workdir, run.bootstrap, db, prefix, echo=False):
        # the gateway is up before the first measured request
        use_gateway(run.bootstrap, prefix, token, echo=False)
        with hook() as h:
            h.list_partner_requests(0, 1)
        for i in range(count):
            seconds, outcome, data = original_pattern_request(run.bootstrap, prefix, token, i % n, group)
            if outcome == "answered":
                right = isinstance(data, list) and data and data[0].get("partner_request_id") == ids[i % n]
                outcome = "right" if right else "wrong"
            samples.append(seconds)
            outcomes.append(outcome)
            log(f"    original pattern request {i + 1}/{count}: {seconds:.2f} s, {outcome}")
    return OriginalPattern(samples, outcomes)


def round_trips(run: BrokerPass, plan: Plan, log: Log = _silent) -> RoundTrips:
    """Echo off, echo on (and pipelined), then the original pattern, on one small ledger.

    :param run: the pass.
    :param plan: the counts.
    :param log: where progress lines go, default nowhere.
    """
    db, _public_key, token, ids = small_ledger(run.workdir)
    off = hook_round_trips(run, db, token, ids, plan.round_trips, echo=False)
    on = hook_round_trips(run, db, token, ids, plan.round_trips, echo=True)
    original = original_pattern(run, db, token, ids, plan.baseline_requests, log)
    return RoundTrips(off, on, original, plan.round_trips, plan.baseline_requests)


# ------------------------------------------------------------------------- 3. sync
@dataclass
class FullSyncs:
    """Seconds of a full partner sync, by the number of partner requests."""

    seconds: dict[int, float]


def sync_ledger(workdir: Path, sizes: tuple[int, ...]) -> tuple[Path, dict[int, tuple[str, str]]]:
    """``max(sizes)`` ERP agents; the first *size* of them ask one MES agent each to partner, for
    each size.

    :param workdir: where the ledger goes.
    :param sizes: the syncs' sizes.
    :return: the path and ``size -> (public key, token)`` of the MES agents.
    """
    from gateway_sandbox.ledger import Ledger

    cheap_password_hashes()
    path = workdir / "ledger-sync.sqlite3"
    with Ledger(str(path)) as ledger:
        agents = {size: ledger.create_agent(f"MES {size}", "bench-mes-password") for size in sizes}
        with ledger.transaction():
            for i in range(max(sizes)):
                erp, _ = ledger.create_agent(f"ERP {i}", "bench-erp-password")
                for size, (mes, _token) in agents.items():
                    if i < size:
                        ledger.create_partner_request(erp, mes)
    return path, agents


def sync_partner_requests(repository: Any) -> tuple[int, int]:
    """What the partner sync DAG's task runs: ``ListPartnerRequestsOperator`` with its own new
    hook, every page stored in the MES as it is read by the DAG's own function (alerts aside:
    none is new here).

    :param repository: the MES, a SQLite database.
    :return: ``(items read, items inserted)``.
    """
    from blockchain_common.factories import store_requests

    from blockchain_provider.operators import ListPartnerRequestsOperator

    # the DAG's store opens the mes_db connection: this database
    os.environ["AIRFLOW_CONN_MES_DB"] = json.dumps(
        {"conn_type": "sqlite", "host": repository.engine.url.database}
    )
    operator = ListPartnerRequestsOperator(
        task_id="partner_sync",
        page_size=100,
        apply_function_batch=store_requests("partner"),
        deferrable=False,
    )
    summary = run_task(operator)
    return summary["count"], summary["inserted"]


def full_syncs(run: BrokerPass, plan: Plan, log: Log = _silent) -> FullSyncs:
    """A full sync of each of ``plan.sync_sizes`` partner requests, each on fresh topics and gateway.

    :param run: the pass.
    :param plan: the counts.
    :param log: where progress lines go, default nowhere.
    """
    with Stopwatch() as seeding:
        db, agents = sync_ledger(run.workdir, plan.sync_sizes)
    log(f"    seeded {sum(plan.sync_sizes):,} partner requests in {seeding.seconds:.1f} s")
    seconds = {}
    for size in plan.sync_sizes:
        prefix = run.prefix(f"sync{size}")
        with sandbox(run.workdir, run.bootstrap, db, prefix, echo=False):
            public_key, token = agents[size]
            use_gateway(run.bootstrap, prefix, token, echo=False, public_key=public_key)
            repository = mes_repository(run.workdir / f"mes-sync-{size}.sqlite3")
            with hook() as h:  # the gateway is up
                h.list_partner_requests(0, 1)
            with Stopwatch() as sync:
                total, inserted = sync_partner_requests(repository)
            seconds[size] = sync.seconds
            assert (total, inserted) == (size, size), (total, inserted)
            assert len(repository.partner_requests()) == size
    return FullSyncs(seconds)


# ------------------------------------------------------------------------ 4. day report
@dataclass
class DayReports:
    """Seconds to submit one day's reports of *units* production units, by topic partitions."""

    units: int
    seconds: dict[int, float]
    records_per_unit: int = RECORDS_PER_UNIT


def day_report_plant(workdir: Path, name: str, units: int) -> Any:
    """*units* production units with a report for :data:`DAY`: the sample plant's (PT10..PT99, at
    most 90) and, past 90, more from PT100 on.

    :param workdir: where the MES database goes.
    :param name: part of its file name.
    :param units: the production units.
    """
    from include.mes.models import NewDayReport
    from include.sample_data import day_report_values, generate_plant

    repository = mes_repository(workdir / f"mes-{name}.sqlite3")
    generate_plant(repository.engine, units=min(units, 90), weeks=1, end_date=DAY)
    rng = random.Random(42)
    extra = []
    for number in range(100, 100 + units - 90):
        unit = repository.add_production_unit(f"PT{number}", f"Press line {number}", "Running", "Stamping")
        extra.append(NewDayReport(unit.id, DAY, day_report_values(rng)))
    repository.add_day_reports(extra)
    return repository


class SharedHook:
    """One hook for several operators, as the day report has always been measured: an operator
    closes its hook when it ends, and a new one per task would add the hook's start (the
    idempotent producer's id, 0.5-1 s on tansu) to each of the 100 units.

    :param hook: the hook the operators share; its owner closes it.
    """

    def __init__(self, hook: Any) -> None:
        self._hook = hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hook, name)

    def close(self) -> None:
        """Left open for the next operator."""


def ensure_day_report_type(h: Any) -> None:
    """What the day report DAG's first task runs, on hook *h*: ``EnsureRecordTypeOperator`` for
    the day-report record type."""
    from blockchain_provider.operators import EnsureRecordTypeOperator
    from include.day_report_keys import DAY_REPORT_RECORD_TYPE_DECLARATION

    ensure = EnsureRecordTypeOperator(
        task_id="ensure_record_type", deferrable=False, **DAY_REPORT_RECORD_TYPE_DECLARATION
    )
    ensure.__dict__["hook"] = SharedHook(h)  # the operators' hook is a cached property
    run_task(ensure)


def submit_day_reports(h: Any, repository: Any, report_ids: list[str]) -> int:
    """What the day report DAG runs, on one hook: ``EnsureRecordTypeOperator``, then one
    ``CreateRecordsOperator`` per report in turn (its records pipelined), each noted in the MES.

    :param h: the hook.
    :param repository: the MES.
    :param report_ids: the day's reports.
    :return: the records written.
    """
    from blockchain_provider.operators import CreateRecordsOperator
    from include.day_report_keys import DAY_REPORT_RECORD_TYPE
    from include.mes.day_report_records import note_written, records_to_write

    ensure_day_report_type(h)
    shared = SharedHook(h)
    written = 0
    for report_id in report_ids:
        send = CreateRecordsOperator(
            task_id="send_unit_report",
            record_type=DAY_REPORT_RECORD_TYPE,
            records=lambda context, report_id: records_to_write(repository, report_id),
            on_written=lambda ids, context, report_id: note_written(repository, report_id, ids),
            records_kwargs={"report_id": report_id},
            deferrable=False,
        )
        send.__dict__["hook"] = shared
        written += run_task(send)["written"]
    return written


def day_report(run: BrokerPass, units: int, partitions: int) -> float:
    """Seconds to submit the day's reports of *units* units with echo, every record then counted.

    :param run: the pass.
    :param units: the production units.
    :param partitions: partitions of each BLK topic.
    """
    from gateway_sandbox.ledger import Ledger
    from include.day_report_keys import DAY_REPORT_RECORD_TYPE

    name = f"day-report-{partitions}"
    repository = day_report_plant(run.workdir, name, units)
    reports = repository.day_reports(DAY)
    assert len(reports) == units
    db = run.workdir / f"ledger-{name}.sqlite3"
    with Ledger(str(db)) as ledger:
        public_key, token = ledger.create_agent("MES", "bench-mes-password")
    prefix = run.prefix(f"day{partitions}", partitions)
    use_gateway(run.bootstrap, prefix, token, echo=True, public_key=public_key)
    with sandbox(run.workdir, run.bootstrap, db, prefix, echo=True):
        with hook() as h:  # the gateway is up
            h.get_record_type("Warmup")
        with Stopwatch() as took:
            with hook() as h:
                written = submit_day_reports(h, repository, [r.report_id for r in reports])
    assert written == RECORDS_PER_UNIT * units
    with Ledger(str(db)) as ledger:
        assert ledger.count_records(DAY_REPORT_RECORD_TYPE) == RECORDS_PER_UNIT * units
    return took.seconds


def day_reports(run: BrokerPass, plan: Plan) -> DayReports:
    """The day report on each of :data:`DAY_REPORT_PARTITIONS`.

    :param run: the pass.
    :param plan: the counts.
    """
    units = plan.day_report_units
    return DayReports(units, {p: day_report(run, units, p) for p in DAY_REPORT_PARTITIONS})


# ---------------------------------------------------------------------------- 5. DagBag
@dataclass
class DagBagParse:
    """Medians over fresh processes of ``bench/dagbag_parse.py``."""

    fill_s: float
    import_airflow_s: float
    dags: int
    runs: int


def dagbag_parse(plan: Plan) -> DagBagParse:
    """The DagBag fill of ``dags/`` in ``plan.dagbag_runs`` fresh processes; no import error allowed.

    :param plan: the counts.
    """
    env = {
        **os.environ,
        "AIRFLOW_HOME": tempfile.mkdtemp(prefix="bench-dagbag-home-"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "dags")]),
    }
    runs = []
    for _ in range(plan.dagbag_runs):
        out = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "dagbag_parse.py")],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
            timeout=300,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[-1]["import_errors"] == 0, runs[-1]["errors"]
    return DagBagParse(
        fill_s=statistics.median(run["fill_s"] for run in runs),
        import_airflow_s=statistics.median(run["import_airflow_s"] for run in runs),
        dags=runs[-1]["dags"],
        runs=plan.dagbag_runs,
    )


# ------------------------------------------------------------------------------- 6. RSS
@dataclass
class PeakRss:
    """What ``bench/rss_probe.py`` printed, by the number of requests (kilobytes)."""

    by_size: dict[int, dict[str, int]]
    partitions: int = RSS_PARTITIONS


def peak_rss(run: BrokerPass, plan: Plan) -> PeakRss:
    """A fresh process per size making that many requests through one hook (``bench/rss_probe.py``).

    :param run: the pass.
    :param plan: the counts.
    """
    by_size = {}
    for size in plan.rss_sizes:
        prefix = run.prefix(f"rss{size}", RSS_PARTITIONS)
        probe = [sys.executable, str(ROOT / "bench" / "rss_probe.py"), "--bootstrap", run.bootstrap]
        probe += ["--prefix", prefix, "--requests", str(size)]
        with InstantResponder(run.bootstrap, prefix, RSS_PARTITIONS):
            out = subprocess.run(probe, capture_output=True, text=True, cwd=ROOT, check=True, timeout=600)
        by_size[size] = json.loads(out.stdout.strip().splitlines()[-1])
    return PeakRss(by_size)


# ------------------------------------------------------------------------ 7. idle reader
@dataclass
class IdleReader:
    """One idle reader at the hook's, then the triggerer's default fetch wait, and the broker alone.

    ``readers`` maps whose default (``the hook's``, ``the triggerer's``) to a row of
    ``bench/idle_fetch_cpu.measure``; ``alone`` is its row of the broker with no reader.
    """

    waits: dict[str, int]
    alone: dict[str, Any]
    readers: dict[str, dict[str, Any]]
    seconds: float


def idle_reader(run: BrokerPass, plan: Plan) -> IdleReader | None:
    """What one idle reader costs the broker; ``None`` when the run did not start the broker.

    :param run: the pass.
    :param plan: the counts.
    """
    from bench import idle_fetch_cpu, request_roundtrip

    if run.broker_pid is None:
        return None
    from blockchain_provider.triggers import await_response

    trigger = await_response.TRIGGER_CONSUMER_DEFAULTS["fetch.wait.max.ms"]
    if run.broker == "tansu":
        trigger = await_response.TRIGGER_TANSU_CONSUMER_DEFAULTS["fetch.wait.max.ms"]
    waits = {"the hook's": request_roundtrip.HOOK_WAIT[run.broker], "the triggerer's": trigger}
    alone, *rows = idle_fetch_cpu.measure(
        run.bootstrap, run.broker_pid, list(waits.values()), plan.idle_seconds
    )
    return IdleReader(waits, alone, dict(zip(waits, rows, strict=True)), plan.idle_seconds)


# ------------------------------------------------------------------------------ a pass
@dataclass
class PassResult:
    """Everything one pass measured on one broker, in the order it ran."""

    broker: str
    measurements: list[Any] = field(default_factory=list)
