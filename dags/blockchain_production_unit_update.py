"""
### Production unit update

Triggered by the MES through the Airflow REST API when a unit's `Status` or `ProcessName`
changes (it replaces the call the original MES made inside its PATCH view):

```bash
curl -X POST "$AIRFLOW_URL/api/v2/dags/blockchain_production_unit_update/dagRuns" \
  -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
  -d '{"logical_date": null, "conf": {"production_unit_id": 3, "status": "RUNNING", "process_name": "Stamping"}}'
```

On the unit's first update, `create_unit_record` ensures the record type `ProductionUnit`
(dynamic `Status` and `ProcessName`) and creates its dynamic record `PU_<code>` and the unit's own
reporter agent (created with a fresh strong password; its public key and token are stored in the
MES database, encrypted with Airflow's Fernet key), signed by the master, in the master token's
pool; `update_unit_record` then sets the two properties signed with that reporter's token.
Every later run goes to `drain_unit_changes`, which applies the noted changes of every unit at
once, from the triggerer: units side by side, each signed by its own reporter (without echo one
request in flight is the rule per token), never behind the master's requests. No task needs the
Airflow REST API.

A unit's changes apply in the order the MES made them. The MES notes each change (table
`unit_updates`, in the transaction that saves it) under the `dag_run_id` it then triggers with.
A first task, `claim_unit`, reads the run's change. A unit without its reporter is locked for the
run in the MES database, outside the gateway pools (a unit busy with another run is waited for in
the triggerer), and created. For a unit with its reporter, `drain_unit_changes` defers at once:
in the triggerer it takes the lock of every unit with pending changes that no other run holds,
sends each unit's changes in order, notes each one applied as soon as the ledger has it, and
lets go; the task resumes once, when the run's own change is settled. A run whose change an
earlier run already applied succeeds at once, naming that run.
A run triggered by hand (no note under its id) notes its own change when it starts: among such
runs the order is the order they start in. A run that fails for good gives its change up, so the
unit's later runs do not try it again (clearing it later does not apply it: make the change
again). See `include/mes/unit_update_runs.py`, `include/mes/unit_drain.py` and
`include/mes/unit_updates.py`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag
from blockchain_common import (
    GATEWAY_TASK_TIMEOUT,
    KAFKA_CONN_ID,
    MES_CONN_ID,
    REPORTER_POOL,
    START_DATE,
    TAGS,
    TOKEN_CONN_ID,
    default_args,
    gateway_args,
    mes_repository,
    record_type_memory,
)

from blockchain_provider.operators import UpdateDynamicRecordOperator
from include.day_report_keys import (
    PRODUCTION_UNIT_RECORD_PROPERTIES,
    PRODUCTION_UNIT_RECORD_TYPE,
    PRODUCTION_UNIT_RECORD_TYPE_DESCRIPTION,
)
from include.mes.models import PROCESS_NAME_MAX_LENGTH, STATUS_MAX_LENGTH
from include.mes.unit_update_runs import (
    UNIT_ID_MAX,
    ClaimUnitOperator,
    DrainUnitChangesOperator,
    UnitChangeQueue,
)
from include.mes.visible_text import PROCESS_NAME_PATTERN, STATUS_PATTERN

#: Runs at once: different units' changes side by side; one unit's take turns on its lock.
MAX_ACTIVE_RUNS = 16
#: A drain goes before the claims of later runs: it applies their changes too.
DRAIN_PRIORITY = 10

#: The task that creates a unit's record and reporter (signed by the master, in the master's pool),
#: the one that then applies its first changes (signed by the unit's new reporter), and the one
#: that drains the changes of every unit with a reporter, from the triggerer.
CREATE_TASK, UPDATE_TASK, DRAIN_TASK = "create_unit_record", "update_unit_record", "drain_unit_changes"


@dag(
    dag_id="blockchain_production_unit_update",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=MAX_ACTIVE_RUNS,
    default_args=default_args(),
    tags=[*TAGS, "production-unit"],
    doc_md=__doc__,
    params={
        "production_unit_id": Param(
            type="integer",
            minimum=1,
            maximum=UNIT_ID_MAX,
            title="Production unit id",
            description="The unit's id in the MES.",
        ),
        "status": Param(
            type="string",
            minLength=1,
            maxLength=STATUS_MAX_LENGTH,
            # the MES's own rule (include/mes/visible_text.py)
            pattern=STATUS_PATTERN,
            title="Status",
            description=(
                "The unit's new status: at least one visible character; no control, format (zero "
                "width, bidi override), line or paragraph separator, private-use or unassigned one."
            ),
        ),
        "process_name": Param(
            type="string",
            maxLength=PROCESS_NAME_MAX_LENGTH,
            pattern=PROCESS_NAME_PATTERN,
            title="Process name",
            description=(
                "The process the unit now runs: no control, format, line or paragraph separator, "
                "private-use or unassigned character."
            ),
        ),
    },
)
def blockchain_production_unit_update() -> None:
    claim = ClaimUnitOperator(
        task_id="claim_unit",
        repository=mes_repository,
        conn_id=MES_CONN_ID,
        create_task_id=CREATE_TASK,
        drain_task_id=DRAIN_TASK,
        doc_md=(
            "Note the run's change. A unit with its reporter goes on to the drain. One without takes its "
            "lock for the run (a unit busy with another run is waited for in the triggerer, outside the "
            "gateway pools) and goes on to its creation."
        ),
        # no gateway pool: the wait for the lock must never keep a slot from the run that holds it
        execution_timeout=GATEWAY_TASK_TIMEOUT,
    )
    unit_record = {
        "record_type": PRODUCTION_UNIT_RECORD_TYPE,
        "record_type_description": PRODUCTION_UNIT_RECORD_TYPE_DESCRIPTION,
        "record_type_properties": PRODUCTION_UNIT_RECORD_PROPERTIES,
        "record_types": record_type_memory,
        # the unit's noted changes, drained in order under its lock (include/mes/unit_update_runs.py)
        "update_queue": UnitChangeQueue(mes_repository),
    }
    create = UpdateDynamicRecordOperator(
        task_id=CREATE_TASK,
        doc_md=(
            "Under the unit's lock, on its first update only: ensure the record type, create the unit's "
            "record and reporter (signed by the master, in the master token's pool)."
        ),
        part="create",
        **unit_record,
        # the creation's answer holds the reporter's token: it is awaited in the worker
        **gateway_args(),
    )
    update = UpdateDynamicRecordOperator(
        task_id=UPDATE_TASK,
        doc_md=(
            "Under the unit's lock: apply the unit's noted changes up to this run's own, in order, signed "
            "by the unit's reporter (in the reporters' pool: units side by side, not behind the master's "
            "requests)."
        ),
        part="update",
        **unit_record,
        # an answer that takes longer than a second is awaited in the triggerer, which reads the
        # reporter's token from the MES
        **gateway_args(pool=REPORTER_POOL),
    )
    drain = DrainUnitChangesOperator(
        task_id=DRAIN_TASK,
        doc_md=(
            "Apply the run's change, with the noted changes of every unit no other run holds, side by side "
            "from the triggerer (each unit's in order, signed by its reporter); resumes once, when the "
            "run's change is settled."
        ),
        repository=mes_repository,
        conn_id=MES_CONN_ID,
        kafka_config_id=KAFKA_CONN_ID,
        token_conn_id=TOKEN_CONN_ID,
        # no gateway pool: each unit's lock keeps its reporter to one request in flight, and a
        # drain waiting for a unit must hold no slot that the unit's creation needs
        execution_timeout=GATEWAY_TASK_TIMEOUT,
        priority_weight=DRAIN_PRIORITY,
        weight_rule="absolute",
    )
    claim >> [create, drain]
    create >> update


blockchain_production_unit_update()
