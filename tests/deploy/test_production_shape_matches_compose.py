"""``make production`` (scripts/production_stack.py) and docker-compose.yaml with its celery
profile describe the same deployment: the same services, the same executor settings, the same
Kafka release, the sandbox and the workers started with the same options, Redis without
persistence. Static: nothing is started."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from gateway_sandbox.cli import build_parser
from local_services.kafka import kafka_version
from local_services.postgres import PostgresCluster
from scripts.production_stack import (
    AIRFLOW_DATABASE,
    COMPOSE_SERVICES,
    MES_DATABASE,
    MES_ROLE,
    ProductionStack,
    celery_settings,
    redis_command,
)
from scripts.stack.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
COMMON_ENV = COMPOSE["x-airflow-common"]["environment"]
ONE_SHOT = {"airflow-init", "sandbox-seed", "kafka-acls"}


def stack() -> ProductionStack:
    production = ProductionStack(Settings(root=ROOT, stack_dir=ROOT / ".local-production"))
    production.bootstrap = "127.0.0.1:9092"
    return production


def test_every_long_running_compose_service_has_its_process():
    assert set(COMPOSE_SERVICES) == set(SERVICES) - ONE_SHOT


def test_the_executor_settings_are_compose_celery_settings():
    ours = celery_settings(
        "redis://127.0.0.1:6379/0", "postgresql+psycopg2://postgres@127.0.0.1:5432/airflow"
    )
    assert set(ours) <= set(COMMON_ENV) | {"AIRFLOW__CORE__EXECUTOR"}
    assert (
        SERVICES["airflow-worker"]["environment"]["AIRFLOW__CORE__EXECUTOR"]
        == ours["AIRFLOW__CORE__EXECUTOR"]
    )
    for name, value in ours.items():
        if name == "AIRFLOW__CORE__EXECUTOR":
            continue
        scheme = value.split("://")[0]
        assert COMMON_ENV[name].split("://")[0] == scheme, name
    # the results live in the metadata database, in both
    database = re.sub(r"^db\+", "", COMMON_ENV["AIRFLOW__CELERY__RESULT_BACKEND"]).rsplit("/", 1)[1]
    assert database == COMMON_ENV["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].rsplit("/", 1)[1]
    assert ours["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql://postgres@127.0.0.1:5432/airflow"


def test_the_same_kafka_release():
    assert SERVICES["kafka"]["image"] == f"apache/kafka:{kafka_version()}"


def _compose_sandbox_args() -> list[str]:
    command = SERVICES["gateway-sandbox"]["command"]
    defaults = {
        "${GATEWAY_SANDBOX_ENCODING:-python-literal}": "python-literal",
        "${GATEWAY_SANDBOX_ECHO:---no-echo}": "--no-echo",
    }
    return [defaults.get(part, part) for part in command[3:]]


def test_the_sandbox_runs_with_the_same_options():
    parser = build_parser()
    compose_args = vars(parser.parse_args(_compose_sandbox_args()))
    ours = vars(parser.parse_args(stack().sandbox_command()[3:]))
    for option in ("encoding", "echo", "topic_prefix", "partitions", "fetch_wait_max_ms"):
        assert ours[option] == compose_args[option], option
    for knob in ("delay_ms", "drop_rate", "error_rate", "garbage_rate", "duplicate_rate", "foreign_rate"):
        assert ours[knob] == compose_args[knob] == 0, knob


def test_the_workers_run_the_compose_worker_command():
    compose_command = SERVICES["airflow-worker"]["command"].split()
    assert stack().worker_command(1)[1:3] == compose_command


def test_redis_keeps_nothing_on_disk_in_both():
    ours = redis_command(6379)
    assert ours[ours.index("--save") + 1] == "" and ours[ours.index("--appendonly") + 1] == "no"
    assert ours[ours.index("--bind") + 1] == "127.0.0.1"
    compose_script = SERVICES["redis"]["command"][-1]
    assert 'save ""\\nappendonly no' in compose_script


def test_the_mes_is_on_postgresql_in_a_database_and_role_of_its_own_in_both(tmp_path: Path):
    env_line = (ROOT / ".env.example").read_text().split("AIRFLOW_CONN_MES_DB=", 1)[1].splitlines()[0]
    compose_mes = json.loads(env_line)
    production = stack()
    production.postgres = PostgresCluster(port=5432, base_dir=tmp_path)  # not started: its address only
    ours = production.mes_connection()
    assert ours["conn_type"] == compose_mes["conn_type"] == "postgres"
    assert ours["schema"] == compose_mes["schema"] == MES_DATABASE != AIRFLOW_DATABASE
    assert ours["login"] == MES_ROLE
    assert production.mes_url().endswith(f"/{MES_DATABASE}")
