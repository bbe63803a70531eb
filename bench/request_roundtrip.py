"""Round trips of KafkaBlockchainHook.request against an instant responder, and the broker's floor.

Usage (from the repository root): ``.venv/bin/python bench/request_roundtrip.py [--requests 1000]``

It starts a tansu broker (or uses ``KAFKA_BOOTSTRAP_SERVERS``), a responder that answers every
list request at once, then times ``--requests`` sequential ``list_partner_requests`` calls with
echo off and with echo on. In the same run it times the broker's own produce→consume hop with
the same client settings: the floor under any request/reply.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from gateway_sandbox.broker import DEFAULT_TOPICS, TansuBroker, ensure_topics  # noqa: E402
from tests.provider.responder import ScriptedResponder  # noqa: E402


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def broker_floor(bootstrap: str, topic: str, count: int, fetch_wait: dict) -> list[float]:
    from blockchain_provider.hooks.kafka_blockchain import (
        CONSUMER_DEFAULTS,
        CONSUMER_REQUIRED,
        PRODUCER_DEFAULTS,
        PRODUCER_REQUIRED,
    )

    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS, **PRODUCER_REQUIRED})
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, **CONSUMER_DEFAULTS, **fetch_wait, **CONSUMER_REQUIRED}
    )
    _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.assign([TopicPartition(topic, 0, high)])
    producer.produce(topic, b"warm-up")
    producer.flush(10)
    samples = []
    for i in range(count + 1):
        started = time.perf_counter()
        producer.produce(topic, str(i).encode())
        producer.flush(10)
        while True:
            message = consumer.poll(5)
            if message is not None and not message.error() and message.value() == str(i).encode():
                break
        if i:  # the first includes warm-up of the consumer's fetch session
            samples.append(time.perf_counter() - started)
    consumer.close()
    return samples


def hook_round_trips(bootstrap: str, prefix: str, count: int, echo: bool) -> list[float]:
    from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook

    os.environ["AIRFLOW_CONN_BLOCKCHAIN_MASTER"] = json.dumps(
        {
            "conn_type": "blockchain_token",
            "password": "bench-token",
            "extra": {
                "echo_request_id": echo,
                "topics": json.dumps({name: prefix + name for name in DEFAULT_TOPICS}),
            },
        }
    )
    samples = []
    with (
        ScriptedResponder(bootstrap, prefix, lambda topic, header, body: {"data": []}, echo=echo),
        KafkaBlockchainHook() as hook,
    ):
        hook.list_partner_requests()  # connects, positions the reader, initialises the producer
        for _ in range(count):
            started = time.perf_counter()
            hook.list_partner_requests()
            samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=None,
        help="the kafka connection's fetch.wait.max.ms (default: the hook's)",
    )
    args = parser.parse_args()

    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = TansuBroker().start()
        bootstrap = broker.bootstrap_servers
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}_"
        fetch_wait = {} if args.fetch_wait_ms is None else {"fetch.wait.max.ms": args.fetch_wait_ms}
        # a fresh set of topics for each measurement, so none reads behind another's messages
        prefixes = {run: f"{prefix}{run}_" for run in ("off", "on")}
        ensure_topics(
            bootstrap,
            [p + name for p in prefixes.values() for name in DEFAULT_TOPICS] + [prefix + "floor"],
        )
        os.environ["AIRFLOW_CONN_KAFKA_DEFAULT"] = json.dumps(
            {"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap, **fetch_wait}}
        )
        rows = [
            (
                "broker floor: produce -> consume",
                broker_floor(bootstrap, prefix + "floor", args.requests, fetch_wait),
            ),
            (
                "hook.request, echo off (token match)",
                hook_round_trips(bootstrap, prefixes["off"], args.requests, False),
            ),
            (
                "hook.request, echo on (request_id)",
                hook_round_trips(bootstrap, prefixes["on"], args.requests, True),
            ),
        ]
    finally:
        if broker is not None:
            broker.stop()

    print(
        f"broker: {'tansu (embedded)' if broker else bootstrap}; {args.requests} sequential requests each; "
        f"fetch.wait.max.ms {fetch_wait.get('fetch.wait.max.ms', 'hook default')}"
    )
    print(f"{'measurement':40} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, samples in rows:
        print(
            f"{name:40} {percentile(samples, 50) * 1e3:8.2f} {percentile(samples, 99) * 1e3:8.2f} "
            f"{statistics.fmean(samples) * 1e3:8.2f}"
        )


if __name__ == "__main__":
    main()
