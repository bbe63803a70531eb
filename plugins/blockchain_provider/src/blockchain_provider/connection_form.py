"""The ``blockchain_token`` connection form, declared once: ``get_provider_info`` gives it to
Airflow's UI, and :class:`~blockchain_provider.hooks.kafka_blockchain.KafkaBlockchainHook` answers
``get_ui_field_behaviour`` from it. Every field the hook reads from the connection
(:func:`~blockchain_provider.hooks.settings.gateway_settings`) is here, with the same default.
Importing it loads no Airflow and no Kafka client (the protocol module is the standard library's
only): the providers manager reads it at discovery.
"""

from __future__ import annotations

import copy
from typing import Any

from blockchain_provider import protocol

#: Seconds a request waits for its answer unless the connection's ``timeout`` says otherwise.
DEFAULT_TIMEOUT = 30.0
#: Without request_id echo, how long after a timeout the token stays blocked while the late answer
#: may still come (the ``late_answer_grace`` field of the token connection overrides it).
DEFAULT_LATE_ANSWER_GRACE = 30.0

#: The extra fields of the form (``extra__blockchain_token__<name>`` in the UI, ``<name>`` in the
#: connection's extra), as ``get_provider_info`` declares ``conn-fields``.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "agent_password": {
        "label": "Agent password",
        "description": "The agent's password at the gateway; needed to rotate the token.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "instance_type": {
        "label": "Instance type",
        "description": "The agent's role: the MES's own agent is the Master.",
        "schema": {
            "type": ["string", "null"],
            "default": "Master",
            "enum": ["Master", "Reporter", "Partner", "Other"],
        },
    },
    "agent_name": {"label": "Agent name", "schema": {"type": ["string", "null"]}},
    "record_id": {
        "label": "Record id",
        "description": "The ledger record this agent reports on, when it has one.",
        "schema": {"type": ["string", "null"]},
    },
    "echo_request_id": {
        "label": "Gateway echoes request_id",
        "description": (
            "Set when the gateway echoes the request_id header: requests may then be "
            "pipelined. Off (the original gateway), requests of one token are serialised."
        ),
        "schema": {"type": ["boolean", "null"], "default": False},
    },
    "reads": {
        "label": "Gateway answers reads",
        "description": (
            "Set when the gateway answers BLK_Rty_Get and BLK_Rec_Get. Off (the original "
            "gateway has no read topic), no task waits on a read."
        ),
        "schema": {"type": ["boolean", "null"], "default": protocol.READS_DEFAULT},
    },
    "timeout": {
        "label": "Response timeout (s)",
        "schema": {"type": ["number", "null"], "default": DEFAULT_TIMEOUT},
    },
    "late_answer_grace": {
        "label": "Late-answer grace (s)",
        "description": (
            "Without request_id echo: how long after a timeout the token stays blocked while the "
            "late answer may still come, so that the next request cannot take it (0 to 3600)."
        ),
        "schema": {
            "type": ["number", "null"],
            "default": DEFAULT_LATE_ANSWER_GRACE,
            "minimum": 0,
            "maximum": 3600,
        },
    },
    "topics": {
        "label": "Topic overrides (JSON)",
        "description": 'Default name to actual name, e.g. {"BLK_Act_Lst": "BLK_ACT_Lst"}.',
        "schema": {"type": ["string", "null"]},
    },
}

#: How the form shows Airflow's own fields, as ``get_provider_info`` declares ``ui-field-behaviour``
#: and the hook's ``get_ui_field_behaviour`` returns it.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["host", "schema", "port", "extra"],
    "relabeling": {"login": "Public key", "password": "Token"},
    "placeholders": {
        "login": "66 hex characters, starting 02 or 03",
        "topics": '{"BLK_Res": "BLK_Res"}',
    },
}


def ui_field_behaviour() -> dict[str, Any]:
    """:data:`UI_FIELD_BEHAVIOUR` in the shape of a hook's ``get_ui_field_behaviour`` (snake-case
    keys), a copy."""
    return {key.replace("-", "_"): copy.deepcopy(value) for key, value in UI_FIELD_BEHAVIOUR.items()}
