"""Every benchmark of the project in one run: prints one table and refreshes ``bench/RESULTS.md``.

Usage (from the repository root): ``make bench``, or ``.venv/bin/python bench/run_all.py
[--no-write] [--baseline-requests 8] [--brokers tansu apache]``. It takes about eight minutes on
two cores.

Every figure that depends on the broker is measured once per broker, each started by the run:
tansu (embedded, ``make run``'s default) and Apache Kafka (one KRaft node from the jars
``kafka/pom.xml`` pins, ``local_services/kafka.py``); ``KAFKA_BOOTSTRAP_SERVERS`` replaces both
with that broker. For each measurement it makes a fresh set of topics and starts the gateway
sandbox as its own process (``python -m gateway_sandbox serve``), then measures:

0. request round trips through ``KafkaBlockchainHook`` against an instant responder, and the
   broker's floor (``bench/request_roundtrip.py``), at the hook's ``fetch.wait.max.ms`` and at 1 ms;
1. request round trips through ``KafkaBlockchainHook`` (1,000 sequential requests with
   request_id echo off, 1,000 with it on), and the same 1,000 pipelined with echo on;
2. the original system's pattern, on the same broker and gateway: for each request a new
   producer, then a new consumer in a fixed group that subscribes after sending, with a per-call
   time limit (the seed document's views, see ``original_pattern_request``);
3. a full sync of 1,000 / 5,000 / 10,000 partner requests (every page, then the MES upsert);
4. a day report of 100 production units (2,800 records) with echo;
5. the DagBag fill time of ``dags/`` beyond importing Airflow (fresh processes);
6. the peak RSS of a process making 1,000 / 5,000 / 10,000 requests through one hook;
7. what one idle reader costs the broker at the hook's default ``fetch.wait.max.ms``: fetch
   requests a second and broker CPU (``bench/idle_fetch_cpu.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "dags"))
# Airflow reads its configuration when first imported: a scratch home, no examples.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-airflow-home-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402

from bench import results  # noqa: E402
from gateway_sandbox.broker import DEFAULT_TOPICS, TansuBroker, ensure_topics  # noqa: E402
from gateway_sandbox.ledger import Ledger  # noqa: E402
from local_services.kafka import KafkaCluster, kafka_version  # noqa: E402

DAY = date(2026, 11, 27)

ROUND_TRIPS = 1000
#: partitions of the instant-responder topics (see bench/request_roundtrip.py)
INSTANT_PARTITIONS = 4
SYNC_SIZES = (1000, 5000, 10_000)
RSS_SIZES = (1000, 5000, 10_000)
#: tansu's fetches cost more as a partition grows; 10,000 requests on one partition stall it.
RSS_PARTITIONS = 16
DAY_REPORT_UNITS = 100
DAGBAG_RUNS = 3

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


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- the stack
#: The brokers the run measures on, and their column in the table.
BROKER_COLUMNS = {"tansu": "tansu", "apache": "Apache Kafka"}


@dataclass
class Bench:
    bootstrap: str
    workdir: Path
    #: ``tansu`` or ``apache``: the broker of this pass
    broker: str = "tansu"
    #: the broker's process, when the run started it (for its CPU time)
    broker_pid: int | None = None
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def prefix(self, name: str, partitions: int = 1) -> str:
        """A fresh set of topics: tansu's fetches cost more as a partition grows."""
        prefix = f"b{uuid.uuid4().hex[:6]}_{name}_"
        ensure_topics(self.bootstrap, [prefix + topic for topic in DEFAULT_TOPICS], partitions)
        return prefix

    def row(self, name: str, figure: str, target: str = "", met: bool | None = None) -> None:
        status = "" if met is None else ("met" if met else "NOT met")
        self.rows.append((name, figure, target, status))
        print(f"  {name}: {figure}" + (f"  [{target}: {status}]" if target else ""), flush=True)


@contextmanager
def sandbox(bench: Bench, db: Path, prefix: str, *, echo: bool) -> Iterator[None]:
    """The gateway sandbox as its own process (the original gateway's encoding, python-literal)."""
    command = [
        sys.executable, "-m", "gateway_sandbox", "serve", "--bootstrap-servers", bench.bootstrap,
        "--db", str(db), "--topic-prefix", prefix, "--log-level", "WARNING",
    ]  # fmt: skip
    if echo:
        command.append("--echo")
    with open(bench.workdir / f"sandbox-{prefix}log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def use_gateway(
    bootstrap: str, prefix: str, token: str, *, echo: bool, public_key: str | None = None
) -> None:
    """The ``kafka_default`` and ``blockchain_master`` connections, as Airflow reads them."""
    os.environ["AIRFLOW_CONN_KAFKA_DEFAULT"] = json.dumps(
        {"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap}}
    )
    os.environ["AIRFLOW_CONN_BLOCKCHAIN_MASTER"] = json.dumps(
        {
            "conn_type": "blockchain_token",
            "login": public_key,
            "password": token,
            "extra": {
                "echo_request_id": echo,
                "timeout": 60,
                "topics": json.dumps({name: prefix + name for name in DEFAULT_TOPICS}),
            },
        }
    )


def hook():
    from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook

    return KafkaBlockchainHook()


def cheap_password_hashes() -> None:
    """Seeding 10,000 ERP agents with the ledger's scrypt (0.1 s each) would take 17 minutes; their
    passwords are never checked here, so this process hashes them with a trivial cost."""
    from gateway_sandbox import crypto

    crypto.SCRYPT_N = 2


def mes_repository(path: Path):
    from include.mes.db import engine_from_url
    from include.mes.repository import MesRepository

    repository = MesRepository(engine_from_url(f"sqlite:///{path}"))
    repository.create_schema()
    return repository


# ------------------------------------------------------------------ 1-2. round trips, baseline
def small_ledger(bench: Bench) -> tuple[Path, str, str, list[str]]:
    """An MES agent with ten partner requests: ``(path, public key, token, ids in list order)``."""
    path = bench.workdir / "ledger-small.sqlite3"
    with Ledger(str(path)) as ledger:
        public_key, token = ledger.create_agent("MES", "bench-mes-password")
        for i in range(10):
            erp, _ = ledger.create_agent(f"ERP {i}", "bench-erp-password")
            ledger.create_partner_request(erp, public_key)
        ids = [item["partner_request_id"] for item in ledger.partner_requests(public_key)]
    return path, public_key, token, ids


def hook_round_trips(bench: Bench, db: Path, token: str, ids: list[str], *, echo: bool) -> dict[str, Any]:
    """1,000 sequential one-item pages (``start`` = i mod 10), each checked; with echo, the same
    1,000 pipelined too."""
    from blockchain_provider import protocol

    prefix = bench.prefix(f"rt{'on' if echo else 'off'}")
    use_gateway(bench.bootstrap, prefix, token, echo=echo)
    result: dict[str, Any] = {}
    with sandbox(bench, db, prefix, echo=echo), hook() as h:
        for i in range(20):  # the gateway is up, the clients are warm
            h.list_partner_requests(i % 10, 1)
        samples = []
        started = time.perf_counter()
        for i in range(ROUND_TRIPS):
            sent = time.perf_counter()
            page = h.list_partner_requests(i % 10, 1)
            samples.append(time.perf_counter() - sent)
            assert page[0]["partner_request_id"] == ids[i % 10], "a wrong answer"
        result["serial_s"] = time.perf_counter() - started
        result["samples"] = samples
        if echo:
            calls = [protocol.list_call(protocol.PARTNER_LIST, i % 10, 1) for i in range(ROUND_TRIPS)]
            started = time.perf_counter()
            outcomes = h.call_many(calls, max_in_flight=16)
            result["pipelined_s"] = time.perf_counter() - started
            assert [o.value[0]["partner_request_id"] for o in outcomes] == [
                ids[i % 10] for i in range(ROUND_TRIPS)
            ]
    return result


def original_pattern_request(
    bootstrap: str, prefix: str, token: str, start: int, group: str
) -> tuple[float, str, Any]:
    """One request as the seed's views make it (KafkaPartnerListView), with confluent-kafka:
    a new producer sends, then a new consumer in a fixed group subscribes to ``BLK_Res`` and takes
    the first answer for its token (the seed's decoding: replace ``'`` by ``"``, parse JSON). A
    foreign answer ends the wait with nothing (the seed's ``NotforME``). Returns ``(seconds,
    outcome, data)``; outcome is ``answered``, ``timeout``, ``not-for-me`` or ``undecodable``."""
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


def original_pattern(bench: Bench, db: Path, token: str, ids: list[str], count: int) -> dict[str, Any]:
    prefix = bench.prefix("orig")
    group = f"{ORIGINAL_CONSUMER['group.id']}-{prefix}"
    samples, outcomes = [], []
    with sandbox(bench, db, prefix, echo=False):
        # the gateway is up before the first measured request
        use_gateway(bench.bootstrap, prefix, token, echo=False)
        with hook() as h:
            h.list_partner_requests(0, 1)
        for i in range(count):
            seconds, outcome, data = original_pattern_request(bench.bootstrap, prefix, token, i % 10, group)
            if outcome == "answered":
                right = isinstance(data, list) and data and data[0].get("partner_request_id") == ids[i % 10]
                outcome = "right" if right else "wrong"
            samples.append(seconds)
            outcomes.append(outcome)
            print(f"    original pattern request {i + 1}/{count}: {seconds:.2f} s, {outcome}", flush=True)
    return {"samples": samples, "outcomes": outcomes}


# --------------------------------------------------------------------------------- 3. sync
def sync_ledger(bench: Bench) -> tuple[Path, dict[int, tuple[str, str]]]:
    """10,000 ERP agents; the first 1,000 / 5,000 / 10,000 ask one MES agent each to partner.
    Returns the path and ``size -> (public key, token)`` of the three MES agents."""
    cheap_password_hashes()
    path = bench.workdir / "ledger-sync.sqlite3"
    with Ledger(str(path)) as ledger:
        agents = {size: ledger.create_agent(f"MES {size}", "bench-mes-password") for size in SYNC_SIZES}
        with ledger.transaction():
            for i in range(max(SYNC_SIZES)):
                erp, _ = ledger.create_agent(f"ERP {i}", "erp")
                for size, (mes, _token) in agents.items():
                    if i < size:
                        ledger.create_partner_request(erp, mes)
    return path, agents


def full_syncs(bench: Bench) -> dict[int, float]:
    from blockchain_common import flows

    started = time.perf_counter()
    db, agents = sync_ledger(bench)
    print(
        f"    seeded {sum(SYNC_SIZES):,} partner requests in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    seconds = {}
    for size in SYNC_SIZES:
        prefix = bench.prefix(f"sync{size}")
        with sandbox(bench, db, prefix, echo=False):
            public_key, token = agents[size]
            use_gateway(bench.bootstrap, prefix, token, echo=False, public_key=public_key)
            repository = mes_repository(bench.workdir / f"mes-sync-{size}.sqlite3")
            with hook() as h:  # the gateway is up
                h.list_partner_requests(0, 1)
            started = time.perf_counter()
            with hook() as h:
                result = flows.sync_requests(h, repository, "partner")
            seconds[size] = time.perf_counter() - started
            assert (result.total, result.inserted) == (size, size), result.summary()
            assert len(repository.partner_requests()) == size
    return seconds


# --------------------------------------------------------------------------- 4. day report
def day_report_plant(bench: Bench, name: str):
    """100 production units with a report for DAY: the sample plant's 90 (PT10..PT99) and 10 more."""
    from include.mes.models import NewDayReport
    from include.sample_data import day_report_values, generate_plant

    repository = mes_repository(bench.workdir / f"mes-{name}.sqlite3")
    generate_plant(repository.engine, units=90, weeks=1, end_date=DAY)
    rng = random.Random(42)
    extra = []
    for number in range(100, 100 + DAY_REPORT_UNITS - 90):
        unit = repository.add_production_unit(f"PT{number}", f"Press line {number}", "Running", "Stamping")
        extra.append(NewDayReport(unit.id, DAY, day_report_values(rng)))
    repository.add_day_reports(extra)
    return repository


def day_report(bench: Bench, partitions: int) -> float:
    from blockchain_common import flows

    from include.day_report_keys import (
        DAY_REPORT_RECORD_PROPERTIES,
        DAY_REPORT_RECORD_TYPE,
        DAY_REPORT_RECORD_TYPE_DESCRIPTION,
    )

    name = f"day-report-{partitions}"
    repository = day_report_plant(bench, name)
    reports = repository.day_reports(DAY)
    assert len(reports) == DAY_REPORT_UNITS
    db = bench.workdir / f"ledger-{name}.sqlite3"
    with Ledger(str(db)) as ledger:
        public_key, token = ledger.create_agent("MES", "bench-mes-password")
    prefix = bench.prefix(f"day{partitions}", partitions)
    use_gateway(bench.bootstrap, prefix, token, echo=True, public_key=public_key)
    with sandbox(bench, db, prefix, echo=True):
        with hook() as h:  # the gateway is up
            h.get_record_type("Warmup")
        started = time.perf_counter()
        with hook() as h:
            flows.ensure_record_type(
                h,
                repository,
                DAY_REPORT_RECORD_TYPE,
                DAY_REPORT_RECORD_TYPE_DESCRIPTION,
                DAY_REPORT_RECORD_PROPERTIES,
            )
            written = sum(flows.submit_day_report(h, repository, r.report_id).written for r in reports)
        seconds = time.perf_counter() - started
    assert written == 28 * DAY_REPORT_UNITS
    with Ledger(str(db)) as ledger:
        assert ledger.count_records(DAY_REPORT_RECORD_TYPE) == 28 * DAY_REPORT_UNITS
    return seconds


# ------------------------------------------------------------------------------- 5. DagBag
def dagbag_parse() -> dict[str, Any]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": tempfile.mkdtemp(prefix="bench-dagbag-home-"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "dags")]),
    }
    runs = []
    for _ in range(DAGBAG_RUNS):
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
    return {
        "fill_s": statistics.median(run["fill_s"] for run in runs),
        "import_airflow_s": statistics.median(run["import_airflow_s"] for run in runs),
        "dags": runs[-1]["dags"],
        "import_errors": runs[-1]["import_errors"],
        "errors": runs[-1]["errors"],
    }


# ----------------------------------------------------------------------------------- 6. RSS
class InstantResponder:
    """Answers every list request on the prefix's ``BLK_Part_Lst`` partitions at once, with echo."""

    def __init__(self, bootstrap: str, prefix: str, partitions: int) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "bench-responder", "fetch.wait.max.ms": 5}
        )
        self._consumer.assign([TopicPartition(prefix + "BLK_Part_Lst", p, 0) for p in range(partitions)])
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self._topic = prefix + "BLK_Res"
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop:
            first = self._consumer.poll(0.05)
            for message in [] if first is None else [first, *self._consumer.consume(200, 0)]:
                if message.error() is None:
                    header = json.loads(message.value())[0]
                    answer = [{"auth": header["auth"], "request_id": header["request_id"]}, {"data": []}]
                    self._producer.produce(self._topic, json.dumps(answer).encode())
            self._producer.poll(0)

    def __enter__(self) -> InstantResponder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join(10)
        self._consumer.close()
        self._producer.flush(5)


def peak_rss(bench: Bench) -> dict[int, dict[str, int]]:
    results = {}
    for size in RSS_SIZES:
        prefix = bench.prefix(f"rss{size}", RSS_PARTITIONS)
        probe = [sys.executable, str(ROOT / "bench" / "rss_probe.py"), "--bootstrap", bench.bootstrap]
        probe += ["--prefix", prefix, "--requests", str(size)]
        with InstantResponder(bench.bootstrap, prefix, RSS_PARTITIONS):
            out = subprocess.run(probe, capture_output=True, text=True, cwd=ROOT, check=True, timeout=600)
        results[size] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


# ---------------------------------------------------------------------------- the report
def machine() -> dict[str, str]:
    import airflow
    import confluent_kafka

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))})",
        "memory": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "airflow": airflow.__version__,
        "confluent-kafka": f"{confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})",
        "load": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
    }


def tansu_version() -> str:
    from gateway_sandbox.broker import tansu_binary

    try:
        out = subprocess.run([tansu_binary(), "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "tansu"
    except (OSError, subprocess.SubprocessError):
        return "tansu"


def merge(benches: list[Bench]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """One row per benchmark with a figure column per broker: ``(headers, rows)``. A figure that
    does not depend on the broker (measured in one pass only, marked so) spans the columns."""
    columns = [BROKER_COLUMNS[b.broker] for b in benches]
    merged: dict[str, dict[str, tuple[str, str, str]]] = {}
    for bench in benches:
        for name, figure, target, status in bench.rows:
            merged.setdefault(name, {})[BROKER_COLUMNS[bench.broker]] = (figure, target, status)
    rows = []
    for name, by_broker in merged.items():
        independent = name in BROKER_INDEPENDENT
        figures = [by_broker.get(c, ("(any broker)" if independent else "—", "", ""))[0] for c in columns]
        targets = {t for t, _ in ((v[1], v[2]) for v in by_broker.values()) if t}
        statuses = {c: v[2] for c, v in by_broker.items() if v[2]}
        if len(targets) <= 1:
            target = next(iter(targets), "")
        else:
            target = "; ".join(f"{c}: {v[1]}" for c, v in by_broker.items() if v[1])
        if len(set(statuses.values())) <= 1:
            status = next(iter(statuses.values()), "")
        else:
            status = "; ".join(f"{c}: {v}" for c, v in statuses.items())
        rows.append((name, *figures, target, status))
    return ("benchmark", *columns, "target", "status"), rows


#: Rows measured once, without a broker.
BROKER_INDEPENDENT: set[str] = set()


def table(headers: tuple[str, ...], rows: list[tuple[str, ...]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def write_results(benches: list[Bench], about: dict[str, str], broker: str, took: float) -> None:
    load_at_end = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    text = (
        f"""# Benchmark results

Produced by `make bench` (`.venv/bin/python bench/run_all.py`), which prints the same table. Every
figure is from one run on the machine below, against the broker and gateway named; run it again
to reproduce them on yours.

- date: {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
- machine: {about["cpu"]}, {about["memory"]} RAM, {about["os"]}
- load average {about["load"]} at the start, {load_at_end} at the end: the machine is shared with
  other work, and the figures move with it (the sync and the day report most: they are CPU-bound
  in the gateway and the broker, which share the two cores with everything else)
- Python {about["python"]}, Apache Airflow {about["airflow"]}, confluent-kafka {about["confluent-kafka"]}
- brokers: {broker}; gateway: the sandbox (`python -m gateway_sandbox serve`), its own process,
  Python-literal answers like the original gateway; a fresh set of topics per measurement
- whole run: {took / 60:.1f} minutes

{table(*merge(benches), markdown=True)}

## How each figure is measured

"""
        + "\n".join(f"- {note}" for note in dict.fromkeys(n for b in benches for n in b.notes))
        + "\n"
    )
    # the soak and production sections come from runs of their own (minutes each): kept
    results.write_head(text)


#: Instant-responder targets per broker: (p50 ms, p99 ms).
INSTANT_TARGETS = {"tansu": (5, 20), "apache": (2, 10)}


def instant_round_trips(bench: Bench) -> None:
    """The provider's own latency: no gateway work, the broker's floor beside it."""
    from bench import request_roundtrip

    hook_default = request_roundtrip.HOOK_WAIT[bench.broker]
    waits = [hook_default, 1] if bench.broker == "tansu" else [hook_default]
    # A broker of its own: what it stores would slow the later measurements' fetches on tansu.
    own = None
    bootstrap = bench.bootstrap
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        own, _ = request_roundtrip.own_broker(bench.broker)
        bootstrap = own.bootstrap_servers
    try:
        rows = request_roundtrip.measure(bootstrap, ROUND_TRIPS, INSTANT_PARTITIONS, waits)
    finally:
        if own is not None:
            own.stop()
    p50_target, p99_target = INSTANT_TARGETS[bench.broker]
    for wait, name, samples in rows:
        p50, p99 = percentile(samples, 50) * 1e3, percentile(samples, 99) * 1e3
        figure = f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        which = "the hook's default" if wait == hook_default else "1 ms"
        label = f"{name.replace('hook.request', 'instant responder, hook')}, fetch wait: {which}"
        if name.startswith("broker floor"):
            bench.row(label, f"{figure} ({wait} ms)")
        else:
            target = f"p50 <= {p50_target} ms, p99 <= {p99_target} ms"
            bench.row(label, f"{figure} ({wait} ms)", target, p50 <= p50_target and p99 <= p99_target)
    bench.notes.append(
        f"Instant responder (`bench/request_roundtrip.py`): {ROUND_TRIPS:,} sequential "
        f"`list_partner_requests()` calls on one hook (after {request_roundtrip.WARM_UP} warm-up "
        "calls), answered at once by a responder in the bench process that reads only "
        "`BLK_Part_Lst`, on a broker of its own; the floor is one produce→consume hop with the same "
        "client settings, measured just before. Topics of "
        f"{INSTANT_PARTITIONS} partitions, fresh for each measurement: on tansu's in-memory storage a "
        "fetch costs more as its partition holds more batches, and every request is its own batch. "
        "On tansu once at the hook's default `fetch.wait.max.ms` there (5 ms), once at 1 ms: tansu "
        "holds every fetch for the whole wait even when data arrives, and a round trip has two "
        "fetches. On Apache Kafka at the hook's default there, 100 ms: a fetch returns "
        "when data arrives, and the setting only decides how often an idle reader asks. Targets: "
        "p50 <= 5 ms, p99 <= 20 ms on tansu; p50 <= 2 ms, p99 <= 10 ms on Apache Kafka."
    )


def idle_reader(bench: Bench) -> None:
    """What one idle reader at the hook's default wait costs the broker (its own broker only)."""
    from bench import idle_fetch_cpu, request_roundtrip

    if bench.broker_pid is None:
        return
    from blockchain_provider.triggers import await_response

    trigger = await_response.TRIGGER_CONSUMER_DEFAULTS["fetch.wait.max.ms"]
    if bench.broker == "tansu":
        trigger = await_response.TRIGGER_TANSU_CONSUMER_DEFAULTS["fetch.wait.max.ms"]
    waits = {"the hook's": request_roundtrip.HOOK_WAIT[bench.broker], "the triggerer's": trigger}
    alone, *readers = idle_fetch_cpu.measure(bench.bootstrap, bench.broker_pid, list(waits.values()), 10.0)
    for (whose, wait), reader in zip(waits.items(), readers, strict=True):
        bench.row(
            f"idle reader, fetch wait: {whose} default",
            f"{reader['fetches_per_s']:.1f} fetches/s; broker CPU {reader['broker_cpu']:.1%} "
            f"(broker alone {alone['broker_cpu']:.1%}) ({wait} ms)",
        )
    bench.notes.append(
        "Idle reader (`bench/idle_fetch_cpu.py`, which also measures other waits): one consumer "
        "assigned to an empty topic for 10 s at the hook's, then the triggerer's default `fetch.wait.max.ms` on that broker; "
        "fetch requests a second from librdkafka's statistics, broker CPU from its process's CPU time "
        "(a share of one core), next to the same broker with no client for 10 s."
    )


def run(bench: Bench, baseline_requests: int, dagbag: bool = True) -> None:
    def step(title: str) -> None:
        print(f"\n{title} ({BROKER_COLUMNS[bench.broker]})", flush=True)

    step("Round trips through KafkaBlockchainHook against an instant responder")
    instant_round_trips(bench)

    step("Round trips through KafkaBlockchainHook, and the original pattern")
    db, _public_key, token, ids = small_ledger(bench)
    off = hook_round_trips(bench, db, token, ids, echo=False)
    on = hook_round_trips(bench, db, token, ids, echo=True)
    orig = original_pattern(bench, db, token, ids, baseline_requests)
    p50_off, p99_off = percentile(off["samples"], 50), percentile(off["samples"], 99)
    p50_on, p99_on = percentile(on["samples"], 50), percentile(on["samples"], 99)
    bench.row("round trip, hook, echo off", f"p50 {p50_off * 1e3:.1f} ms, p99 {p99_off * 1e3:.1f} ms")
    bench.row("round trip, hook, echo on", f"p50 {p50_on * 1e3:.1f} ms, p99 {p99_on * 1e3:.1f} ms")
    answered = [s for s, o in zip(orig["samples"], orig["outcomes"], strict=True) if o == "right"]
    counts = {o: orig["outcomes"].count(o) for o in dict.fromkeys(orig["outcomes"])}
    summary = ", ".join(f"{n} {o}" for o, n in counts.items())
    if answered:
        p50_orig = percentile(answered, 50)
        bench.row(
            f"round trip, original pattern ({baseline_requests} requests)",
            f"p50 {p50_orig:.2f} s, p99 {percentile(orig['samples'], 99):.2f} s ({summary})",
        )
        bench.row("original pattern / hook (echo off), p50", f"{p50_orig / p50_off:,.0f}x slower")
    else:
        bench.row(
            f"round trip, original pattern ({baseline_requests} requests)", f"no right answer ({summary})"
        )
    bench.notes.append(
        f"Round trips: {ROUND_TRIPS:,} sequential `list_partner_requests(start, 1)` calls on one hook "
        "(after 20 warm-up calls) through the sandbox, on topics of 1 partition (the project's "
        "default), each answer checked against the ledger; p50/p99 of each call's wall time. Echo "
        "off is the original gateway (matched by token); echo on matches by request_id."
    )
    bench.notes.append(
        f"Original pattern: the seed document's views, in confluent-kafka: per request a new producer "
        f"({ORIGINAL_PRODUCER}) sends, then a new consumer with {ORIGINAL_CONSUMER} (kafka-python's "
        "defaults, which the seed used; the group id gets a per-run suffix) subscribes to BLK_Res and "
        "takes the first answer for its token, decoded as the seed does; a request that read nothing "
        "commits its position when it closes, as kafka-python does. The seed waits forever; here "
        f"each request gives up after {ORIGINAL_LIMIT_S:.0f} s ('timeout'). p50 is over the right answers, "
        "p99 over all requests. With `auto.offset.reset=latest` the first request of a new group "
        "misses its answer, which came before the group join (about half the session timeout on "
        "tansu) finished."
    )

    serial, pipelined = off["serial_s"], on["pipelined_s"]
    bench.row(
        f"{ROUND_TRIPS:,} requests serial (echo off)", f"{serial:.2f} s ({ROUND_TRIPS / serial:,.0f}/s)"
    )
    bench.row(
        f"{ROUND_TRIPS:,} requests pipelined (echo on, 16 in flight)",
        f"{pipelined:.2f} s ({ROUND_TRIPS / pipelined:,.0f}/s), {serial / pipelined:.1f}x faster",
    )
    bench.notes.append(
        "Serial against pipelined: the same 1,000 one-item pages, one at a time without echo (one "
        "request per token in flight), then with `call_many` and echo (16 in flight)."
    )

    step("Full sync of partner requests (hook and MES upsert)")
    syncs = full_syncs(bench)
    for size, seconds in syncs.items():
        target = "<= 5 s" if size == max(SYNC_SIZES) else ""
        bench.row(
            f"full sync, {size:,} partner requests",
            f"{seconds:.2f} s",
            target,
            seconds <= 5 if target else None,
        )
    bench.notes.append(
        "Full sync: `flows.sync_requests` (what the sync DAGs' task runs) with a new hook: every page of "
        "100 from the gateway without echo, then the upsert into a new SQLite MES database; timed from "
        "the hook's creation (its first request also waits for the idempotent producer's id, about "
        "0.5-1 s on tansu) to the upsert's commit; fresh topics and gateway process for each size. The "
        "ledger holds 16,000 partner requests of 10,000 ERP agents (seeded with a cheap password "
        "hash: nothing here checks those passwords)."
    )

    step(f"Day report of {DAY_REPORT_UNITS} production units")
    for partitions in (1, 4):
        seconds = day_report(bench, partitions)
        bench.row(
            f"day report, {DAY_REPORT_UNITS} units ({28 * DAY_REPORT_UNITS:,} records), echo on, "
            f"{partitions}-partition topics",
            f"{seconds:.2f} s ({28 * DAY_REPORT_UNITS / seconds:,.0f} records/s)",
            "<= 10 s",
            seconds <= 10,
        )
    bench.notes.append(
        "Day report: with one hook and echo, `flows.ensure_record_type` then `flows.submit_day_report` "
        "for each of the 100 reports (28 records each, pipelined 16 at a time), in sequence as the DAG's "
        "one-slot pool runs them; timed from the hook's creation; every record is then counted on the "
        "ledger. Twice: on topics of 1 partition (the project's default) and of 4, because tansu's "
        "fetches slow down as a partition grows, and 2,800 requests plus 2,800 answers on one partition "
        "reach that point."
    )

    if dagbag:
        dagbag_row(bench)

    peak_rss_rows(bench)

    # last: the broker has settled after its start-up work
    step("What an idle reader costs the broker")
    idle_reader(bench)


def dagbag_row(bench: Bench) -> None:
    """The one figure that does not depend on the broker."""
    print("\nDagBag parse time", flush=True)
    parse = dagbag_parse()
    assert parse["import_errors"] == 0, parse["errors"]
    name = f"DagBag fill of dags/ ({parse['dags']} DAGs), beyond importing Airflow"
    BROKER_INDEPENDENT.add(name)
    bench.row(
        name,
        f"{parse['fill_s']:.2f} s (importing Airflow: {parse['import_airflow_s']:.2f} s)",
        "<= 2 s",
        parse["fill_s"] <= 2,
    )
    bench.notes.append(
        f"DagBag: median of {DAGBAG_RUNS} fresh processes (`bench/dagbag_parse.py`): the time of "
        "`DagBag('dags/')` after `import airflow, airflow.sdk` and the DagBag class, which are timed apart."
    )


def peak_rss_rows(bench: Bench) -> None:
    print(f"\nPeak RSS of a process making many requests ({BROKER_COLUMNS[bench.broker]})", flush=True)
    rss = peak_rss(bench)
    peaks = {size: result["peak_rss_kb"] / 1024 for size, result in rss.items()}
    growth = {size: (result["rss_kb"] - result["rss_kb_after_warmup"]) / 1024 for size, result in rss.items()}
    spread = max(peaks.values()) - min(peaks.values())
    flat = spread <= max(4.0, 0.05 * min(peaks.values())) and max(growth.values()) <= 4.0
    for size, peak in peaks.items():
        last = size == max(RSS_SIZES)
        bench.row(
            f"peak RSS, {size:,} requests, one hook",
            f"{peak:.1f} MiB (RSS {growth[size]:+.1f} MiB from warm-up to the end)",
            "flat with the count" if last else "",
            flat if last else None,
        )
    bench.notes.append(
        "Peak RSS: `ru_maxrss` of a process (`bench/rss_probe.py`) making that many requests through "
        "one hook (echo, pipelined in batches of 500) against an instant responder in the bench "
        f"process, on topics of {RSS_PARTITIONS} partitions (on one, tansu stalls after a few thousand). "
        "The peak is the process's `ru_maxrss`; the growth is its resident size (VmRSS) after the "
        "requests minus after a warm-up of 100. 'Flat' means the peaks differ by at most 4 MiB or 5% "
        f"(here {spread:.1f} MiB) and no run grew by more than 4 MiB."
    )


def quiet() -> None:
    """Keep the product's per-request INFO lines out of the table's way."""
    for name in ("blockchain_provider", "blockchain_common", "gateway_sandbox", "include", "airflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


def start_broker(kind: str, workdir: Path) -> tuple[Any, str, str, int | None]:
    """A broker of *kind* for one pass: ``(broker, bootstrap, description, pid)``."""
    if kind == "tansu":
        broker = TansuBroker(log_path=workdir / "tansu.log").start()
        assert broker.process is not None
        described = f"{tansu_version()}, embedded, memory storage"
        return broker, broker.bootstrap_servers, described, broker.process.pid
    cluster = KafkaCluster(1, base_dir=workdir / "kafka").start()
    described = (
        f"Apache Kafka {kafka_version()}, one KRaft node (broker and controller), JVM heap {cluster.heap}"
    )
    return cluster, cluster.bootstrap_servers, described, cluster.nodes[0].pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-write", action="store_true", help=f"do not refresh {results.RESULTS.relative_to(ROOT)}"
    )
    parser.add_argument(
        "--baseline-requests", type=int, default=8, help="original-pattern requests (default 8)"
    )
    parser.add_argument(
        "--brokers", nargs="+", choices=tuple(BROKER_COLUMNS), default=list(BROKER_COLUMNS),
        help="the brokers to measure on, one pass each (default: tansu apache)",
    )  # fmt: skip
    args = parser.parse_args()

    quiet()
    about = machine()
    started = time.perf_counter()
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    benches: list[Bench] = []
    described: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        for i, kind in enumerate(args.brokers):
            passdir = Path(workdir) / kind
            passdir.mkdir()
            broker, pid = None, None
            if external:
                bootstrap, about_broker = external, external
            else:
                broker, bootstrap, about_broker, pid = start_broker(kind, passdir)
            described.append(f"{BROKER_COLUMNS[kind]}: {about_broker}")
            bench = Bench(bootstrap, passdir, broker=kind, broker_pid=pid)
            benches.append(bench)
            try:
                run(bench, args.baseline_requests, dagbag=i == 0)
            finally:
                if broker is not None:
                    broker.stop()
    took = time.perf_counter() - started

    print(f"\n{about['cpu']}, {about['memory']}; Python {about['python']}, Airflow {about['airflow']}")
    print("; ".join(described))
    print(table(*merge(benches), markdown=False))
    print(f"({took / 60:.1f} minutes)")
    if not args.no_write:
        write_results(benches, about, "; ".join(described), took)
        print(f"wrote {results.RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
