"""Encrypting the secrets the MES stores (reporter tokens and passwords) with Airflow's Fernet key.

The key is the one that encrypts Airflow's Connections (``[core] fernet_key``, or
``AIRFLOW__CORE__FERNET_KEY``), read through the Task SDK, so it works in a task run by the
scheduler (which blocks the ORM) as well as under ``airflow dags test`` and in commands. A
missing key is an error: the MES never stores these secrets in clear.
"""

from __future__ import annotations

from typing import Protocol

from blockchain_provider.secret_text import SecretText

__all__ = ["FernetLike", "MesSecretError", "SecretText", "airflow_fernet", "decrypt", "encrypt"]


class MesSecretError(RuntimeError):
    """A secret cannot be encrypted or decrypted; the message never holds the secret."""


class FernetLike(Protocol):
    def encrypt(self, msg: bytes) -> bytes: ...
    def decrypt(self, msg: bytes | str, ttl: int | None = None) -> bytes: ...


def airflow_fernet() -> FernetLike:
    """Airflow's Fernet (the Task SDK's, else the core's); raise if Airflow has no Fernet key."""
    try:
        from airflow.sdk.crypto import get_fernet
    except ImportError:  # pragma: no cover - an Airflow without the Task SDK module
        from airflow.models.crypto import get_fernet
    try:
        fernet = get_fernet()
    except Exception as exc:  # an invalid key: Airflow's message names the problem, not the key
        raise MesSecretError(f"Airflow's Fernet key ([core] fernet_key) is unusable: {exc}") from None
    if not getattr(fernet, "is_encrypted", False):
        raise MesSecretError(
            "Airflow has no Fernet key ([core] fernet_key, AIRFLOW__CORE__FERNET_KEY): the MES does not store "
            "reporter tokens and passwords unencrypted"
        )
    return fernet


def encrypt(value: str, fernet: FernetLike | None = None) -> str:
    """*value* encrypted with *fernet* (default Airflow's), as text."""
    if not isinstance(value, str) or not value:
        raise MesSecretError("Refusing to store an empty secret")
    return (fernet or airflow_fernet()).encrypt(value.encode("utf-8")).decode("ascii")


def decrypt(value: str, fernet: FernetLike | None = None) -> SecretText:
    """The secret stored as *value*, decrypted with *fernet* (default Airflow's)."""
    from cryptography.fernet import InvalidToken

    try:
        return SecretText((fernet or airflow_fernet()).decrypt(value.encode("ascii")).decode("utf-8"))
    except (InvalidToken, ValueError, UnicodeError):
        raise MesSecretError(
            "A stored reporter secret cannot be decrypted with Airflow's Fernet key (was the key replaced "
            "without keeping the old one in fernet_key's list?)"
        ) from None
