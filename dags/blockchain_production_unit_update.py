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
`ProcessName`), the unit's record `PU_<code>`, and the reporting agent's authorisation; then it
updates the two properties. Runs are queued one at a time, so updates apply in order.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import Param, dag, task
from blockchain_common import KAFKA_CONN_ID, REQUEST_POOL, START_DATE, TAGS, default_args, flows, gateway, mes

from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook

#: The reporting agent's token connection, when it is not the master's.
REPORTER_CONN_ID = os.environ.get("BLOCKCHAIN_REPORTER_CONN_ID", "")


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
        """Ensure record type, record and reporter, then update Status and ProcessName."""
        reporter = KafkaBlockchainHook(KAFKA_CONN_ID, REPORTER_CONN_ID) if REPORTER_CONN_ID else None
        with gateway() as hook:
            try:
                return flows.update_production_unit(
                    hook,
                    mes(),
                    params["production_unit_id"],
                    params["status"],
                    params["process_name"],
                    reporter_hook=reporter,
                )
            finally:
                if reporter is not None:
                    reporter.close()

    update_unit_record()


blockchain_production_unit_update()
