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

import re
from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param, dag
from airflow.sdk.exceptions import AirflowFailException
from blockchain_common import START_DATE, TAGS, default_args, gateway_args, mes_repository

from blockchain_provider.operators import DynamicRecordUpdate, UpdateDynamicRecordOperator
from include.day_report_keys import (
    PRODUCTION_UNIT_RECORD_PROPERTIES,
    PRODUCTION_UNIT_RECORD_TYPE,
    PRODUCTION_UNIT_RECORD_TYPE_DESCRIPTION,
    production_unit_dynamic_properties,
    production_unit_record_description,
    production_unit_record_id,
    production_unit_record_properties,
)

#: The MES's unit ids are 32-bit database integers.
UNIT_ID_MAX = 2**31 - 1
# No control character (C0, DEL, C1; a trailing newline included) and no lone surrogate anywhere.
# A lookahead over the whole text, because "$" also matches before a final newline.
_NO_CONTROL = r"^(?![\s\S]*[\x00-\x1f\x7f-\x9f\ud800-\udfff])"
#: The Params patterns: a status is not blank; a process name may be empty.
STATUS_PATTERN = _NO_CONTROL + r"[\s\S]*\S"
PROCESS_NAME_PATTERN = _NO_CONTROL


def unit_update_args(params: dict[str, Any]) -> tuple[int, str, str]:
    """The unit id, status and process name of a run's params, as the flow takes them.

    JSON Schema counts 3.0 as an integer: it is unit 3. A value the schema should have refused
    fails the task at once (:class:`AirflowFailException`, no retries): retrying cannot fix it,
    and a retrying run would hold back the unit's later updates.
    """
    unit_id = params.get("production_unit_id")
    if isinstance(unit_id, float) and unit_id.is_integer():
        unit_id = int(unit_id)
    status, process_name = params.get("status"), params.get("process_name", "")
    if isinstance(unit_id, bool) or not isinstance(unit_id, int) or not 1 <= unit_id <= UNIT_ID_MAX:
        raise AirflowFailException(
            f"Invalid production_unit_id {unit_id!r:.60}: an integer from 1 to {UNIT_ID_MAX}"
        )
    if not isinstance(status, str) or len(status) > 64 or not re.search(STATUS_PATTERN, status):
        raise AirflowFailException(
            f"Invalid status {status!r:.80}: 1-64 characters, not blank, no control characters"
        )
    if (
        not isinstance(process_name, str)
        or len(process_name) > 200
        or not re.search(PROCESS_NAME_PATTERN, process_name)
    ):
        raise AirflowFailException(
            f"Invalid process_name {process_name!r:.80}: at most 200 characters, no control characters"
        )
    return unit_id, status, process_name


def unit_update(context: Mapping[str, Any]) -> DynamicRecordUpdate:
    """The update of the run's unit: its record, its new values and its reporter in the MES."""
    from include.mes.reporter_store import MesReporterStore
    from include.mes.repository import ProductionUnitNotFoundError

    unit_id, status, process_name = unit_update_args(context["params"])

    repository = mes_repository()
    try:
        unit = repository.require_production_unit(unit_id)
    except ProductionUnitNotFoundError as exc:
        # a retry would fail alike, and would hold back the unit's later updates
        raise AirflowFailException(str(exc)) from None
    return DynamicRecordUpdate(
        record_id=production_unit_record_id(unit),
        description=production_unit_record_description(unit),
        properties=production_unit_record_properties(unit),
        updates=production_unit_dynamic_properties(status, process_name),
        store=MesReporterStore(repository, unit.code),
        summary={"unit": unit.code},
    )


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
            type="integer",
            minimum=1,
            maximum=UNIT_ID_MAX,
            title="Production unit id",
            description="The unit's id in the MES.",
        ),
        "status": Param(
            type="string",
            minLength=1,
            maxLength=64,
            pattern=STATUS_PATTERN,
            title="Status",
            description="The unit's new status: not blank, no control characters.",
        ),
        "process_name": Param(
            type="string",
            maxLength=200,
            pattern=PROCESS_NAME_PATTERN,
            title="Process name",
            description="The process the unit now runs: no control characters.",
        ),
    },
)
def blockchain_production_unit_update() -> None:
    UpdateDynamicRecordOperator(
        task_id="update_unit_record",
        doc_md="Ensure record type, record and reporter, then update Status and ProcessName as the reporter.",
        record_type=PRODUCTION_UNIT_RECORD_TYPE,
        record_type_description=PRODUCTION_UNIT_RECORD_TYPE_DESCRIPTION,
        record_type_properties=PRODUCTION_UNIT_RECORD_PROPERTIES,
        update=unit_update,
        # signed with the unit's reporter token, kept by the MES: the answer is awaited in the worker
        **gateway_args(deferrable=False),
    )


blockchain_production_unit_update()
