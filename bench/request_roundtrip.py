"""Round trips of KafkaBlockchainHook.request against an instant responder, and the broker's floor.

Usage (from the repository root):
``.venv/bin/python bench/request_roundtrip.py [--broker tansu|apache] [--nodes 1|3] [--requests 1000]
[--partitions 4] [--fetch-wait-ms 5 1]``

It starts a broker of its own (tansu, or Apache Kafka from the cached jars: one KRaft node, or
three with replication factor 3 and ``min.insync.replicas=2``), or uses
``KAFKA_BOOTSTRAP_SERVERS``, a responder that answers every list request at once, then times
``--requests`` sequential ``list_partner_requests`` calls with echo off and with echo on. In the
same run it times the broker's own produce→consume hop with the same client settings and topic
layout: the floor under any request/reply.

On Apache Kafka the hook's readers wait 100 ms per fetch (the triggerer's 500 ms): the broker
answers a fetch as soon as data arrives, so the wait costs no latency.

Two settings decide the figures on tansu, and both are printed with them:

- ``--fetch-wait-ms``: tansu holds every fetch for the full ``fetch.wait.max.ms``, even when data
  arrives, and a round trip has two fetches (the gateway's, then the hook's). The hook's default
  is 5 ms; 1 ms is tansu's fastest setting (0 makes it return before reading anything). On Apache
  Kafka a fetch returns when data arrives, and the value only sets how often an idle reader asks.
- ``--partitions``: tansu's in-memory storage makes a fetch cost more as its partition holds more
  batches (near 1,900 single-record batches a fetch takes seconds). Every request here is its own
  batch, so on one partition the 1,000 requests measure tansu's growth more than the hook; on 4
  they do not. Requests are keyed by request id, so they spread over the partitions. More
  partitions cost again: tansu's fetch slows with the partitions it covers, which is also why the
  responder reads only ``BLK_Part_Lst``.
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

from bench.harness import percentile, start_broker, time_each  # noqa: E402
from gateway_sandbox.broker import DEFAULT_TOPICS, ensure_topics  # noqa: E402
from local_services.responder import ScriptedResponder  # noqa: E402
from local_services.termination import stop_on_termination  # noqa: E402

#: Requests made before the timed ones: the clients connect, the code paths are warm.
WARM_UP = 20


def broker_floor(bootstrap: str, topic: str, partitions: int, count: int, fetch_wait: dict) -> list[float]:
    from blockchain_provider.hooks.kafka_clients import (
        CONSUMER_DEFAULTS,
        CONSUMER_REQUIRED,
        PRODUCER_DEFAULTS,
        PRODUCER_REQUIRED,
    )

    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS, **PRODUCER_REQUIRED})
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, **CONSUMER_DEFAULTS, **fetch_wait, **CONSUMER_REQUIRED}
    )
    consumer.assign([TopicPartition(topic, partition, 0) for partition in range(partitions)])
    samples = []
    for i in range(count + 1):
        started = time.perf_counter()
        producer.produce(topic, str(i).encode(), key=uuid.uuid4().hex.encode())  # keyed like requests
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
    with (
        ScriptedResponder(
            bootstrap,
            prefix,
            lambda topic, header, body: {"data": []},
            echo=echo,
            topics=("BLK_Part_Lst",),  # the only request topic here: one fetch, not seven
        ),
        KafkaBlockchainHook() as hook,
    ):
        # the warm-up connects, positions the reader, initialises the producer
        return time_each(lambda _: hook.list_partner_requests(), count, warm_up=WARM_UP)


def measure(
    bootstrap: str, requests: int, partitions: int, fetch_waits: list[int]
) -> list[tuple[int, str, list[float]]]:
    """For each ``fetch.wait.max.ms``: the broker floor, then the hook with echo off and on, each on
    a fresh set of topics. Returns ``(fetch wait, measurement, samples in seconds)`` rows."""
    rows = []
    for wait in fetch_waits:
        fetch_wait = {"fetch.wait.max.ms": wait}
        # a fresh set of topics for each measurement, so none reads behind another's messages
        prefix = f"bench{uuid.uuid4().hex[:6]}_"
        prefixes = {run: f"{prefix}{run}_" for run in ("off", "on")}
        ensure_topics(
            bootstrap,
            [p + name for p in prefixes.values() for name in DEFAULT_TOPICS] + [prefix + "floor"],
            partitions,
        )
        os.environ["AIRFLOW_CONN_KAFKA_DEFAULT"] = json.dumps(
            {"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap, **fetch_wait}}
        )
        floor = broker_floor(bootstrap, prefix + "floor", partitions, requests, fetch_wait)
        rows.append((wait, "broker floor: produce -> consume", floor))
        for run, echo, name in (("off", False, "token match"), ("on", True, "request_id")):
            samples = hook_round_trips(bootstrap, prefixes[run], requests, echo)
            rows.append((wait, f"hook.request, echo {run} ({name})", samples))
    return rows


#: The hook's readers' fetch.wait.max.ms per broker (TANSU_CONSUMER_DEFAULTS; the client's default).
HOOK_WAIT = {"tansu": 5, "apache": 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=("tansu", "apache"), default="tansu")
    parser.add_argument("--nodes", type=int, choices=(1, 3), default=1, help="Apache Kafka nodes (default 1)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=4, help="partitions of every topic (default: 4)")
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        nargs="+",
        help="the kafka connection's fetch.wait.max.ms, one run each (default: the hook's, "
        "then 1 on tansu; the hook's on Apache Kafka)",
    )
    args = parser.parse_args()
    # a SIGTERM (timeout, kill) stops what the script started, as Ctrl-C does
    stop_on_termination()
    hook_default = HOOK_WAIT[args.broker]
    waits = args.fetch_wait_ms or ([hook_default, 1] if args.broker == "tansu" else [hook_default])

    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    described = bootstrap
    if not bootstrap:
        broker = start_broker(args.broker, nodes=args.nodes)
        bootstrap, described = broker.bootstrap, broker.description
    try:
        rows = measure(bootstrap, args.requests, args.partitions, waits)
    finally:
        if broker is not None:
            broker.stop()

    print(
        f"broker: {described}; {args.requests} sequential requests each; "
        f"topics of {args.partitions} partition(s); the hook's default fetch.wait.max.ms there is {hook_default}"
    )
    print(f"{'fetch.wait.max.ms':>17}  {'measurement':38} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for wait, name, samples in rows:
        print(
            f"{wait:>17}  {name:38} {percentile(samples, 50) * 1e3:8.2f} "
            f"{percentile(samples, 99) * 1e3:8.2f} {statistics.fmean(samples) * 1e3:8.2f}"
        )


if __name__ == "__main__":
    main()
