"""What an idle response reader costs, by ``fetch.wait.max.ms``: broker and client CPU.

Usage (from the repository root): ``.venv/bin/python bench/idle_fetch_cpu.py [--seconds 10]``

It starts a tansu broker (only tansu: the broker's CPU is read from its process), assigns one
consumer to an empty topic, as the hook's reader waits between requests, and reads the CPU time
the broker and this process used over ``--seconds`` for each setting. tansu holds each empty fetch
for the whole wait, so the broker answers about 1000 / wait fetches a second.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from gateway_sandbox.broker import TansuBroker, ensure_topics  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process *pid*."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="idle time per setting")
    parser.add_argument("--fetch-wait-ms", type=int, nargs="+", default=[1, 2, 5, 10, 100, 500])
    args = parser.parse_args()

    print(f"{'fetch.wait.max.ms':>17}  {'broker CPU':>10}  {'client CPU':>10}  (share of one core)")
    with TansuBroker() as broker:
        assert broker.process is not None
        topic = f"idle{uuid.uuid4().hex[:6]}"
        ensure_topics(broker.bootstrap_servers, [topic])
        for wait in args.fetch_wait_ms:
            consumer = Consumer(
                {"bootstrap.servers": broker.bootstrap_servers, "group.id": "idle", "fetch.wait.max.ms": wait}
            )
            consumer.assign([TopicPartition(topic, 0, 0)])
            consumer.poll(1)  # connected, fetching
            broker_before, client_before = cpu_seconds(broker.process.pid), cpu_seconds(os.getpid())
            started = time.monotonic()
            while time.monotonic() - started < args.seconds:
                consumer.poll(0.1)
            took = time.monotonic() - started
            broker_share = (cpu_seconds(broker.process.pid) - broker_before) / took
            client_share = (cpu_seconds(os.getpid()) - client_before) / took
            print(f"{wait:>17}  {broker_share:>10.1%}  {client_share:>10.1%}", flush=True)
            consumer.close()


if __name__ == "__main__":
    main()
