"""Airflow provider for the MES blockchain gateway: BLK_* request/reply over Kafka."""

from __future__ import annotations

from typing import Any

__version__ = "0.4.0"

__all__ = ["__version__", "get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's providers manager (entry point ``apache_airflow_provider``)."""
    from blockchain_provider import configured, connection_form

    return {
        "package-name": "airflow-provider-blockchain",
        "name": "Blockchain gateway (Kafka)",
        "description": "Request/reply with the MES blockchain gateway over Kafka BLK_* topics.",
        "versions": [__version__],
        "hooks": [
            {
                "integration-name": "Blockchain gateway",
                "python-modules": ["blockchain_provider.hooks.kafka_blockchain"],
            }
        ],
        "operators": [
            {
                "integration-name": "Blockchain gateway",
                "python-modules": [
                    "blockchain_provider.operators.requests",
                    "blockchain_provider.operators.partner",
                    "blockchain_provider.operators.order",
                    "blockchain_provider.operators.record",
                    "blockchain_provider.operators.reporter",
                    "blockchain_provider.operators.token",
                ],
            }
        ],
        # also the "airflow.plugins" entry point (pyproject.toml), as the Kafka provider does: the
        # providers manager loads the plugins it declares only when [core]
        # lazy_discover_providers is off, the entry point in every Airflow process
        "plugins": [
            {"name": "blockchain_requests", "plugin-class": "blockchain_provider.ui.BlockchainRequestsPlugin"}
        ],
        "triggers": [
            {
                "integration-name": "Blockchain gateway",
                "python-modules": [
                    "blockchain_provider.triggers.await_response",
                    "blockchain_provider.triggers.serial_requests",
                ],
            }
        ],
        "config": {
            "blockchain": {
                "description": (
                    "What the provider reads from the deployment that installs it, the DAGs its "
                    '"Blockchain requests" page triggers, and where alerts go.\n'
                ),
                "options": {key: declared.declared() for key, declared in configured.OPTIONS.items()},
            }
        },
        "notifications": [
            "blockchain_provider.notifications.LogNotifier",
            "blockchain_provider.notifications.slack.EscapingSlackNotifier",
            "blockchain_provider.notifications.smtp.EscapingSmtpNotifier",
        ],
        "connection-types": [
            {
                "hook-class-name": "blockchain_provider.hooks.kafka_blockchain.KafkaBlockchainHook",
                "hook-name": "Blockchain token",
                "connection-type": "blockchain_token",
                "conn-fields": connection_form.CONN_FIELDS,
                "ui-field-behaviour": connection_form.UI_FIELD_BEHAVIOUR,
            }
        ],
    }
