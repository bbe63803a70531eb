"""What a ``blockchain_token`` connection holds, read and checked once; its secrets stay hidden."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from blockchain_provider import protocol
from blockchain_provider.connection_form import DEFAULT_LATE_ANSWER_GRACE, DEFAULT_TIMEOUT
from blockchain_provider.exceptions import BlockchainConfigError
from blockchain_provider.secret_text import SecretText


def _mask(value: str) -> None:
    """Register *value* with Airflow's secrets masker (task logs, supervisor logs)."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - Airflow < 3
        return
    mask_secret(value)


@dataclass(frozen=True)
class GatewaySettings:
    """What a ``blockchain_token`` connection holds. ``repr`` shows no secret."""

    token: SecretText | None
    public_key: str | None
    agent_password: SecretText | None
    instance_type: str | None
    agent_name: str | None
    record_id: str | None
    echo_request_id: bool
    timeout: float
    topics: protocol.TopicMap = field(default_factory=protocol.TopicMap)
    late_answer_grace: float = DEFAULT_LATE_ANSWER_GRACE
    #: whether the gateway answers the optional reads (``BLK_Rty_Get``/``BLK_Rec_Get``): the
    #: connection's ``reads`` field, off by default (:data:`~blockchain_provider.protocol.READS_DEFAULT`)
    reads: bool = protocol.READS_DEFAULT


def gateway_settings(conn: Any, conn_id: str, timeout: float | None = None) -> GatewaySettings:
    """Read and check the fields of the ``blockchain_token`` connection *conn*; its secrets are
    registered for masking.

    :param conn: the connection (``login``, ``password``, ``extra_dejson``).
    :param conn_id: its id, to name it in errors.
    :param timeout: seconds to wait for an answer, over the connection's ``timeout`` field;
        defaults to ``None`` (the field, else :data:`DEFAULT_TIMEOUT`).
    :raises BlockchainConfigError: a field is invalid; the message names the connection.
    """
    extra = conn.extra_dejson
    token = conn.password or None
    agent_password = extra.get("agent_password") or None
    for secret in (token, agent_password):
        if secret:
            _mask(secret)
    public_key = conn.login or None
    if public_key:
        protocol.validate_public_key(public_key, f"public key of connection {conn_id}")
    return GatewaySettings(
        token=SecretText(token) if token else None,
        public_key=public_key,
        agent_password=SecretText(agent_password) if agent_password else None,
        instance_type=extra.get("instance_type"),
        agent_name=extra.get("agent_name"),
        record_id=extra.get("record_id"),
        echo_request_id=_flag(extra.get("echo_request_id", False)),
        timeout=_timeout(
            timeout if timeout is not None else extra.get("timeout") or DEFAULT_TIMEOUT, conn_id
        ),
        topics=_topics(extra.get("topics"), conn_id),
        late_answer_grace=_late_answer_grace(extra.get("late_answer_grace"), conn_id),
        reads=_flag(extra.get("reads", protocol.READS_DEFAULT)),
    )


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _timeout(value: Any, conn_id: str) -> float:
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        raise BlockchainConfigError(f"Connection {conn_id}: timeout must be a number") from None
    if timeout <= 0:
        raise BlockchainConfigError(f"Connection {conn_id}: timeout must be positive")
    return timeout


def _topics(value: Any, conn_id: str) -> protocol.TopicMap:
    try:
        return protocol.TopicMap.parse(value)
    except BlockchainConfigError as exc:
        raise BlockchainConfigError(f"Connection {conn_id}: {exc}") from None


def _late_answer_grace(value: Any, conn_id: str) -> float:
    try:
        grace = DEFAULT_LATE_ANSWER_GRACE if value in (None, "") else float(value)
    except (TypeError, ValueError):
        raise BlockchainConfigError(
            f"Connection {conn_id}: late_answer_grace must be a number of seconds"
        ) from None
    if not 0 <= grace <= 3600:
        raise BlockchainConfigError(f"Connection {conn_id}: late_answer_grace must be from 0 to 3600 seconds")
    return grace
