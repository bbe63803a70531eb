"""``blockchain-provider topics ensure``: the BLK topics the broker does not have."""

from __future__ import annotations

import argparse
from typing import Any

from blockchain_provider.cli import common


def cmd_topics_ensure(args: argparse.Namespace) -> int:
    """Create the BLK topics (with the connection's overrides) that the broker does not have."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from blockchain_provider import protocol
    from blockchain_provider.hooks.kafka_clients import _ProducerHook

    if args.replication is not None and args.replication < 1:
        raise common.CommandError(f"--replication {args.replication}: at least 1", common.EXIT_USAGE)
    common.expose_connection(args.kafka_conn_id)
    topics = protocol.TopicMap()
    existing_conn = common.read_connection(args.conn_id)
    if existing_conn is not None:
        topics = protocol.TopicMap.parse(common._extra(existing_conn).get("topics"))
    config = _ProducerHook(args.kafka_conn_id)._build_config()
    admin = AdminClient(
        {k: v for k, v in config.items() if not k.startswith(("group.", "fetch.", "enable."))}
    )
    metadata = admin.list_topics(timeout=args.timeout)
    present = set(metadata.topics)
    # as many replicas as brokers, up to 3: a cluster keeps its topics when a broker fails
    replication = args.replication or max(1, min(3, len(metadata.brokers)))
    record_types = args.record_types or []
    wanted = [topics[name] for name in protocol.protocol_topics() if name != protocol.RECORDS]
    wanted += [topics[protocol.record_topic(name)] for name in record_types]
    missing = [
        NewTopic(t, num_partitions=args.partitions, replication_factor=replication)
        for t in wanted
        if t not in present
    ]
    created = []
    for topic, future in (
        admin.create_topics(missing, operation_timeout=args.timeout).items() if missing else []
    ):
        future.result()
        created.append(topic)
        if not args.json:
            print(f"Created topic {topic}")
    return common._done(
        args,
        f"{len(wanted) - len(missing)} topic(s) already present, {len(missing)} created",
        created=created,
        present=[t for t in wanted if t in present],
    )


def add_commands(groups: Any, documented: dict[str, Any]) -> None:
    """Add the ``topics`` commands to the command line."""
    topics = groups.add_parser("topics", help="Kafka topics", **documented).add_subparsers(
        dest="command", required=True
    )
    ensure = topics.add_parser("ensure", help="create the BLK topics the broker does not have", **documented)
    ensure.add_argument("--json", action="store_true", help=common.JSON_HELP)
    ensure.set_defaults(func=cmd_topics_ensure)
    ensure.add_argument("--kafka-conn-id", default="kafka_default", help="default: kafka_default")
    ensure.add_argument(
        "--conn-id", default="blockchain_master", help="topic overrides; default: blockchain_master"
    )
    ensure.add_argument(
        "--record-type",
        action="append",
        dest="record_types",
        help="also create this record type's topic BLK_Rec_<record type> (repeatable)",
    )
    ensure.add_argument("--partitions", type=int, default=1)
    ensure.add_argument(
        "--replication",
        type=int,
        default=None,
        help="replicas of each new topic; default: one per broker, at most 3",
    )
    ensure.add_argument("--timeout", type=float, default=30.0)
