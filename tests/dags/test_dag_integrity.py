"""Every DAG parses, carries what operators rely on, and touches nothing at parse time."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from airflow.sdk.exceptions import ParamValidationError

from tests.dags.conftest import PRODUCT_DAG_IDS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dagbag(monkeypatch_module):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import BaseHook

    import include.mes.db
    from blockchain_provider.hooks import kafka_clients

    def refuse(*args, **kwargs):
        raise AssertionError("a DAG file reached a connection, broker or database at parse time")

    for target, name in (
        (kafka_clients, "Producer"),
        (kafka_clients, "Consumer"),
        (include.mes.db, "mes_engine"),
        (BaseHook, "get_connection"),
    ):
        monkeypatch_module.setattr(target, name, refuse)
    return DagBag(str(ROOT / "dags"))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_every_expected_dag_is_there(dagbag):
    assert set(dagbag.dag_ids) == PRODUCT_DAG_IDS


@pytest.mark.parametrize("dag_id", sorted(PRODUCT_DAG_IDS))
def test_tags_docs_retries_and_alerts(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert "blockchain" in dag.tags
    assert dag.doc_md and len(dag.doc_md) > 100
    for task in dag.tasks:
        # the answer tasks too: a retry reads the request's status before it sends again
        assert task.retries >= 2, task.task_id
        assert task.retry_exponential_backoff
        assert task.on_failure_callback, task.task_id
        if "Mapped" not in type(task).__name__:  # mapped tasks keep no docstring
            assert task.doc_md or task.doc, task.task_id


@pytest.mark.parametrize("dag_id", sorted(PRODUCT_DAG_IDS))
def test_gateway_tasks_run_in_the_token_pool(dagbag, dag_id):
    from blockchain_provider.pools import pool_name, reporter_pool_name

    dag = dagbag.dags[dag_id]
    # claim_unit talks to the MES only: it waits for the unit's lock outside the pool; the drain
    # runs in no gateway pool (each unit's lock keeps its reporter to one request in flight)
    quiet = ("report_day", "reports_of_the_day", "any_new_open", "claim_unit", "drain_unit_changes")
    talking = [t for t in dag.tasks if t.task_id not in quiet]
    talking = [t for t in talking if not t.task_id.startswith("announce_")]
    # a unit's updates are signed by the unit's own reporter: they run in the reporters' pool
    signed_by_reporters = [t for t in talking if t.task_id == "update_unit_record"]
    talking = [t for t in talking if t not in signed_by_reporters]
    assert talking
    assert {t.pool for t in talking} == {pool_name("blockchain_master")}
    assert {t.pool for t in signed_by_reporters} <= {reporter_pool_name("blockchain_master")}


@pytest.mark.parametrize("dag_id", sorted(PRODUCT_DAG_IDS))
def test_every_task_that_waits_on_the_gateway_defers(dagbag, dag_id):
    """Every provider operator of the DAGs runs deferrable: a waiting request holds no worker slot."""
    from blockchain_provider.operators.base import BaseBlockchainOperator

    dag = dagbag.dags[dag_id]
    operators = {
        t.task_id: t.partial_kwargs.get("deferrable") if hasattr(t, "partial_kwargs") else t.deferrable
        for t in dag.tasks
        if issubclass(getattr(t, "operator_class", type(t)), BaseBlockchainOperator)
    }
    assert operators and set(operators.values()) == {True}, operators


@pytest.mark.parametrize("dag_id", sorted(PRODUCT_DAG_IDS))
def test_every_task_that_talks_to_the_gateway_has_a_time_limit(dagbag, dag_id):
    """No gateway (one that never ends a listing, never answers) holds a run for ever."""
    from blockchain_common import GATEWAY_TASK_TIMEOUT

    dag = dagbag.dags[dag_id]
    talking = [t for t in dag.tasks if t.pool != "default_pool"]
    limits = {
        t.task_id: t.partial_kwargs.get("execution_timeout")
        if hasattr(t, "partial_kwargs")
        else t.execution_timeout
        for t in talking
    }
    assert limits and set(limits.values()) == {GATEWAY_TASK_TIMEOUT}, limits


def test_day_report_schedule_time_zone_and_deadline(dagbag):
    dag = dagbag.dags["blockchain_day_report"]
    assert dag.timetable.expression == "30 9 * * *"
    assert str(dag.timetable.timezone) == "Europe/Lisbon"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    alerts = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
    assert alerts[0].interval.total_seconds() == 3600


def test_sync_schedules(dagbag):
    for dag_id in ("blockchain_partner_sync", "blockchain_order_sync"):
        dag = dagbag.dags[dag_id]
        assert dag.timetable.expression == "*/15 * * * *"
        assert dag.max_active_runs == 1


@pytest.mark.parametrize("dag_id", ["blockchain_partner_answer", "blockchain_order_answer"])
def test_answer_params_validate(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert type(dag.timetable).__name__ == "NullTimetable"  # manual only
    params = dag.params
    assert params.get_param("request_id").schema["pattern"] == "^[0-9a-f]{32}$"
    assert params.get_param("decision").schema["enum"] == ["accept", "reject"]
    assert params.get_param("request_id").schema.get("title")
    assert params.get_param("decision").description
    assert validated(params, {"request_id": "ab" * 16, "decision": "reject"}) == {
        "request_id": "ab" * 16,
        "decision": "reject",
    }
    for bad in (
        {"request_id": "AB" * 16},
        {"request_id": "ab" * 15},
        {"decision": "maybe"},
        {"decision": None},
    ):
        with pytest.raises(ParamValidationError):
            validated(params, {"request_id": "ab" * 16, "decision": "accept", **bad})


@pytest.mark.parametrize("dag_id", ["blockchain_partner_answer", "blockchain_order_answer"])
@pytest.mark.parametrize(
    "request_id", ["12345678901234567890123456789012", "1234e678901234567890123456789012"]
)
def test_answer_tasks_render_an_id_that_reads_as_a_number_as_the_id(dagbag, dag_id, request_id):
    """A valid id may be all decimal digits, or digits around an ``e``: rendered as a Python literal
    it would become a number (or ``inf``), and the task would refuse a valid request."""
    from tests.operator_runs import dag_task, task_context

    context = task_context(params={"request_id": request_id, "decision": "accept"})
    for task_id in dagbag.dags[dag_id].task_ids:
        task = dag_task(dag_id, task_id)  # unrendered: rendering replaces the templates
        task.render_template_fields(context)
        assert task.request_id == request_id, task_id


def test_production_unit_update_params(dagbag):
    params = dagbag.dags["blockchain_production_unit_update"].params
    good = {"production_unit_id": 3, "status": "RUNNING", "process_name": "Stamping"}
    assert validated(params, good) == good
    for bad in ({"production_unit_id": 0}, {"production_unit_id": "3"}, {"status": ""}, {"status": "x" * 65}):
        with pytest.raises(ParamValidationError):
            validated(params, {**good, **bad})


def validated(params, values):
    """Validate *values* against the DAG's Params, as a trigger from the UI or REST API does."""
    candidate = copy.deepcopy(params)
    for key, value in values.items():
        candidate[key] = value
    return candidate.validate()
