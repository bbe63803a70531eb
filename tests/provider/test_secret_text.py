"""A secret (a token, a password) is never shown, pickled or formatted, but copies as itself."""

from __future__ import annotations

import copy
import pickle

import pytest

from blockchain_provider.hooks.settings import gateway_settings
from blockchain_provider.secret_text import SecretText


def test_a_secret_is_never_shown_nor_pickled():
    secret = SecretText("tok-123456789")
    assert "tok-123" not in f"{secret!r} {secret} {secret:>20} {[secret]}"
    assert secret.reveal() == "tok-123456789" and secret == SecretText("tok-123456789")
    with pytest.raises(TypeError, match="not serialisable"):
        pickle.dumps(secret)


def test_a_copy_of_what_holds_a_secret_keeps_it():
    """Airflow copies operators (and what they hold, a hook's settings once read) deeply."""
    from airflow.models.connection import Connection

    connection = Connection(
        conn_id="blockchain_master", conn_type="blockchain_token", login="02" + "ab" * 32, password="tok-xyz"
    )
    settings = gateway_settings(connection, "blockchain_master")
    copied = copy.deepcopy(settings)
    assert copied.token is not None and copied.token.reveal() == "tok-xyz"
    assert copy.copy(SecretText("a")).reveal() == "a"
