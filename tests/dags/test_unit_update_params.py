"""The production-unit DAG refuses bad conf in its Params schema; what it accepts, its task handles."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from blockchain_provider.exceptions import BlockchainTimeoutError
from tests.dags.conftest import refused_by_params
from tests.operator_runs import run_operator, task_context

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def unit_dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(ROOT / "dags")).dags["blockchain_production_unit_update"]


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
        # invisible and layout characters (Unicode Cf, Zl, Zp, Co, Cn), and statuses of nothing visible
        {"status": "\u200b"},
        {"status": "\ufeff\u200b"},
        {"status": "\u3164"},
        {"status": " \u3164\u2800 "},
        {"status": "RUN\u2028NING"},
        {"status": "RUN\u2029"},
        {"status": "\u202eGNINNUR"},
        {"status": "RUN\ue000"},
        {"status": "RUN\U000e0001"},
        {"status": "RUN\u0378"},
        {"process_name": "Stamp\u2028ing"},
        {"process_name": "\u202eStamping"},
        {"process_name": "Stamping\u2029"},
        {"process_name": "\u200b"},
        {"process_name": "\U000f0000"},
    ],
)
def test_the_schema_refuses(unit_dag, change):
    assert refused_by_params(unit_dag, {**GOOD, **change})


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"production_unit_id": 3.0},
        {"status": "Läuft 😀 (Schicht A)"},
        {"status": "Parado \u2013 manutenção"},
        {"process_name": "Estampagem \u2013 linha 3"},
        {"process_name": ""},
    ],
)
def test_the_schema_accepts(unit_dag, change):
    assert not refused_by_params(unit_dag, {**GOOD, **change})


@pytest.mark.parametrize(
    "status", ["RUNNING", "Parado \u2013 manutenção", "\u3164", "\u200b", "RUN\x1b", "RUN\u2028", "\u202eX"]
)
def test_the_params_the_task_and_the_mes_apply_one_rule(unit_dag, status):
    """What the Params accept, the task and the MES's note accept, and the reverse."""
    from include.mes import unit_update_runs as module
    from include.mes.models import validate_unit_status

    try:
        validate_unit_status(status)
        mes_accepts = True
    except ValueError:
        mes_accepts = False
    try:
        module.unit_update_args({**GOOD, "status": status})
        task_accepts = True
    except AirflowFailException:
        task_accepts = False
    assert mes_accepts == task_accepts == (not refused_by_params(unit_dag, {**GOOD, "status": status}))
    assert mes_accepts is (status in ("RUNNING", "Parado \u2013 manutenção"))


def test_what_the_schema_accepts_the_task_handles():
    from include.mes import unit_update_runs as module

    assert module.unit_update_args({**GOOD, "production_unit_id": 3.0}) == (3, "RUNNING", "Stamping")
    for bad in ({"production_unit_id": 10**30}, {"status": "RUN\x00"}, {"process_name": "a\ud800"}):
        with pytest.raises(AirflowFailException):
            module.unit_update_args({**GOOD, **bad})


@pytest.fixture
def claim(unit_dag, tmp_path):
    """The update task's queue on a SQLite MES database, and ``context(run_id, try_number=1, **conf)``."""
    from include.mes.db import engine_from_url
    from include.mes.repository import MesRepository
    from include.mes.unit_update_runs import UnitChangeQueue

    task = unit_dag.get_task("update_unit_record")
    assert isinstance(task.update_queue, UnitChangeQueue)  # the DAG drains the MES's queue
    # the executor's queue stays Airflow's: a Celery worker must pick the task up
    assert task.queue == unit_dag.get_task("claim_unit").queue and isinstance(task.queue, str)
    engine = engine_from_url(f"sqlite:///{tmp_path / 'mes.sqlite3'}")
    repository = MesRepository(engine)
    repository.create_schema()
    queue = UnitChangeQueue(lambda: repository)

    def context(run_id: str, try_number: int = 1, **conf):
        return {
            "params": {**GOOD, **conf},
            "dag_run": SimpleNamespace(run_id=run_id),
            "ti": SimpleNamespace(try_number=try_number, max_tries=3),
        }

    try:
        yield queue, context, repository
    finally:
        engine.dispose()


def test_a_missing_unit_fails_at_once(claim):
    """A missing unit is not retried three times (it would hold back the unit's later updates)."""
    queue, context, _repository = claim
    with pytest.raises(AirflowFailException, match="Production unit 3"):
        queue.claim(context("manual__1"))


def test_a_run_whose_change_was_applied_has_nothing_left_and_names_who_applied_it(claim):
    from include.mes.unit_updates import unit_lock_holder

    queue, context, repository = claim
    unit = repository.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    repository.set_production_unit_state(unit.id, "S1", "P1", dag_run_id="mes__a")
    repository.set_production_unit_state(unit.id, "S2", "P2", dag_run_id="mes__b")
    claimed = queue.claim(context("mes__b", production_unit_id=unit.id))
    # the run's own change last, the MES's noted values (not the conf's) in order
    assert [(p.key, p.own, dict(p.update.updates)) for p in claimed.pending] == [
        (f"change {repository.unit_change('mes__a').seq}", False, {"Status": "S1", "ProcessName": "P1"}),
        (f"change {repository.unit_change('mes__b').seq}", True, {"Status": "S2", "ProcessName": "P2"}),
    ]
    assert unit_lock_holder(repository.engine, unit.id) == "mes__b"
    for pending in claimed.pending:
        pending.mark_sending()
        pending.mark_applied("ok")
    claimed.release()
    assert unit_lock_holder(repository.engine, unit.id) is None
    claimed = queue.claim(context("mes__a", production_unit_id=unit.id))
    assert claimed.pending == [] and claimed.applied_by == "run mes__b"
    assert claimed.summary["unit"] == "PT10"


def test_a_claim_kept_for_a_deferral_keeps_the_units_lock(claim):
    from include.mes.unit_updates import unit_lock_holder

    queue, context, repository = claim
    unit = repository.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    repository.set_production_unit_state(unit.id, "S1", "P1", dag_run_id="mes__a")
    queue.claim(context("mes__a", production_unit_id=unit.id)).keep(60.0)
    assert unit_lock_holder(repository.engine, unit.id) == "mes__a"
    # the resumed task claims again under the same run, and lets go when it is done
    queue.claim(context("mes__a", production_unit_id=unit.id)).release()
    assert unit_lock_holder(repository.engine, unit.id) is None


def test_a_run_that_fails_for_good_gives_its_change_up(claim):
    queue, context, repository = claim
    unit = repository.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    repository.set_production_unit_state(unit.id, "S1", "P1", dag_run_id="mes__a")
    queue.claim(context("mes__a", production_unit_id=unit.id)).release()
    assert repository.unit_change("mes__a").pending
    queue.failed(
        context("mes__a", try_number=4, production_unit_id=unit.id),
        BlockchainTimeoutError("no answer", topic="BLK_Rec", request_id="r", timeout=1),
    )
    given_up = repository.unit_change("mes__a")
    assert (given_up.outcome, given_up.applied_by_run) == ("failed", "mes__a")
    # the run cleared and run again does not put its older values back
    with pytest.raises(AirflowFailException, match="was given up"):
        queue.claim(context("mes__a", production_unit_id=unit.id))
    # a run triggered by hand notes its own change when it starts, after the given-up one
    claimed = queue.claim(context("manual__b", production_unit_id=unit.id, status="S2"))
    assert [(p.own, p.update.updates["Status"]) for p in claimed.pending] == [(True, "S2")]


def note_as_before(repository, unit_id: int, status: str, process_name: str, run_id: str) -> None:
    """A change noted as the MES noted it before its checks were the DAG's (or by hand)."""
    import sqlalchemy as sa

    from include.mes import schema

    with repository.engine.begin() as conn:
        conn.execute(
            sa.insert(schema.unit_updates).values(
                production_unit_id=unit_id,
                status=status,
                process_name=process_name,
                dag_run_id=run_id,
                noted_at=schema.utcnow(),
            )
        )


@pytest.mark.parametrize(
    ("status", "process_name"), [("Stopped\x1b]0;x\x07", "Idle"), ("Stopped", "Idle\u202e"), ("\u3164", "")]
)
def test_a_change_refused_by_its_own_run_is_not_applied_by_the_next(claim, status, process_name):
    queue, context, repository = claim
    unit = repository.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    note_as_before(repository, unit.id, status, process_name, "mes__bad")
    with pytest.raises(AirflowFailException, match="Invalid"):
        queue.claim(context("mes__bad", production_unit_id=unit.id, status=status, process_name=process_name))
    repository.set_production_unit_state(unit.id, "Running", "Deep drawing", dag_run_id="mes__good")
    claimed = queue.claim(
        context("mes__good", production_unit_id=unit.id, status="Running", process_name="Deep drawing")
    )
    assert [(p.own, dict(p.update.updates)) for p in claimed.pending] == [
        (True, {"Status": "Running", "ProcessName": "Deep drawing"})
    ]
    bad = repository.unit_change("mes__bad")
    assert (bad.outcome, bad.applied_by_run) == ("refused", "mes__good")
    assert "Invalid" in bad.detail


def test_the_mes_does_not_note_a_change_its_dag_would_refuse(claim):
    _queue, _context, repository = claim
    unit = repository.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    for status, process_name in (("Stopped\x1b", ""), ("\u200b", ""), ("Stopped", "a\u2028b")):
        with pytest.raises(ValueError, match="Invalid"):
            repository.set_production_unit_state(unit.id, status, process_name, dag_run_id="mes__x")
    assert repository.unit_change("mes__x") is None
    assert repository.production_unit(unit.id).status == "Running"


def test_a_value_that_fails_inside_the_task_fails_at_once(monkeypatch, unit_dag, tmp_path):
    """A bad value is not retried three times (blocking later updates); a broker blip still is."""
    from include.mes.db import engine_from_url
    from include.mes.repository import MesRepository

    mes_path = tmp_path / "mes.sqlite3"
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", json.dumps({"conn_type": "sqlite", "host": str(mes_path)}))
    repository = MesRepository(engine_from_url(f"sqlite:///{mes_path}"))
    repository.create_schema()
    # the first gateway request of a unit's first update is its creation's
    task = unit_dag.get_task("create_unit_record")
    context = task_context(params=dict(GOOD), run_id="manual__blip")

    # no unit 3 in the MES
    for each in (task, unit_dag.get_task("update_unit_record")):
        with pytest.raises(AirflowFailException, match="3"):
            run_operator(each, context)
        assert "hook" not in vars(each)  # refused before any request

    for code in ("PT10", "PT11", "PT12"):
        repository.add_production_unit(code, f"Press line {code[2:]}", "IDLE")
    repository.engine.dispose()
    monkeypatch.setitem(vars(task), "hook", _BlipHook())
    with pytest.raises(BlockchainTimeoutError):
        run_operator(task, context)


class _BlipClient:
    """A request engine whose broker does not answer in time."""

    def call(self, *args, **kwargs):
        raise BlockchainTimeoutError("no answer", topic="BLK_Rty", request_id="r", timeout=1)

    send_batch = call  # the deferrable task's way to send


class _BlipHook:
    """A gateway hook whose broker does not answer in time."""

    gateway_id = "localhost:9092/02" + "ab" * 32
    kafka_config_id, token_conn_id = "kafka_default", "blockchain_master"
    client = _BlipClient()

    def close(self):
        return None
