"""One process, one hook, N requests: prints its peak RSS as JSON (run by ``bench/run_all.py``).

Usage: ``.venv/bin/python bench/rss_probe.py --bootstrap HOST:PORT --prefix P --requests N``

A gateway (``bench/run_all.py`` runs an instant responder with request_id echo) must answer on
the prefix's topics. The requests are pipelined (``call_many``, 16 in flight) in batches of 500
after a warm-up of 100, so the figures cover the reader, the waiters and the worker threads: the
peak RSS (``ru_maxrss``) and the resident size (VmRSS) after the warm-up and at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.process_stats import peak_rss_kb, rss_kb  # noqa: E402
from gateway_sandbox.broker import DEFAULT_TOPICS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--requests", type=int, required=True)
    args = parser.parse_args()

    os.environ["AIRFLOW_CONN_KAFKA_DEFAULT"] = json.dumps(
        {"conn_type": "kafka", "extra": {"bootstrap.servers": args.bootstrap}}
    )
    os.environ["AIRFLOW_CONN_BLOCKCHAIN_MASTER"] = json.dumps(
        {
            "conn_type": "blockchain_token",
            "password": "rss-probe-token",
            "extra": {
                "echo_request_id": True,
                "topics": json.dumps({name: args.prefix + name for name in DEFAULT_TOPICS}),
            },
        }
    )
    from blockchain_provider import protocol
    from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook

    logging.getLogger("blockchain_provider").setLevel(logging.WARNING)

    call = protocol.list_call(protocol.PARTNER_LIST, 0, 10)
    with KafkaBlockchainHook(timeout=30) as hook:
        hook.client.call_many([call] * 100)
        warm, warm_peak = rss_kb(), peak_rss_kb()
        done = 0
        while done < args.requests:
            batch = min(500, args.requests - done)
            outcomes = hook.client.call_many([call] * batch)
            assert all(outcome.kind == "data" for outcome in outcomes)
            done += batch
        now = rss_kb()
    print(
        json.dumps(
            {
                "requests": done,
                "rss_kb_after_warmup": warm,
                "rss_kb": now,
                "peak_rss_kb_after_warmup": warm_peak,
                "peak_rss_kb": peak_rss_kb(),
            }
        )
    )


if __name__ == "__main__":
    main()
