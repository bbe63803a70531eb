"""The stack's settings: its directory, ports and broker, from options or the environment."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: The repository: DAGs, plugins and the ``.local`` default directory are found from here.
ROOT = Path(__file__).resolve().parents[2]

#: The brokers ``make run`` can start (``KAFKA``).
BROKERS = ("tansu", "apache")
#: Partitions of each BLK topic on the embedded tansu. tansu's memory storage makes a fetch cost
#: more as its partition holds more batches, until requests time out (one partition of BLK_Res:
#: about 29 days of this stack's schedule, bench/soak_stack.py); answers without a key spread over
#: the partitions, so each holds an eighth. On Apache Kafka (and an external broker) the topics
#: keep the project's one partition.
EMBEDDED_TOPIC_PARTITIONS = 8

TOKEN_CONN_ID = "blockchain_master"
KAFKA_CONN_ID = "kafka_default"
MES_CONN_ID = "mes_db"
MES_AGENT_NAME = "MES"
ADMIN_USER = "admin"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


@dataclass(frozen=True)
class Settings:
    """Where the stack lives and what it starts; every path derives from ``stack_dir``."""

    root: Path
    stack_dir: Path
    airflow_port: int = 8080
    broker_port: int = 9092
    external_bootstrap: str | None = None
    kafka: str = "tansu"
    with_airflow: bool = True
    timeout: float = 300.0
    #: the gateway sandbox's profile (``python -m gateway_sandbox serve --profile``)
    gateway_profile: str = "sandbox"

    @property
    def airflow_home(self) -> Path:
        return self.stack_dir / "airflow"

    @property
    def ledger(self) -> Path:
        return self.stack_dir / "ledger.sqlite3"

    @property
    def mes_db(self) -> Path:
        return self.stack_dir / "mes.sqlite3"

    @property
    def logs(self) -> Path:
        return self.stack_dir / "logs"

    @property
    def kafka_dir(self) -> Path:
        return self.stack_dir / "kafka"

    @property
    def state_file(self) -> Path:
        return self.stack_dir / "stack.json"

    @property
    def password_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json.generated"

    @property
    def url(self) -> str:
        return f"http://localhost:{self.airflow_port}"

    @property
    def bin(self) -> Path:
        return Path(sys.executable).parent


def parse_settings(
    argv: Sequence[str] | None = None, environ: dict[str, str] | None = None
) -> tuple[Settings, bool]:
    """The settings and whether to stop once healthy (``--check``), from *argv* and *environ*.

    :param argv: the options; default: ``sys.argv[1:]``
    :param environ: the environment the defaults come from; default: ``os.environ``
    """
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python scripts/run_stack.py",
        description="Start broker, gateway sandbox and Airflow with demo data; Ctrl-C stops them all.",
    )
    parser.add_argument(
        "--stack-dir", default=env.get("STACK_DIR", ".local"), help="default: $STACK_DIR or .local"
    )
    parser.add_argument(
        "--airflow-port",
        type=int,
        default=int(env.get("AIRFLOW_PORT", "8080")),
        help="default: $AIRFLOW_PORT or 8080",
    )
    parser.add_argument(
        "--broker-port",
        type=int,
        default=int(env.get("BROKER_PORT", "9092")),
        help="started broker's port; default: $BROKER_PORT or 9092",
    )
    parser.add_argument(
        "--kafka",
        choices=BROKERS,
        default=env.get("KAFKA") or "tansu",
        help="the broker to start: embedded tansu, or one Apache Kafka node (Java >= 17); default: $KAFKA or tansu",
    )
    parser.add_argument(
        "--bootstrap-servers",
        default=env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        help="use this broker instead of starting one; default: $KAFKA_BOOTSTRAP_SERVERS",
    )
    parser.add_argument(
        "--gateway-profile",
        choices=("sandbox", "original"),
        default=env.get("GATEWAY_PROFILE") or "sandbox",
        help="the gateway sandbox's profile: original refuses second creations, has no reads and answers "
        "writes after 1 s; default: $GATEWAY_PROFILE or sandbox",
    )
    parser.add_argument("--no-airflow", action="store_true", help="everything but the Airflow services")
    parser.add_argument("--check", action="store_true", help="start, wait until healthy, print, stop")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds Airflow may take to be healthy")
    args = parser.parse_args(argv)
    stack_dir = Path(args.stack_dir)
    if not stack_dir.is_absolute():
        stack_dir = ROOT / stack_dir
    settings = Settings(
        root=ROOT,
        stack_dir=stack_dir.resolve(),
        airflow_port=args.airflow_port,
        broker_port=args.broker_port,
        external_bootstrap=args.bootstrap_servers,
        kafka=args.kafka,
        with_airflow=not args.no_airflow,
        timeout=args.timeout,
        gateway_profile=args.gateway_profile,
    )
    return settings, args.check
