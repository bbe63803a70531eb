"""A gateway that breaks the protocol raises BlockchainProtocolError, not a configuration error."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from blockchain_provider import protocol
from blockchain_provider.exceptions import (
    BlockchainConfigError,
    BlockchainError,
    BlockchainProtocolError,
    InvalidIdentifierError,
)
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook, Outcome

PUBLIC_KEY = "02" + "ab" * 32


def answering(monkeypatch: pytest.MonkeyPatch, value: object) -> KafkaBlockchainHook:
    """A hook whose every call is answered *value* (``data``), without a broker."""
    hook = KafkaBlockchainHook()

    def call(call: protocol.Call, **_kwargs: object) -> Outcome:
        return Outcome("data", value, call.topic, protocol.new_request_id())

    # the hook's request engine, answering without a broker or a connection
    monkeypatch.setitem(vars(hook), "client", SimpleNamespace(call=call))
    return hook


def test_a_list_topic_answered_with_a_non_list(monkeypatch):
    hook = answering(monkeypatch, {"not": "a list"})
    with pytest.raises(BlockchainProtocolError, match="BLK_Part_Lst with dict, not a list") as info:
        hook.list_partner_requests()
    # what callers catch today still catches it: a BlockchainError, a ValueError
    assert isinstance(info.value, BlockchainError) and isinstance(info.value, ValueError)
    assert not isinstance(info.value, BlockchainConfigError)


@pytest.mark.parametrize(
    ("answer", "what"),
    [
        ({"public_key": PUBLIC_KEY}, "has no token"),
        ({"public_key": "not-a-key", "token": "new-token"}, "public key in the gateway's answer"),
    ],
)
def test_an_agent_answer_without_a_token_or_with_a_bad_public_key(monkeypatch, answer, what):
    hook = answering(monkeypatch, answer)
    with pytest.raises(BlockchainProtocolError, match=what) as info:
        hook.create_agent("agent", "a-long-enough-password")
    assert not isinstance(info.value, InvalidIdentifierError)
    assert "new-token" not in str(info.value)
