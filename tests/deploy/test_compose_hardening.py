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
