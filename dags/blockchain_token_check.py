"""
### Master token check

Daily, makes one cheap authenticated request (the first partner request) with the master
token. When the gateway refuses the token the run fails and the failure alert fires: rotate it
with `blockchain-provider token rotate --conn-id blockchain_master`, outside Airflow tasks.
"""

from __future__ import annotations

from airflow.sdk import dag
from blockchain_common import START_DATE, TAGS, default_args, gateway_args

from blockchain_provider.operators import CheckTokenOperator


@dag(
    dag_id="blockchain_token_check",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    default_args=default_args(),
    tags=[*TAGS, "token"],
    doc_md=__doc__,
)
def blockchain_token_check() -> None:
    CheckTokenOperator(
        task_id="check_master_token",
        doc_md="One authenticated request; a refusal fails at once (no retry can fix a refused token).",
        **gateway_args(),
    )


blockchain_token_check()
