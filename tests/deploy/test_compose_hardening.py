"""Static checks of what the deployment exposes: the API server's port, passwords on command lines."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.deploy.test_compose import (
    COMPOSE_FILE,
    INIT_SCRIPT,
    SCRIPTS,
    env_example,
    filled_env_file,
    run_compose,
    services,
)

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def published(service: dict) -> list[str]:
    return [
        p if isinstance(p, str) else f"{p.get('host_ip', '')}:{p['published']}:{p['target']}"
        for p in service.get("ports") or []
    ]


def test_the_api_server_is_published_on_loopback_by_default():
    (port,) = published(services()["airflow-apiserver"])
    host = port[: port.index("}") + 1]
    assert host == "${AIRFLOW_API_BIND:-127.0.0.1}", port
    assert "AIRFLOW_API_BIND" in env_example()


@pytest.mark.parametrize("name", sorted(yaml.safe_load(COMPOSE_FILE.read_text())["services"]))
def test_no_other_service_publishes_a_port(name):
    if name == "airflow-apiserver":
        return
    assert not published(services()[name]), f"{name} publishes a port: reach it inside the compose network"


def test_init_refuses_a_public_api_server_without_tls(tmp_path):
    text = INIT_SCRIPT.read_text()
    assert "AIRFLOW_API_BIND" in text and "AIRFLOW__API__SSL_CERT" in text and "AIRFLOW__API__SSL_KEY" in text
    bash = shutil.which("bash")
    # run only the check, as the script defines it
    match = re.search(r"^check_api_exposure\(\) \{\n.*?^\}\n", text, re.M | re.S)
    assert match, "airflow-init.sh defines check_api_exposure()"
    function = match.group(0)
    cases = [
        ({}, 0),
        ({"AIRFLOW_API_BIND": "127.0.0.1"}, 0),
        ({"AIRFLOW_API_BIND": "0.0.0.0"}, 1),
        ({"AIRFLOW_API_BIND": "0.0.0.0", "AIRFLOW__API__SSL_CERT": "/certs/api.crt"}, 1),
        ({"AIRFLOW_API_BIND": "0.0.0.0", "AIRFLOW__API__SSL_CERT": "/c", "AIRFLOW__API__SSL_KEY": "/k"}, 0),
    ]
    for env, expected in cases:
        script = 'set -euo pipefail\nfail() { echo "$*" >&2; exit 1; }\n' + function + "check_api_exposure\n"
        result = subprocess.run(
            [bash, "-c", script], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True
        )
        assert result.returncode == expected, (env, result.stderr)
        if expected:
            assert "TLS" in result.stderr


def test_the_api_server_healthcheck_follows_tls():
    test = services()["airflow-apiserver"]["healthcheck"]["test"]
    joined = " ".join(test) if isinstance(test, list) else test
    assert "https://" in joined and "http://" in joined and "AIRFLOW__API__SSL_CERT" in joined


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_password_on_a_command_line(script):
    joined = re.sub(r"\\\n\s*", " ", script.read_text())
    for line in joined.splitlines():
        code = line.split(" #", 1)[0]
        assert not re.search(r"(^|\s)(--password|-p)(\s|=)\S*(PASSWORD|SECRET)", code), line.strip()
    if script == INIT_SCRIPT:
        assert "airflow users create" in joined
        create = joined[joined.index("airflow users create") :].split(')"', 1)[0]
        assert "--password" not in create and "--use-random-password" not in create
        assert re.search(r'<<<"\$\{_AIRFLOW_WWW_USER_PASSWORD\}"', create), "the password goes in on stdin"


def test_compose_config_publishes_loopback_by_default(tmp_path):
    result = run_compose(filled_env_file(tmp_path), "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    import json

    (port,) = json.loads(result.stdout)["services"]["airflow-apiserver"]["ports"]
    assert port["host_ip"] == "127.0.0.1"


# ---- Kafka: SASL_SSL and ACLs in production, PLAINTEXT only in the local profile ---------------

ACL_SCRIPT = INIT_SCRIPT.parent / "kafka-acls.sh"


def kafka_services() -> dict[str, dict]:
    return {name: s for name, s in services().items() if str(s.get("image", "")).startswith("apache/kafka")}


def test_plaintext_kafka_only_in_the_clearly_named_local_profile():
    for name, service in kafka_services().items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        client_listeners = [
            listener
            for listener in env.get("KAFKA_LISTENERS", "").split(",")
            if listener and not listener.startswith("CONTROLLER://localhost:")
        ]
        if any(listener.startswith("PLAINTEXT://") for listener in client_listeners):
            assert service.get("profiles") == ["local-plaintext"], f"{name} listens in PLAINTEXT"
            assert name == "kafka-local-plaintext"
        for listener in env.get("KAFKA_LISTENERS", "").split(","):
            if listener.startswith("CONTROLLER://"):
                assert listener.startswith("CONTROLLER://localhost:"), f"{name}: controller beyond loopback"


def test_production_kafka_authenticates_encrypts_and_authorises():
    kafka = services()["kafka"]
    assert kafka.get("profiles") == ["production"]
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert env["KAFKA_LISTENERS"] == "SASL_SSL://:9092,CONTROLLER://localhost:9093"
    assert env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] == "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    jaas = env["KAFKA_LISTENER_NAME_SASL__SSL_PLAIN_SASL_JAAS_CONFIG"]
    for user in ("admin", "mes", "gateway"):
        assert f'user_{user}="${{KAFKA_{user.upper()}_PASSWORD:?' in jaas
    acls = services()["kafka-acls"]
    assert acls.get("profiles") == ["production"] and acls["restart"] == "no"
    assert acls["depends_on"]["kafka"]["condition"] == "service_healthy"
    sandbox_deps = services()["gateway-sandbox"]["depends_on"]
    assert sandbox_deps["kafka-acls"] == {"condition": "service_completed_successfully", "required": False}


def _acl_grants() -> list[tuple[str, set[str], str, str]]:
    """``(principal, operations, resource, pattern type)`` of every ``acl`` line of the script."""
    text = re.sub(r"\\\n\s*", " ", ACL_SCRIPT.read_text())
    grants = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("acl --allow-principal"):
            continue
        words = line.split()
        principal = words[words.index("--allow-principal") + 1]
        operations = {words[i + 1] for i, w in enumerate(words) if w == "--operation"}
        kind = "--topic" if "--topic" in words else "--group"
        resource = words[words.index(kind) + 1].strip('"')
        pattern = (
            words[words.index("--resource-pattern-type") + 1]
            if "--resource-pattern-type" in words
            else "literal"
        )
        # the loops' variables stand for the arrays they walk
        names = {"${topic}": _array("REQUEST_TOPICS"), "${prefix}": _array("REQUEST_PREFIXES")}
        for name in names.get(resource, [resource]):
            grants.append((principal, operations, f"{kind[2:]}:{name}", pattern))
    return grants


def _array(name: str) -> list[str]:
    match = re.search(rf"^{name}=\(([^)]*)\)", ACL_SCRIPT.read_text(), re.M)
    assert match, f"kafka-acls.sh defines no {name}"
    return match.group(1).split()


def test_only_the_gateway_may_write_blk_res():
    grants = _acl_grants()
    assert grants, "kafka-acls.sh grants nothing"

    def covers(resource: str, pattern: str, topic: str) -> bool:
        kind, name = resource.split(":", 1)
        return kind == "topic" and (name == topic if pattern == "literal" else topic.startswith(name))

    writers = {p for p, ops, res, pat in grants if {"Write", "All"} & ops and covers(res, pat, "BLK_Res")}
    assert writers == {"User:gateway"}
    # the request-topic prefixes the MES may write do not reach BLK_Res
    prefixes = _array("REQUEST_PREFIXES")
    assert prefixes and not any("BLK_Res".startswith(prefix) for prefix in prefixes)
    readers = {p for p, ops, res, pat in grants if "Read" in ops and covers(res, pat, "BLK_Res")}
    assert readers == {"User:gateway", "User:mes"}


def test_the_clients_use_sasl_ssl_in_the_production_settings():
    from gateway_sandbox.cli import KAFKA_CONFIG_ENV

    sandbox = env_example()[KAFKA_CONFIG_ENV]
    assert not sandbox.commented
    import json

    settings = json.loads(re.sub(r"\$\{(\w+)\}", r"\1", sandbox.value))
    assert (settings["security.protocol"], settings["sasl.username"]) == ("SASL_SSL", "gateway")
    assert KAFKA_CONFIG_ENV in services()["gateway-sandbox"]["environment"]
    assert env_example()["COMPOSE_PROFILES"].value.split(",")[0] == "production"


def test_compose_config_of_the_local_plaintext_profile(tmp_path):
    import json

    result = run_compose(
        filled_env_file(tmp_path), "--profile", "local-plaintext", "config", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    local = json.loads(result.stdout)["services"]
    assert "kafka-local-plaintext" in local and "kafka" not in local and "kafka-acls" not in local
    assert "kafka" in local["kafka-local-plaintext"]["networks"]["default"]["aliases"]
