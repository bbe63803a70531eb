"""
### Master token check

Daily, makes one cheap authenticated request (the first partner request) with the master
token. When the gateway refuses the token the run fails and the failure alert fires: rotate it
with `blockchain-provider token rotate --conn-id blockchain_master`, outside Airflow tasks.
"""

from __future__ import annotations

from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowFailException
from blockchain_common import REQUEST_POOL, START_DATE, TAGS, TOKEN_CONN_ID, default_args, gateway

from blockchain_provider.exceptions import BlockchainGatewayError


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
    @task(pool=REQUEST_POOL)
    def check_master_token() -> str:
        """One authenticated request; a refusal fails at once (no retry can fix a refused token)."""
        with gateway() as hook:
            try:
                hook.list_partner_requests(0, 1)
            except BlockchainGatewayError as exc:
                raise AirflowFailException(
                    f"The gateway refused the token of connection {TOKEN_CONN_ID}: {exc.gateway_text}. "
                    f"Rotate it: blockchain-provider token rotate --conn-id {TOKEN_CONN_ID}"
                ) from None
        return "accepted"

    check_master_token()


blockchain_token_check()
