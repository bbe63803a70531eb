"""The production-unit DAG refuses bad conf in its Params schema; what it accepts, its task handles."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException, ParamValidationError

from blockchain_provider.exceptions import BlockchainTimeoutError
from tests.operator_runs import run_operator, task_context

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def unit_dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(ROOT / "dags")).dags["blockchain_production_unit_update"]


def refused(dag, conf) -> bool:
    params = copy.deepcopy(dag.params)
    try:
        for key, value in conf.items():
            params[key] = value
        params.validate()
    except ParamValidationError:
        return True
    return False


GOOD = {"production_unit_id": 3, "status": "RUNNING", "process_name": "Stamping"}


@pytest.mark.parametrize(
    "change",
    [
        {"production_unit_id": 10**30},
        {"production_unit_id": 2**31},
        {"production_unit_id": 0},
        {"status": ""},
        {"status": "   "},
        {"status": "\t\n"},
        {"status": "RUN\x00NING"},
        {"status": "RUNNING\n"},
        {"status": "RUN\x1bNING"},
        {"status": "RUN\x85"},
        {"status": "RUN\ud800"},
        {"process_name": "Stamp\x07ing"},
        {"process_name": "Stamping\n"},
        {"process_name": "\udfffStamping"},
    ],
)
def test_the_schema_refuses(unit_dag, change):
    assert refused(unit_dag, {**GOOD, **change})


@pytest.mark.parametrize(
    "change",
    [{}, {"production_unit_id": 3.0}, {"status": "Läuft 😀 (Schicht A)"}, {"process_name": ""}],
)
def test_the_schema_accepts(unit_dag, change):
    assert not refused(unit_dag, {**GOOD, **change})


def test_what_the_schema_accepts_the_task_handles():
    import blockchain_production_unit_update as module

    assert module.unit_update_args({**GOOD, "production_unit_id": 3.0}) == (3, "RUNNING", "Stamping")
    for bad in ({"production_unit_id": 10**30}, {"status": "RUN\x00"}, {"process_name": "a\ud800"}):
        with pytest.raises(AirflowFailException):
            module.unit_update_args({**GOOD, **bad})


def test_a_value_that_fails_inside_the_task_fails_at_once(monkeypatch, unit_dag, tmp_path):
    """A bad value is not retried three times (blocking later updates); a broker blip still is."""
    from include.mes.db import engine_from_url
    from include.mes.repository import MesRepository

    mes_path = tmp_path / "mes.sqlite3"
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", json.dumps({"conn_type": "sqlite", "host": str(mes_path)}))
    repository = MesRepository(engine_from_url(f"sqlite:///{mes_path}"))
    repository.create_schema()
    task = unit_dag.get_task("update_unit_record")
    context = task_context(params=dict(GOOD))

    # no unit 3 in the MES
    with pytest.raises(AirflowFailException, match="3"):
        run_operator(task, context)
    assert "hook" not in vars(task)  # refused before any request

    for code in ("PT10", "PT11", "PT12"):
        repository.add_production_unit(code, f"Press line {code[2:]}", "IDLE")
    repository.engine.dispose()
    monkeypatch.setitem(vars(task), "hook", _BlipHook())
    with pytest.raises(BlockchainTimeoutError):
        run_operator(task, context)


class _BlipHook:
    """A gateway hook whose broker does not answer in time."""

    def create_record_type(self, *args, **kwargs):
        raise BlockchainTimeoutError("no answer", topic="BLK_Rty", request_id="r", timeout=1)

    def close(self):
        return None
