"""The provider as another deployment gets it: built with ``python -m build`` into a wheel and an
sdist, installed into a fresh virtualenv (Airflow from ``constraints.txt``) outside the
repository, and used there with none of this project importable: Airflow lists it and loads its
plugin, the hook does a request/reply with the gateway sandbox on the session's broker, and a
deferrable operator in a DAG defined here runs through ``dag.test()``, its wait in a trigger."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blockchain_provider import __version__
from gateway_sandbox.ledger import Ledger
from gateway_sandbox.profiles import profile
from gateway_sandbox.server import GatewayServer
from tests.conftest import prefixed_topics

pytestmark = [pytest.mark.broker, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
PROVIDER = ROOT / "plugins" / "blockchain_provider"
#: The gateway answers every write this late: the operator's wait is the triggerer's.
WRITE_DELAY_MS = 3000


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, (
        f"{command[:4]} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel and the sdist ``python -m build`` makes of the provider."""
    out = tmp_path_factory.mktemp("dist")
    # built from a copy: a build writes its egg-info into the source tree, where the editable
    # install's path would then show Airflow the provider twice
    before = set(PROVIDER.rglob("*.egg-info"))
    source = tmp_path_factory.mktemp("source") / "blockchain_provider"
    shutil.copytree(
        PROVIDER, source, ignore=shutil.ignore_patterns("*.egg-info", "build", "dist", "__pycache__")
    )
    run([sys.executable, "-m", "build", "--outdir", str(out), str(source)])
    assert set(PROVIDER.rglob("*.egg-info")) == before, "the build wrote into the source tree"
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv, outside the repository, with the wheel and Airflow from constraints.txt."""
    place = tmp_path_factory.mktemp("elsewhere")
    run([sys.executable, "-m", "venv", str(place / "venv")])
    (wheel,) = dist.glob("*.whl")
    pip = [str(place / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    run([*pip, "-c", str(ROOT / "constraints.txt"), str(wheel)], cwd=place)
    return place / "venv"


@pytest.fixture
def elsewhere(
    venv: Path, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """A shell in a folder outside the repository: its own Airflow home, no PYTHONPATH, the
    connections to the session's broker and a sandbox with the original gateway's manners."""
    ledger_path = tmp_path / "ledger.sqlite3"
    password = secrets.token_urlsafe(24)
    with Ledger(str(ledger_path)) as ledger:
        public_key, token = ledger.create_agent("MES", password)
        erp, _ = ledger.create_agent("ERP", secrets.token_urlsafe(24))
        request_id = ledger.create_partner_request(erp, public_key)
    kept = ("PATH", "HOME", "LANG", "TMPDIR")
    env = {key: os.environ[key] for key in kept if key in os.environ}
    env.update(
        {
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
            "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(
                {"conn_type": "kafka", "extra": {"bootstrap.servers": kafka_bootstrap}}
            ),
            "AIRFLOW_CONN_BLOCKCHAIN_MASTER": json.dumps(
                {
                    "conn_type": "blockchain_token",
                    "login": public_key,
                    "password": token,
                    "extra": {"topics": json.dumps(prefixed_topics(topic_prefix)), "timeout": 30},
                }
            ),
        }
    )
    original = profile("original", write_delay_ms=WRITE_DELAY_MS)
    with GatewayServer(kafka_bootstrap, str(ledger_path), topic_prefix=topic_prefix, profile=original):
        yield {
            "env": env,
            "cwd": tmp_path,
            "bin": venv / "bin",
            "request_id": request_id,
            "ledger": ledger_path,
        }


def test_the_build_makes_a_wheel_and_an_sdist_with_what_a_package_carries(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    assert wheel.name == f"airflow_provider_blockchain-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    assert f"Version: {__version__}" in text and "License-Expression: Apache-2.0" in text
    assert "# airflow-provider-blockchain" in text  # the README is the package page
    assert f"## {__version__} (" in text  # and the changelog follows it
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "blockchain_provider/ui/static/app.js" in names
    with tarfile.open(sdist) as archive:
        members = {Path(m).name for m in archive.getnames()}
    assert {"README.md", "CHANGELOG.md", "LICENSE", "pyproject.toml"} <= members


def test_the_installed_wheel_works_outside_the_repository(elsewhere: dict[str, Any]) -> None:
    env, cwd, bin_ = elsewhere["env"], elsewhere["cwd"], elsewhere["bin"]
    python = str(bin_ / "python")

    providers = json.loads(
        run([str(bin_ / "airflow"), "providers", "list", "-o", "json"], env=env, cwd=cwd).stdout
    )
    ours = [p for p in providers if p["package_name"] == "airflow-provider-blockchain"]
    assert ours and ours[0]["version"] == __version__
    plugins = run([str(bin_ / "airflow"), "plugins", "-o", "json"], env=env, cwd=cwd)
    assert "blockchain_requests" in plugins.stdout
    assert "error" not in (plugins.stdout + plugins.stderr).lower(), plugins.stdout + plugins.stderr

    # the hook: one request and its answer, with the provider from the virtualenv and nothing
    # of this project importable
    hook_check = textwrap.dedent(
        """
        import importlib.util, json
        import blockchain_provider
        from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook

        with KafkaBlockchainHook() as hook:
            page = hook.list_partner_requests(0, 10)
        print(json.dumps({
            "module": blockchain_provider.__file__,
            "ids": [item["partner_request_id"] for item in page],
            "project": [n for n in ("include", "dags", "gateway_sandbox", "local_services", "scripts")
                        if importlib.util.find_spec(n) is not None],
        }))
        """
    )
    out = json.loads(run([python, "-c", hook_check], env=env, cwd=cwd).stdout.strip().splitlines()[-1])
    assert out["module"].startswith(str(bin_.parent)), out["module"]
    assert out["ids"] == [elsewhere["request_id"]] and out["project"] == []

    # a deferrable operator in a DAG of this test, run by dag.test(): the write is answered
    # 3 s late, so the task defers and its trigger waits for the answer
    run([str(bin_ / "airflow"), "db", "migrate"], env=env, cwd=cwd)
    dag_file = Path(env["AIRFLOW__CORE__DAGS_FOLDER"]) / "wheel_check.py"
    dag_file.parent.mkdir(parents=True, exist_ok=True)
    dag_file.write_text(
        textwrap.dedent(
            """
            import json
            from datetime import datetime, timezone

            from airflow.sdk import DAG
            from blockchain_provider.operators.record import EnsureRecordTypeOperator

            with DAG("wheel_check", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)) as dag:
                EnsureRecordTypeOperator(
                    task_id="ensure_type",
                    name="WheelCheck",
                    description="A record type created by the installed wheel",
                    properties=[{"name": "Status", "data_type": "STRING", "dynamic": True}],
                    deferrable=True,
                )

            if __name__ == "__main__":
                run = dag.test()
                print(json.dumps({"state": str(run.state)}))
            """
        )
    )
    result = run([python, str(dag_file)], env=env, cwd=cwd)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"state": "success"}, result.stdout[-2000:]
    output = result.stdout + result.stderr
    assert "Pausing task as DEFERRED" in output and "[DAG TEST] Trigger completed" in output, output[-4000:]
    with Ledger(str(elsewhere["ledger"])) as ledger:
        assert ledger.record_type("WheelCheck") is not None
