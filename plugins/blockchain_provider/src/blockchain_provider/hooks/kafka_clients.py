"""The request producer and the response consumer, built from the Kafka provider's ``kafka``
connection with the settings request/reply needs, and the defaults that suit each broker."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from airflow.providers.apache.kafka.hooks.base import KafkaBaseHook
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

log = logging.getLogger(__name__)

#: Producer settings this hook needs; the kafka connection's extra cannot turn them off.
PRODUCER_REQUIRED = {"enable.idempotence": True, "acks": "all"}
#: Producer settings the kafka connection's extra may override.
PRODUCER_DEFAULTS = {"linger.ms": 0, "message.timeout.ms": 10_000}
#: Consumer settings the kafka connection's extra may override. The group id is only a
#: label: the reader assigns partitions itself, never joins the group and commits nothing.
#: ``fetch.wait.max.ms``: Apache Kafka answers a fetch as soon as data arrives, so the wait does
#: not delay an answer; it sets how often an idle reader asks (ten times a second at 100 ms, where
#: 5 ms made it 200) and how long a hook's start takes: the reader reads ``BLK_Res`` to its end
#: first, and the end is known when an empty fetch returns, which the broker holds for the whole
#: wait. The triggerer's long-lived readers wait the client's default, 500 ms.
CONSUMER_DEFAULTS = {
    "group.id": "blockchain-provider-reply",
    "fetch.wait.max.ms": 100,
    "socket.nagle.disable": True,
}
#: Over :data:`CONSUMER_DEFAULTS` where the broker is tansu (the embedded development broker of
#: ``make run``), which holds every fetch for its whole wait: there the wait is added to every
#: answer, so it is short, at the cost of broker CPU while idle (``bench/idle_fetch_cpu.py``).
#: The kafka connection's extra still overrides it.
TANSU_CONSUMER_DEFAULTS = {"fetch.wait.max.ms": 5}
#: tansu names its cluster this in every metadata response; Apache Kafka names a cluster with a
#: random UUID. The hook tells the two apart by it (:func:`broker_is_tansu`).
TANSU_CLUSTER_ID = "tansu_cluster"
CONSUMER_REQUIRED = {"enable.auto.commit": False, "enable.partition.eof": True}


def _without(config: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in keys}


class _ProducerHook(KafkaBaseHook):
    """Builds the request producer from the Kafka provider's ``kafka`` connection."""

    def _get_client(self, config: dict[str, Any]) -> Producer:
        config = {**PRODUCER_DEFAULTS, **config, **PRODUCER_REQUIRED}
        config.setdefault("logger", log)
        return Producer(config)

    @property
    def bootstrap_servers(self) -> str:
        return str(self._build_config().get("bootstrap.servers"))


class _ConsumerHook(KafkaBaseHook):
    """Builds the response consumer from the Kafka provider's ``kafka`` connection.

    :param defaults: settings over :data:`CONSUMER_DEFAULTS` that the connection may still override.
    """

    def __init__(self, kafka_config_id: str, defaults: Mapping[str, Any] | None = None) -> None:
        super().__init__(kafka_config_id)
        self._defaults = dict(defaults or {})

    def _get_client(self, config: dict[str, Any]) -> Consumer:
        config = {
            **CONSUMER_DEFAULTS,
            **self._defaults,
            **_without(config, "auto.offset.reset"),
            **CONSUMER_REQUIRED,
        }
        config.setdefault("logger", log)
        return Consumer(config)


# Bootstrap servers -> whether that broker is tansu, from the first metadata response.
_TANSU_BROKERS: dict[str, bool] = {}


def broker_is_tansu(client: Consumer | Producer, bootstrap_servers: str, topic: str, timeout: float) -> bool:
    """Whether *client*'s broker is tansu, from the cluster id of a metadata request for *topic*
    (remembered per bootstrap servers). A broker that does not answer counts as Apache Kafka,
    unremembered: the caller's own request then reports it."""
    known = _TANSU_BROKERS.get(bootstrap_servers)
    if known is not None:
        return known
    try:
        cluster_id = client.list_topics(topic, timeout=timeout).cluster_id
    except Exception:  # KafkaException, or a client that is not one (unit tests)
        return False
    _TANSU_BROKERS[bootstrap_servers] = cluster_id == TANSU_CLUSTER_ID
    return _TANSU_BROKERS[bootstrap_servers]


def bootstrap_servers(kafka_config_id: str) -> str:
    """The bootstrap servers of the ``kafka`` connection *kafka_config_id*, to name the broker."""
    return _ProducerHook(kafka_config_id).bootstrap_servers


def new_producer(kafka_config_id: str) -> Producer:
    """The request producer: idempotent, ``acks=all``, over the connection's settings."""
    return _ProducerHook(kafka_config_id).get_conn


def new_response_consumer(
    kafka_config_id: str,
    *,
    broker: str,
    response_topic: str,
    probe_timeout: float,
    defaults: Mapping[str, Any] | None = None,
    tansu_defaults: Mapping[str, Any] = TANSU_CONSUMER_DEFAULTS,
) -> Consumer:
    """A response consumer: *defaults* over :data:`CONSUMER_DEFAULTS`, and *tansu_defaults* over
    both when the broker is tansu; the connection's extra overrides them all.

    :param broker: the bootstrap servers, which :func:`broker_is_tansu` remembers the answer by.
    :param response_topic: the topic whose metadata tells the broker's kind.
    :param probe_timeout: seconds the metadata request may take.
    :param defaults: defaults to ``None`` (none besides :data:`CONSUMER_DEFAULTS`).
    :param tansu_defaults: defaults to :data:`TANSU_CONSUMER_DEFAULTS`; empty skips the probe.
    """
    consumer = _ConsumerHook(kafka_config_id, defaults).get_conn
    if not tansu_defaults or not broker_is_tansu(consumer, broker, response_topic, probe_timeout):
        return consumer
    consumer.close()
    return _ConsumerHook(kafka_config_id, {**(defaults or {}), **tansu_defaults}).get_conn


def consume_available(consumer: Consumer, timeout: float, batch: int = 500) -> list[Any]:
    """Wait up to *timeout* for one message, then take what else is already fetched.

    ``Consumer.consume(n, timeout)`` waits the whole timeout unless *n* messages arrive, which
    would add that timeout to every round trip.

    :param batch: the most messages taken, defaults to 500.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=batch - 1, timeout=0)]


def topic_ends(consumer: Consumer, topic: str, timeout: float) -> dict[int, int]:
    """Each partition of *topic* -> its end (the offset the next message written there gets).

    :raises KafkaException: the broker did not answer within *timeout* seconds.
    """
    metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
    if metadata.error is not None:
        raise KafkaException(metadata.error)
    return {
        partition: consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)[1]
        for partition in sorted(metadata.partitions)
    }
