"""Throughput of the gateway sandbox: list and get requests per second through the broker.

Usage (from the repository root)::

    .venv/bin/python bench/sandbox_throughput.py [--requests 5000] [--window 200]
        [--encoding python-literal|json] [--in-process]

It starts a tansu broker (or uses ``KAFKA_BOOTSTRAP_SERVERS``), seeds a ledger (an MES agent,
ERP partners, orders, records), starts the sandbox with echo on (as a ``serve`` subprocess, or
in this process with ``--in-process``), then drives ``--requests`` requests with plain
confluent-kafka clients, pipelined with up to ``--window`` in flight: partner-request and
order-request pages, record gets and record-type gets in turn. Every answer is decoded and
must be ``data``. It prints requests per second and the p50/p99 latency from send to answer.
The target is 1,000 requests per second on a 2-core machine.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from bench.harness import percentile  # noqa: E402
from gateway_sandbox.broker import DEFAULT_TOPICS, TansuBroker, ensure_topics  # noqa: E402
from gateway_sandbox.ledger import Ledger  # noqa: E402
from local_services.termination import stop_on_termination  # noqa: E402

TARGET = 1000.0


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux ``/proc``), or ``None``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def seed(db_path: str, partners: int, orders: int, records: int) -> str:
    """Seed the ledger; return the MES agent's token."""
    with Ledger(db_path) as ledger:
        mes, token = ledger.create_agent("MES", "bench-mes-password")
        for p in range(partners):
            erp, _ = ledger.create_agent(f"ERP {p}", "bench-erp-password")
            request = ledger.create_partner_request(erp, mes)
            if p % 3:
                ledger.answer_partner_request(mes, request, True)
                for o in range(orders // partners):
                    ledger.create_order(
                        erp, mes, "production", f"Order {p}-{o}", {"Part": "steering wheel", "Size": o}
                    )
        ledger.create_record_type(
            mes,
            "DayReportIndicator",
            [{"name": "Value", "data_type": "NUMBER", "dynamic": False}],
            "One indicator",
        )
        with ledger.transaction():
            for r in range(records):
                ledger.create_record(
                    mes, f"R{r:04d}", "DayReportIndicator", {"Value": r}, description="001_21_01_02_PT10"
                )
    return token


def requests_cycle(token: str, records: int):
    """Endless (topic, envelope) pairs: the four kinds of read in turn."""
    i = 0
    while True:
        kind = i % 4
        if kind == 0:
            yield "BLK_Part_Lst", [{"auth": token, "start": i % 5, "limit": 10}]
        elif kind == 1:
            yield "BLK_Act_Lst", [{"auth": token, "start": (i * 7) % 90, "limit": 10}]
        elif kind == 2:
            yield "BLK_Rec_Get", [{"auth": token}, {"record_id": f"R{i % records:04d}"}]
        else:
            yield "BLK_Rty_Get", [{"auth": token}, {"name": "DayReportIndicator"}]
        i += 1


def decode(value: bytes, encoding: str) -> list:
    outer = json.loads(value)
    return ast.literal_eval(outer) if encoding == "python-literal" else outer


def drive(bootstrap: str, prefix: str, token: str, args: argparse.Namespace) -> dict:
    topics = {name: prefix + name for name in DEFAULT_TOPICS}
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "socket.nagle.disable": True})
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{prefix}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 2,
            "socket.nagle.disable": True,
        }
    )
    responses = topics["BLK_Res"]
    _, high = consumer.get_watermark_offsets(TopicPartition(responses, 0), timeout=10)
    consumer.assign([TopicPartition(responses, 0, high)])

    def send(topic: str, envelope: list) -> str:
        rid = uuid.uuid4().hex
        envelope[0] = {**envelope[0], "request_id": rid}
        producer.produce(
            topics[topic],
            json.dumps(envelope).encode(),
            key=rid.encode(),
            headers=[("blk-request-id", rid.encode())],
        )
        return rid

    # warm-up: one request answered end to end
    warm = send("BLK_Part_Lst", [{"auth": token}])
    producer.flush(10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = consumer.poll(0.1)
        if (
            message is not None
            and not message.error()
            and decode(message.value(), args.encoding)[0].get("request_id") == warm
        ):
            break
    else:
        raise SystemExit("the sandbox did not answer the warm-up request")

    pending: dict[str, float] = {}
    latencies: list[float] = []
    errors = 0
    sent = 0
    source = requests_cycle(token, args.records)
    started = time.perf_counter()
    while len(latencies) < args.requests:
        while sent < args.requests and len(pending) < args.window:
            topic, envelope = next(source)
            pending[send(topic, envelope)] = time.perf_counter()
            sent += 1
        producer.poll(0)
        message = consumer.poll(0.05)
        batch = [message, *consumer.consume(1000, 0)] if message is not None else []
        now = time.perf_counter()
        for item in batch:
            if item.error():
                continue
            header, outcome = decode(item.value(), args.encoding)
            sent_at = pending.pop(header.get("request_id"), None)
            if sent_at is None:
                continue
            latencies.append(now - sent_at)
            if "data" not in outcome:
                errors += 1
        if time.perf_counter() - started > args.timeout:
            raise SystemExit(f"only {len(latencies)} of {args.requests} answers after {args.timeout} s")
    elapsed = time.perf_counter() - started
    producer.close()
    consumer.close()
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rate": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--window", type=int, default=200, help="requests in flight at most")
    parser.add_argument("--encoding", choices=("python-literal", "json"), default="python-literal")
    parser.add_argument("--in-process", action="store_true", help="run the sandbox in this process")
    parser.add_argument("--partners", type=int, default=9)
    parser.add_argument("--orders", type=int, default=120)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    # a SIGTERM (timeout, kill) stops what the script started, as Ctrl-C does
    stop_on_termination()

    broker = server = process = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    workdir = tempfile.TemporaryDirectory(prefix="sandbox-bench-")
    db_path = str(Path(workdir.name) / "ledger.db")
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    try:
        if not bootstrap:
            broker = TansuBroker().start()
            bootstrap = broker.bootstrap_servers
        ensure_topics(bootstrap, [prefix + name for name in DEFAULT_TOPICS])
        token = seed(db_path, args.partners, args.orders, args.records)
        if args.in_process:
            from gateway_sandbox.server import GatewayServer

            server = GatewayServer(
                bootstrap, db_path, encoding=args.encoding, echo=True, topic_prefix=prefix, log_requests=False
            ).start()
        else:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "gateway_sandbox", "serve", "--bootstrap-servers", bootstrap,
                    "--db", db_path, "--topic-prefix", prefix, "--encoding", args.encoding, "--echo",
                    "--log-level", "WARNING",
                ],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
        pids = {"client": os.getpid()}
        if process is not None:
            pids["sandbox"] = process.pid
        if broker is not None and broker.process is not None:
            pids["broker"] = broker.process.pid
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        result = drive(bootstrap, prefix, token, args)
        cpu = {}
        for name, pid in pids.items():
            after = cpu_seconds(pid)
            if after is not None and cpu_before[name] is not None:
                cpu[name] = after - cpu_before[name]
    finally:
        if server is not None:
            server.stop()
        if process is not None:
            process.terminate()
            process.wait(15)
        if broker is not None:
            broker.stop()
        workdir.cleanup()

    where = "in-process" if args.in_process else "subprocess"
    print(
        f"sandbox throughput ({where}, {args.encoding}, echo on, window {args.window}): "
        f"{result['requests']} list/get requests in {result['seconds']:.2f} s = {result['rate']:.0f} requests/s; "
        f"latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; errors {result['errors']}"
    )
    if cpu:
        label = {"client": "client" if not args.in_process else "client + sandbox"}
        print(
            "CPU seconds during the run: "
            + ", ".join(f"{label.get(name, name)} {seconds:.2f}" for name, seconds in cpu.items())
            + f" (of {result['seconds'] * (os.cpu_count() or 1):.2f} available on {os.cpu_count()} cores)"
        )
    ok = result["rate"] >= TARGET and result["errors"] == 0
    print(f"target >= {TARGET:.0f}/s: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
