"""The MES does not write into a record type another agent declared with other properties.

Against the gateway sandbox, with the tasks as the DAGs build them: the MES creates its record
types without reading the ledger first (PROTOCOL.md 3.3); where the connection switches reads
on (the sandbox answers them), a creation refused because the name is taken is followed by the
optional read (``BLK_Rty_Get``), which says whether the declaration there can be used (without
reads the refusal is taken as "it exists": tests/provider/test_operators.py). Both places that ensure a record type are covered: the day report's
``ensure_record_type`` task and the production-unit update (which ensures its type first).
"""

from __future__ import annotations

import pytest

from blockchain_provider.exceptions import BlockchainConfigError
from gateway_sandbox.server import GatewayServer
from include.day_report_keys import (
    DAY_REPORT_RECORD_PROPERTIES,
    DAY_REPORT_RECORD_TYPE,
    PRODUCTION_UNIT_RECORD_PROPERTIES,
    PRODUCTION_UNIT_RECORD_TYPE,
)
from tests.operator_runs import dag_task, run_operator, run_unit_update, task_context
from tests.provider.environments import mes_agent, mes_database

pytestmark = pytest.mark.broker


def ensure_day_report_type(params: dict) -> None:
    run_operator(dag_task("blockchain_day_report", "ensure_record_type"), task_context(params=params))


#: Where production ensures each record type: a run of its DAG, and the run's params.
ENSURED_BY = {
    DAY_REPORT_RECORD_TYPE: (ensure_day_report_type, {}, DAY_REPORT_RECORD_PROPERTIES),
    PRODUCTION_UNIT_RECORD_TYPE: (
        run_unit_update,
        {"production_unit_id": 1, "status": "RUNNING", "process_name": "Stamping"},
        PRODUCTION_UNIT_RECORD_PROPERTIES,
    ),
}


@pytest.fixture
def sandbox(kafka_bootstrap, topic_prefix, tmp_path, monkeypatch):
    agent = mes_agent(monkeypatch, kafka_bootstrap, topic_prefix, tmp_path, timeout=20, reads=True)
    erp, _ = agent.ledger.create_agent("ERP", "erp-password-0123")
    with mes_database(monkeypatch, tmp_path) as repository:
        repository.add_production_unit("PT10", "Press line 10", "IDLE")
        with GatewayServer(kafka_bootstrap, agent.ledger_path, topic_prefix=topic_prefix):
            yield agent.ledger, erp, repository
    agent.ledger.close()


@pytest.mark.parametrize("name", sorted(ENSURED_BY))
def test_a_record_type_declared_with_other_properties_is_refused_and_named(sandbox, name):
    ledger, erp, repository = sandbox
    ensure, params, _ours = ENSURED_BY[name]
    theirs = [{"name": "Status", "data_type": "NUMBER", "dynamic": False}]
    ledger.create_record_type(erp, name, theirs, "ERP's own")
    with pytest.raises(BlockchainConfigError) as info:
        ensure(params)
    text = str(info.value)
    assert name in text and "other properties" in text
    assert [(p["name"], p["data_type"]) for p in ledger.record_type(name)["properties"]] == [
        ("Status", "NUMBER")
    ]
    # nothing of the MES went into it: no record, no reporter
    assert ledger.count_records(name) == 0
    assert repository.reporters() == []


@pytest.mark.parametrize("name", sorted(ENSURED_BY))
def test_the_same_properties_are_used_whoever_declared_them(sandbox, name):
    ledger, erp, _repository = sandbox
    ensure, params, ours = ENSURED_BY[name]
    ledger.create_record_type(erp, name, list(reversed(ours)), "ERP's own")
    ensure(params)
    assert ledger.record_type(name)["description"] == "ERP's own"
    if name == PRODUCTION_UNIT_RECORD_TYPE:  # and the unit's record is written into it
        assert ledger.record("PU_PT10")["properties"]["Status"] == "RUNNING"
