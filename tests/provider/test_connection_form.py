"""The ``blockchain_token`` connection form is declared once, and holds every field the hook reads."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from blockchain_provider import connection_form, get_provider_info
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from blockchain_provider.hooks.settings import gateway_settings


class RecordingExtra(dict):
    """A connection's extra that notes every field read from it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)


def connection(**extra: Any) -> SimpleNamespace:
    return SimpleNamespace(login=None, password=None, extra_dejson=RecordingExtra(extra))


def test_the_form_holds_every_field_the_hook_reads_and_no_other() -> None:
    conn = connection()
    gateway_settings(conn, "blockchain_t")
    assert conn.extra_dejson.read == set(connection_form.CONN_FIELDS)


def test_the_forms_defaults_are_the_hooks() -> None:
    settings = gateway_settings(connection(), "blockchain_t")
    fields = connection_form.CONN_FIELDS
    assert settings.timeout == fields["timeout"]["schema"]["default"]
    assert settings.late_answer_grace == fields["late_answer_grace"]["schema"]["default"]
    assert settings.reads is fields["reads"]["schema"]["default"]
    assert settings.echo_request_id is fields["echo_request_id"]["schema"]["default"]
    # the form's bounds are the hook's: the largest grace is taken, one more is refused
    grace = fields["late_answer_grace"]["schema"]
    assert (
        gateway_settings(connection(late_answer_grace=grace["maximum"]), "c").late_answer_grace
        == grace["maximum"]
    )
    try:
        gateway_settings(connection(late_answer_grace=grace["maximum"] + 1), "c")
    except Exception as exc:
        assert "late_answer_grace" in str(exc)
    else:
        raise AssertionError("a grace over the form's maximum was taken")


def test_the_hook_and_the_provider_info_give_the_same_form() -> None:
    (declared,) = get_provider_info()["connection-types"]
    assert declared["conn-fields"] is connection_form.CONN_FIELDS
    behaviour = KafkaBlockchainHook.get_ui_field_behaviour()
    assert behaviour == {
        key.replace("-", "_"): value for key, value in declared["ui-field-behaviour"].items()
    }
    behaviour["placeholders"]["login"] = "changed"  # a copy: the declaration stays as it is
    assert connection_form.UI_FIELD_BEHAVIOUR["placeholders"]["login"] != "changed"
