"""A test-only Airflow DAG: it logs the token on purpose, to show the stored log masks it, and
waits for a gateway answer in the triggerer (a deferrable operator).

It logs rather than prints: on Airflow 3.3.2 with the LocalExecutor, a task's ``print`` output is
also echoed, unmasked, to the scheduler's console. The project's code never prints a secret."""

from __future__ import annotations

import logging

from airflow.sdk import dag, task

from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from blockchain_provider.operators import ListPartnerRequestsOperator
from blockchain_provider.pools import pool_name

log = logging.getLogger(__name__)


@dag(dag_id="blockchain_secret_probe", schedule=None, tags=["test"])
def blockchain_secret_probe() -> None:
    @task
    def print_secrets() -> None:
        settings = KafkaBlockchainHook().settings
        log.info("token: %s", settings.token.reveal())
        log.info("agent password: %s", settings.agent_password.reveal())

    deferred = ListPartnerRequestsOperator(
        task_id="list_partner_requests_deferred", deferrable=True, pool=pool_name()
    )
    print_secrets() >> deferred


blockchain_secret_probe()
