"""What a large hostile message on ``BLK_Res`` costs a waiting request: prints figures, asserts nothing.

Usage (from the repository root): ``.venv/bin/python bench/hostile_message.py [--rounds N]``

Anyone who can write ``BLK_Res`` can write a Python literal of nested tuples there, which the
literal parser takes seconds and hundreds of MB to read. Three measurements:

1. the decoder alone: ``ast.literal_eval`` of such literals (what decoding cost before the caps),
   and ``decode_response`` of the same message now (refused by the caps);
2. the response reader's handling of one message (``ResponseReader._dispatch``), for a message
   that names no waiting request (not decoded) and one that holds a waiting request's id (decoded
   up to the caps);
3. round trips through a real broker (tansu, started here) and the hook: median and maximum, with
   and without a ~1 MB hostile literal written on ``BLK_Res`` just before each answer.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins" / "blockchain_provider" / "src"))

from blockchain_provider import protocol  # noqa: E402
from blockchain_provider.exceptions import MalformedResponseError  # noqa: E402
from local_services.termination import stop_on_termination  # noqa: E402

#: Kafka's default largest message (message.max.bytes) is 1,000,000 bytes.
HOSTILE_BYTES = 990_000


def hostile_literal(size: int, request_id: str = "") -> str:
    unit = "((1, 2), (3, (4, 5)))"
    body = ", ".join([unit] * (size // (len(unit) + 2)))
    return "[{'auth': 'x', 'request_id': '" + request_id + "'}, {'data': [" + body + "]}]"


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def decoder_figures() -> None:
    print("1. decoder")
    for size in (256 * 1024, 1024 * 1024):
        text = hostile_literal(size)
        tracemalloc.start()
        ms = timed(lambda text=text: ast.literal_eval(text))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(
            f"   ast.literal_eval of a {size // 1024} KiB tuple literal: {ms:8.0f} ms, peak {peak / 2**20:6.0f} MiB"
        )
    raw = json.dumps(hostile_literal(HOSTILE_BYTES - 100)).encode()

    def decode() -> None:
        with contextlib.suppress(MalformedResponseError):
            protocol.decode_response(raw)

    ms = statistics.median(timed(decode) for _ in range(20))
    print(f"   decode_response of a {len(raw):,}-byte tuple literal now: {ms:8.2f} ms (refused by the caps)")


def reader_figures() -> None:
    from blockchain_provider.hooks.response_reader import ResponseReader

    print("2. response reader, one message")
    reader = ResponseReader(None, "BLK_Res")  # type: ignore[arg-type]  # _dispatch reads no consumer
    request_id = protocol.new_request_id()
    reader.register(request_id, "a-token", by_request_id_only=False)
    for label, rid in (("names no waiting request", ""), ("holds a waiting request's id", request_id)):
        raw = json.dumps(hostile_literal(HOSTILE_BYTES - 100, rid)).encode()
        times = [timed(lambda raw=raw: reader._dispatch(0, 0, raw)) for _ in range(20)]
        print(
            f"   {len(raw):,} bytes that {label}: median {statistics.median(times):.2f} ms, max {max(times):.2f} ms"
        )


hostile_payload = json.dumps(hostile_literal(HOSTILE_BYTES - 100)).encode()


def round_trip_figures(rounds: int) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
    from gateway_sandbox.broker import DEFAULT_TOPICS, TansuBroker, ensure_topics

    print(f"3. round trips through tansu and the hook, {rounds} each (request_id echo on)")
    logging.getLogger("blockchain_provider").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as home, TansuBroker(log_path=Path(home) / "tansu.log") as broker:
        bootstrap = broker.bootstrap_servers
        for hostile in (False, True):
            prefix = f"h{int(hostile)}{int(time.time())}_"
            ensure_topics(bootstrap, [prefix + name for name in DEFAULT_TOPICS])
            token = "bench-token-" + prefix
            os.environ["AIRFLOW_CONN_KAFKA_DEFAULT"] = json.dumps(
                {"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap}}
            )
            os.environ["AIRFLOW_CONN_BLOCKCHAIN_MASTER"] = json.dumps(
                {
                    "conn_type": "blockchain_token",
                    "password": token,
                    "extra": {
                        "echo_request_id": True,
                        "topics": json.dumps({name: prefix + name for name in DEFAULT_TOPICS}),
                    },
                }
            )
            stop = threading.Event()
            producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
            consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "fetch.wait.max.ms": 1})
            request_topic = prefix + "BLK_Part_Lst"
            consumer.assign([TopicPartition(request_topic, 0, 0)])

            def respond(
                stop=stop, consumer=consumer, producer=producer, prefix=prefix, hostile=hostile
            ) -> None:
                while not stop.is_set():
                    message = consumer.poll(0.05)
                    if message is None or message.error():
                        continue
                    header = json.loads(message.value())[0]
                    if hostile:
                        producer.produce(prefix + "BLK_Res", hostile_payload)
                    answer = [{"auth": header["auth"], "request_id": header["request_id"]}, {"data": []}]
                    producer.produce(prefix + "BLK_Res", json.dumps(answer).encode())
                    producer.flush(5)

            thread = threading.Thread(target=respond, daemon=True)
            thread.start()
            try:
                with KafkaBlockchainHook(timeout=30) as hook:
                    for _ in range(5):
                        hook.list_partner_requests()
                    times = [timed(hook.list_partner_requests) for _ in range(rounds)]
                    ignored = hook._reader.ignored
            finally:
                stop.set()
                thread.join(5)
                consumer.close()
            label = (
                "with a ~1 MB hostile literal before each answer" if hostile else "without hostile messages"
            )
            print(
                f"   {label}: median {statistics.median(times):.1f} ms, max {max(times):.1f} ms"
                + (f" ({ignored} hostile messages set aside undecoded)" if hostile else "")
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--no-broker", action="store_true", help="skip the round trips")
    args = parser.parse_args()
    # a SIGTERM (timeout, kill) stops what the script started, as Ctrl-C does
    stop_on_termination()
    logging.getLogger("blockchain_provider").setLevel(logging.ERROR)  # the malformed warnings
    decoder_figures()
    reader_figures()
    if not args.no_broker:
        round_trip_figures(args.rounds)


if __name__ == "__main__":
    main()
