"""The production-unit DAG refuses bad conf in its Params schema; what it accepts, its task handles."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException, ParamValidationError

from blockchain_provider.exceptions import BlockchainTimeoutError
from include.mes.models import ProductionUnitNotFoundError

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


def test_a_value_that_fails_inside_the_task_fails_at_once(monkeypatch, unit_dag):
    """A bad value is not retried three times (blocking later updates); a broker blip still is."""
    task = unit_dag.get_task("update_unit_record")
    module = task.python_callable.__globals__  # the DAG file as the DagBag loaded it
    monkeypatch.setitem(module, "gateway", lambda: _NoHook())
    monkeypatch.setitem(module, "mes", lambda: None)
    flows = module["flows"]

    def missing_unit(*args, **kwargs):
        raise ProductionUnitNotFoundError(3)

    monkeypatch.setattr(flows, "update_production_unit", missing_unit)
    with pytest.raises(AirflowFailException, match="3"):
        task.python_callable(params=dict(GOOD))

    def blip(*args, **kwargs):
        raise BlockchainTimeoutError("no answer", topic="BLK_Rec", request_id="r", timeout=1)

    monkeypatch.setattr(flows, "update_production_unit", blip)
    with pytest.raises(BlockchainTimeoutError):
        task.python_callable(params=dict(GOOD))


class _NoHook:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None
