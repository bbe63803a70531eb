"""The production shape on one machine, without Docker: ``make production``.

The same steps as ``make run`` (:mod:`scripts.stack`, whose :class:`~scripts.stack.orchestration.Stack`
this extends), with the services a team runs once it outgrows one worker, as the
``docker-compose.yaml`` deployment with its ``celery`` profile describes them:

- Airflow's metadata database on PostgreSQL: a throwaway cluster (:mod:`local_services.postgres`,
  Debian's ``postgresql`` server binaries), removed when the stack stops; the MES database is a
  second database of that cluster, with a role of its own (``mes_db`` of conn type ``postgres``,
  as the compose deployment has it);
- the CeleryExecutor, its queue on Redis (Debian's ``redis-server``, on a free loopback port,
  no persistence, a password generated on every start) and its results in the metadata database;
- two Celery workers (``airflow celery worker``), beside the scheduler, DAG processor, triggerer
  and API server;
- a 3-broker Apache Kafka KRaft cluster (:mod:`local_services.kafka`; replication factor 3,
  ``min.insync.replicas=2``; needs Java >= 17 and, for the first fetch, Maven);
- the gateway sandbox, answering like the original gateway (no request-id echo) unless
  ``--echo`` is given; with ``--echo`` the token connection says so (``echo_request_id``) and
  the request pool gets ``--pool-slots`` slots.

Settings: those of ``make run``, but its directory is ``$PRODUCTION_STACK_DIR`` (default
``.local-production``) and its brokers its own (an external broker is refused), plus
``--workers`` (2), ``--worker-concurrency`` (``$WORKER_CONCURRENCY`` or 2), ``--echo`` and
``--pool-slots`` (1 without echo). Each start is a new deployment: metadata database, brokers,
ledger and MES database begin empty. Ctrl-C stops everything, newest first, PostgreSQL last.
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from local_services.kafka import KafkaCluster, KafkaError, kafka_version, missing_prerequisites  # noqa: E402
from local_services.ports import free_port  # noqa: E402
from local_services.postgres import PostgresCluster, PostgresError  # noqa: E402
from scripts.stack import StackError  # noqa: E402
from scripts.stack.airflow_api import connection_json  # noqa: E402
from scripts.stack.orchestration import Stack, serve  # noqa: E402
from scripts.stack.processes import Service, stderr_to  # noqa: E402
from scripts.stack.settings import TOKEN_CONN_ID, parse_settings  # noqa: E402

#: Brokers of the Apache Kafka cluster.
KAFKA_NODES = 3
#: The metadata database's name on the throwaway cluster.
AIRFLOW_DATABASE = "airflow"
#: The MES's database and role in the same cluster (trust authentication on loopback)
MES_DATABASE = MES_ROLE = "mes"

#: docker-compose.yaml's service -> the service this command starts for it.
COMPOSE_SERVICES = {
    "postgres": "postgres",
    # compose's two Kafka profiles; make production runs brokers in PLAINTEXT on loopback, as the
    # local-plaintext one does (the production profile adds SASL_SSL and ACLs)
    "kafka": "kafka",
    "kafka-local-plaintext": "kafka",
    "gateway-sandbox": "sandbox",
    "redis": "redis",
    "airflow-apiserver": "airflow-api-server",
    "airflow-scheduler": "airflow-scheduler",
    "airflow-dag-processor": "airflow-dag-processor",
    "airflow-triggerer": "airflow-triggerer",
    "airflow-worker": "airflow-worker-1",
}


def celery_settings(redis_url: str, metadata_url: str) -> dict[str, str]:
    """The executor settings of every Airflow process (docker-compose.yaml's celery profile)."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__CELERY__BROKER_URL": redis_url,
        # the metadata database, named as compose names it (psycopg2 is the default driver)
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+"
        + metadata_url.replace("postgresql+psycopg2://", "postgresql://"),
    }


def redis_command(port: int, config: Path | None = None) -> list[str]:
    """redis-server on loopback only, nothing saved: the queue holds only what is in flight. Its
    password is in *config* (a file only its owner reads), never on the command line."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    return [binary, *([str(config)] if config else []), "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no"]  # fmt: skip


def write_redis_config(path: Path, password: str) -> Path:
    """The config file that gives Redis its password (compose's redis writes the same), owner-only."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as config:
        config.write(f"requirepass {password}\n")
    return path


def redis_ping(port: int, password: str = "") -> bool:
    """Whether Redis on *port* answers a PING, after ``AUTH`` with *password* when one is given."""
    auth = f"*2\r\n$4\r\nAUTH\r\n${len(password)}\r\n{password}\r\n".encode() if password else b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(auth + b"PING\r\n")
            answer = b""
            while answer.count(b"\r\n") < (2 if password else 1):
                chunk = sock.recv(64)
                if not chunk:
                    break
                answer += chunk
            return answer.endswith(b"+PONG\r\n") and (not password or answer.startswith(b"+OK"))
    except OSError:
        return False


@dataclass
class ProductionStack(Stack):
    workers: int = 2
    worker_concurrency: int = 2
    echo: bool = False
    pool_slots: int = 1
    postgres: PostgresCluster | None = None
    redis_port: int = 0
    #: generated on every start, as compose's REDIS_PASSWORD is set once per deployment
    redis_password: str = field(default="", repr=False)
    log_ports: dict[str, int] = field(default_factory=dict)
    #: more options of ``gateway_sandbox serve`` (its fault knobs, --trace, --hold-file)
    sandbox_options: tuple[str, ...] = ()
    #: more settings of every command and service
    extra_env: dict[str, str] = field(default_factory=dict)
    #: its brokers take free ports, never BROKER_PORT
    listens_on_broker_port = False

    # -- settings of every command and service

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.postgres is not None:
            env.update(
                celery_settings(
                    f"redis://:{self.redis_password}@127.0.0.1:{self.redis_port}/0",
                    self.postgres.url(AIRFLOW_DATABASE),
                )
            )
        # the scheduler hands the workers as many tasks as they have slots (make run's LocalExecutor
        # keeps 4, for one machine's scheduler)
        if "AIRFLOW__CORE__PARALLELISM" not in os.environ:
            env["AIRFLOW__CORE__PARALLELISM"] = str(self.workers * self.worker_concurrency)
        # the triggerer's log server on a free port: other Airflow installations may hold 8794
        if "triggerer" in self.log_ports:
            env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(self.log_ports["triggerer"])
        env.update(self.extra_env)
        return env

    # -- steps

    def prepare(self) -> None:
        super().prepare()
        # a throwaway deployment: the metadata database and the brokers are new on every start,
        # so the ledger and the MES database are too (a kept ledger would gain a new MES agent
        # per start, for the new blockchain_master connection)
        s = self.settings
        for path in (s.ledger,):
            for suffix in ("", "-wal", "-shm", ".anchor", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
            raise StackError("no redis-server: apt-get install -y redis-server")
        missing = missing_prerequisites()
        if missing:
            raise StackError(f"the production shape needs {' and '.join(missing)} for Apache Kafka")
        with self.step("PostgreSQL: a throwaway cluster for Airflow's metadata and the MES"):
            try:
                self.postgres = PostgresCluster().start()
            except PostgresError as exc:
                raise StackError(str(exc)) from None
            import psycopg2

            try:
                admin = psycopg2.connect(
                    host=self.postgres.host, port=self.postgres.port, user=self.postgres.user
                )
            except psycopg2.Error as exc:
                raise StackError(
                    f"PostgreSQL on port {self.postgres.port} refused a connection: {exc}"
                ) from None
            try:
                admin.autocommit = True
                with admin.cursor() as cur:
                    cur.execute(f'CREATE DATABASE "{AIRFLOW_DATABASE}"')
                    # the MES's own database and role, as a plant's MES has them beside Airflow's
                    cur.execute(f'CREATE ROLE "{MES_ROLE}" LOGIN')
                    cur.execute(f'CREATE DATABASE "{MES_DATABASE}" OWNER "{MES_ROLE}"')
            except psycopg2.Error as exc:
                raise StackError(
                    f"could not create the databases {AIRFLOW_DATABASE} and {MES_DATABASE}: {exc}"
                ) from None
            finally:
                admin.close()
            self.say(f"    {self.postgres.url(AIRFLOW_DATABASE)}; MES {self.mes_url()}")
            self.write_state()  # a run killed from here on leaves PostgreSQL to the next one to stop
        self.log_ports = {"triggerer": free_port()}
        self.start_redis()

    def start_redis(self) -> Service:
        """Redis on a free loopback port, with a password of this start's (as compose's has one)."""
        self.redis_port = free_port()
        self.redis_password = secrets.token_urlsafe(32)
        config = write_redis_config(self.settings.stack_dir / "redis.conf", self.redis_password)
        with self.step(f"Redis on 127.0.0.1:{self.redis_port} (no persistence, a generated password)"):
            redis = self.start_service("redis", redis_command(self.redis_port, config))
            deadline = time.monotonic() + 30
            while not redis_ping(self.redis_port, self.redis_password):
                if not redis.alive() or time.monotonic() > deadline:
                    raise StackError(f"redis-server did not answer; see {redis.log}")
                time.sleep(0.2)
        return redis

    def start_broker(self) -> None:
        s = self.settings
        with self.step(
            f"broker: Apache Kafka {kafka_version()}, {KAFKA_NODES} KRaft brokers (data in {s.kafka_dir})"
        ):
            # the metadata database is new on every start, so is the cluster (its ports too)
            shutil.rmtree(s.kafka_dir, ignore_errors=True)
            with stderr_to(s.logs / "setup.log"):
                try:
                    self.broker = KafkaCluster(KAFKA_NODES, base_dir=s.kafka_dir).start()
                except KafkaError as exc:
                    raise StackError(str(exc)) from None
                gc.collect()
            self.bootstrap = self.broker.bootstrap_servers
            self.say(f"    {self.bootstrap}")
            self.write_state()

    def sandbox_command(self) -> list[str]:
        """``gateway_sandbox serve`` as docker-compose.yaml's gateway-sandbox runs it."""
        return [sys.executable, "-m", "gateway_sandbox", "serve", "--bootstrap-servers", self.bootstrap,
                "--db", str(self.settings.ledger), "--encoding", "python-literal",
                "--echo" if self.echo else "--no-echo", *self.sandbox_options]  # fmt: skip

    def worker_command(self, number: int) -> list[str]:
        """``airflow celery worker`` as docker-compose.yaml's airflow-worker runs it."""
        return [self.tool("airflow"), "celery", "worker", "--celery-hostname", f"worker{number}@%h",
                "--concurrency", str(self.worker_concurrency)]  # fmt: skip

    def start_sandbox(self) -> Service:
        self.say(f"==> gateway sandbox on {self.bootstrap} (echo {'on' if self.echo else 'off'})")
        return self.start_service("sandbox", self.sandbox_command())

    def restart_sandbox(self, echo: bool, pool_slots: int) -> Service:
        """Restart the gateway sandbox with or without request-id echo, and tell the token
        connection and its pool (the switch an operator makes once the gateway echoes)."""
        old = next(service for service in self.services if service.name == "sandbox")
        old.terminate()
        try:
            old.process.wait(60)
        except subprocess.TimeoutExpired:
            old.process.kill()
            old.process.wait(10)
        self.services.remove(old)
        self.echo, self.pool_slots = echo, pool_slots
        sandbox = self.start_sandbox()
        self.wait_sandbox(sandbox)
        self.set_echo(echo, pool_slots)
        return sandbox

    def ensure_token(self) -> None:
        super().ensure_token()
        with self.step(f"request pool: {self.pool_slots} slot(s); echo_request_id={self.echo}"):
            self.set_echo(self.echo, self.pool_slots)

    def set_echo(self, echo: bool, slots: int) -> None:
        """Tell the token connection whether the gateway echoes request ids, and size its pool."""
        conn = self.read_connection(TOKEN_CONN_ID)
        if conn is None:
            raise StackError(f"connection {TOKEN_CONN_ID} is missing")
        stored = connection_json(conn)
        # the sandbox's default profile answers the optional reads: a retried unit update checks
        # the record first (the original gateway has none; its connection leaves reads off)
        stored["extra"] = {**stored.get("extra", {}), "echo_request_id": echo, "reads": True}
        self.import_connections({TOKEN_CONN_ID: stored})
        self.run(
            [self.tool("blockchain-provider"), "pools", "ensure", "--conn-id", TOKEN_CONN_ID,
             "--slots", str(slots), "--reset"]
        )  # fmt: skip

    def start_airflow(self, api: Service) -> None:
        super().start_airflow(api)
        with self.step(f"{self.workers} Celery workers, {self.worker_concurrency} task slots each"):
            for number in range(1, self.workers + 1):
                self.start_worker(number)
            self.wait_until(self.workers_answer, "every Celery worker answers a ping", self.services)

    def start_worker(self, number: int) -> Service:
        name = f"airflow-worker-{number}"
        port = self.log_ports.setdefault(name, free_port())
        return self.start_service(
            name,
            self.worker_command(number),
            tier=3,
            env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port)},
        )  # fmt: skip

    def workers_answer(self) -> bool:
        result = self.run(
            [sys.executable, "-m", "celery", "--app", "airflow.providers.celery.executors.celery_executor.app",
             "inspect", "ping", "--timeout", "5"],
            check=False, timeout=60,
        )  # fmt: skip
        return result.stdout.count("pong") >= self.workers

    def worker(self, number: int) -> Service:
        return next(s for s in self.services if s.name == f"airflow-worker-{number}")

    def mes_connection(self) -> dict[str, Any]:
        """The MES on PostgreSQL: its own database and role in the stack's cluster."""
        if self.postgres is None:
            raise StackError("the MES database is on PostgreSQL, which is not started yet")
        return {
            "conn_type": "postgres",
            "host": self.postgres.host,
            "port": self.postgres.port,
            "login": MES_ROLE,
            "schema": MES_DATABASE,
        }

    def mes_url(self) -> str:
        if self.postgres is None:
            raise StackError("the MES database is on PostgreSQL, which is not started yet")
        return f"postgresql+psycopg://{MES_ROLE}@{self.postgres.host}:{self.postgres.port}/{MES_DATABASE}"

    def mes_location(self) -> str:
        return self.mes_url() if self.postgres is not None else "PostgreSQL (not started yet)"

    def banner(self) -> None:
        super().banner()
        self.say(
            f"  production shape CeleryExecutor, {self.workers} workers x {self.worker_concurrency}; "
            f"Redis 127.0.0.1:{self.redis_port}; metadata {self.postgres.url(AIRFLOW_DATABASE) if self.postgres else '-'}; "
            f"{KAFKA_NODES} Kafka brokers; echo {'on' if self.echo else 'off'}, pool {self.pool_slots} slot(s)"
        )

    def other_sessions(self) -> dict[str, int]:
        # pg_ctl detaches the postmaster: a killed run's next start stops it with the rest
        pid = self.postgres.pid if self.postgres is not None else None
        return {"postgres": pid} if pid is not None else {}

    def temporary_dirs(self) -> list[Path]:
        return [self.postgres.base_dir] if self.postgres is not None and self.postgres.temporary else []

    def broker_process(self):
        if isinstance(self.broker, KafkaCluster):
            # every broker must stay up: report the first one that exited
            for node in self.broker.nodes:
                if node.process is not None and node.process.poll() is not None:
                    return node.process
            return self.broker.nodes[0].process
        return super().broker_process()

    def down(self) -> None:
        try:
            super().down()
            (self.settings.stack_dir / "redis.conf").unlink(missing_ok=True)
        finally:
            if self.postgres is not None:
                self.say("==> stopping PostgreSQL")
                self.postgres.stop()
                self.postgres = None


def parse(argv: Sequence[str] | None = None) -> tuple[ProductionStack, bool]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--worker-concurrency", type=int, default=int(os.environ.get("WORKER_CONCURRENCY", "2"))
    )
    parser.add_argument("--echo", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--pool-slots", type=int, default=None)
    ours, rest = parser.parse_known_args(argv)
    if "--help" in rest or "-h" in rest:
        parser.print_help()
    # a directory of its own: a STACK_DIR exported for make run must not be cleared by this one
    environ = {**os.environ, "STACK_DIR": os.environ.get("PRODUCTION_STACK_DIR", ".local-production")}
    environ["KAFKA"] = "apache"
    settings, check = parse_settings(rest, environ)
    if settings.external_bootstrap:
        parser.error(
            "make production starts its own 3-broker cluster: KAFKA_BOOTSTRAP_SERVERS and "
            "--bootstrap-servers are not used"
        )
    settings = replace(settings, kafka="apache")
    slots = ours.pool_slots if ours.pool_slots is not None else (8 if ours.echo else 1)
    if slots > 1 and not ours.echo:
        parser.error("without --echo a token has one request in flight: --pool-slots must be 1")
    stack = ProductionStack(
        settings,
        workers=ours.workers,
        worker_concurrency=ours.worker_concurrency,
        echo=ours.echo,
        pool_slots=slots,
    )
    return stack, check


def main(argv: Sequence[str] | None = None) -> int:
    stack, check = parse(argv)
    return serve(stack, check, errors=(KafkaError,))


if __name__ == "__main__":
    sys.exit(main())
