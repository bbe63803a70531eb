"""What an idle response reader costs, by broker and ``fetch.wait.max.ms``: fetches a second, broker and client CPU.

Usage (from the repository root):
``.venv/bin/python bench/idle_fetch_cpu.py [--seconds 10] [--broker tansu apache]``

For each broker (tansu, embedded; Apache Kafka, one KRaft node from the cached jars, see
``local_services/kafka.py``) it starts a broker of its own, measures the broker idle with no
client ("no reader", measured last so that a JVM's start-up work has settled), then assigns one consumer to an empty topic, as the hook's reader waits
between requests, and reads over ``--seconds`` for each setting: the fetch requests the client
sent (librdkafka's statistics), and the CPU time the broker process and this process used.

tansu holds each empty fetch for the whole wait, so it answers about 1000 / wait fetches a
second. Apache Kafka holds an empty fetch for the whole wait too, but answers it as soon as data
arrives: there the wait costs no latency; the hook's readers wait 100 ms, the triggerer's 500 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from bench.harness import start_broker  # noqa: E402
from bench.process_stats import cpu_seconds  # noqa: E402
from gateway_sandbox.broker import ensure_topics  # noqa: E402
from local_services.termination import stop_on_termination  # noqa: E402

#: The settings measured per broker: the hook's default there first.
WAITS = {"tansu": [5, 1, 100, 500], "apache": [100, 500, 5]}


def measure(bootstrap: str, broker_pid: int, waits: list[int], seconds: float) -> list[dict]:
    """Rows ``{"wait", "fetches_per_s", "broker_cpu", "client_cpu"}``; ``wait`` ``None`` is the broker
    with no reader at all."""
    topic = f"idle{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, [topic], replication_factor=1)
    rows = []
    for wait in waits:
        stats: list[dict] = []
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "idle",
                "fetch.wait.max.ms": wait,
                "statistics.interval.ms": 500,
                "stats_cb": lambda raw, stats=stats: stats.append(json.loads(raw)),
            }
        )
        consumer.assign([TopicPartition(topic, 0, 0)])
        consumer.poll(1)  # connected, fetching
        deadline = time.monotonic() + 1.0
        while not stats and time.monotonic() < deadline:
            consumer.poll(0.1)
        first = stats[-1]
        broker_before, client_before = cpu_seconds(broker_pid), cpu_seconds(os.getpid())
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            consumer.poll(0.1)
        took = time.monotonic() - started
        broker_share = (cpu_seconds(broker_pid) - broker_before) / took
        client_share = (cpu_seconds(os.getpid()) - client_before) / took
        last = stats[-1]
        stats_took = (last["ts"] - first["ts"]) / 1e6
        fetches = _fetch_requests(last) - _fetch_requests(first)
        rows.append(
            {
                "wait": wait,
                "fetches_per_s": fetches / stats_took if stats_took > 0 else float("nan"),
                "broker_cpu": broker_share,
                "client_cpu": client_share,
            }
        )
        consumer.close()
    # the broker alone, after the readers: a JVM's start-up work has settled by then
    before, client_before, started = cpu_seconds(broker_pid), cpu_seconds(os.getpid()), time.monotonic()
    time.sleep(seconds)
    took = time.monotonic() - started
    rows.insert(
        0,
        {
            "wait": None,
            "fetches_per_s": 0.0,
            "broker_cpu": (cpu_seconds(broker_pid) - before) / took,
            "client_cpu": (cpu_seconds(os.getpid()) - client_before) / took,
        },
    )
    return rows


def _fetch_requests(stats: dict) -> int:
    """Fetch requests the client has sent to every broker (librdkafka statistics)."""
    return sum(b.get("req", {}).get("Fetch", 0) for b in stats.get("brokers", {}).values())


def run_broker(kind: str, seconds: float, waits: list[int]) -> list[dict]:
    """Start a broker of *kind* (``tansu`` or ``apache``) of its own and measure on it."""
    with start_broker(kind) as broker:
        assert broker.pid is not None
        if kind == "apache":
            time.sleep(15)  # the JVM's start-up work (JIT, metadata snapshots) settles
        return measure(broker.bootstrap, broker.pid, waits, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="idle time per setting")
    parser.add_argument("--broker", nargs="+", choices=("tansu", "apache"), default=["tansu", "apache"])
    parser.add_argument("--fetch-wait-ms", type=int, nargs="+", help="the settings (default: per broker)")
    args = parser.parse_args()
    # a SIGTERM (timeout, kill) stops what the script started, as Ctrl-C does
    stop_on_termination()

    print(f"{'broker':>12} {'fetch.wait.max.ms':>17} {'fetches/s':>10} {'broker CPU':>10} {'client CPU':>10}")
    for kind in args.broker:
        for row in run_broker(kind, args.seconds, args.fetch_wait_ms or WAITS[kind]):
            wait = "no reader" if row["wait"] is None else str(row["wait"])
            print(
                f"{kind:>12} {wait:>17} {row['fetches_per_s']:>10.1f} {row['broker_cpu']:>10.1%} "
                f"{row['client_cpu']:>10.1%}",
                flush=True,
            )


if __name__ == "__main__":
    main()
