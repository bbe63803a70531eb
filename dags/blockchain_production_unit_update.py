"""
### Production unit update

Triggered by the MES through the Airflow REST API when a unit's `Status` or `ProcessName`
changes (it replaces the call the original MES made inside its PATCH view):

```bash
curl -X POST "$AIRFLOW_URL/api/v2/dags/blockchain_production_unit_update/dagRuns" \
  -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
  -d '{"logical_date": null, "conf": {"production_unit_id": 3, "status": "RUNNING", "process_name": "Stamping"}}'
```

The run ensures, in order: the record type `ProductionUnit` (dynamic `Status` and
`ProcessName`), then, on the unit's first update, its dynamic record `PU_<code>` and the unit's
own reporter agent (created with a fresh strong password; its public key and token are stored in
the MES database, encrypted with Airflow's Fernet key); then it updates the two properties signed
with that reporter's token. Later runs reuse the stored reporter. Runs are queued one at a time,
so updates apply in order. No task needs the Airflow REST API.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, task
from blockchain_common import REQUEST_POOL, START_DATE, TAGS, default_args, flows, gateway, mes


@dag(
    dag_id="blockchain_production_unit_update",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=[*TAGS, "production-unit"],
    doc_md=__doc__,
    params={
        "production_unit_id": Param(
            type="integer", minimum=1, title="Production unit id", description="The unit's id in the MES."
        ),
        "status": Param(
            type="string", minLength=1, maxLength=64, title="Status", description="The unit's new status."
        ),
        "process_name": Param(
            type="string", maxLength=200, title="Process name", description="The process the unit now runs."
        ),
    },
)
def blockchain_production_unit_update() -> None:
    @task(pool=REQUEST_POOL)
    def update_unit_record(params: dict[str, Any]) -> dict[str, Any]:
        """Ensure record type, record and reporter, then update Status and ProcessName as the reporter."""
        with gateway() as hook:
            return flows.update_production_unit(
                hook, mes(), params["production_unit_id"], params["status"], params["process_name"]
            )

    update_unit_record()


blockchain_production_unit_update()
