"""Which answer can be a request's (PROTOCOL.md section 2): what a call's answer may be, and whether
an answer on ``BLK_Res`` fits it. Anyone who can write ``BLK_Res`` can write an answer that
echoes a request id: an answer is taken only when it fits the call it claims to answer.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blockchain_provider.protocol.decoder import OutcomeKind, Response
from blockchain_provider.protocol.ours import AGENTS, RECORD_GET, RECORD_TOPIC_PREFIX, RECORDS
from blockchain_provider.protocol.requests import Call
from blockchain_provider.protocol.topics import list_topic_kind


@dataclass(frozen=True)
class Expectation:
    """What a call's answer may be: its outcome kinds besides ``error``; for an agent call
    (``agent``), the public key asked about (``None`` when creating one).

    Anyone who can write ``BLK_Res`` can write an answer that echoes a request id: an answer is
    taken only when it fits the call it claims to answer.
    """

    kinds: tuple[OutcomeKind, ...]
    agent: bool = False
    public_key: str | None = None

    def to_primitives(self) -> dict[str, Any]:
        return {"kinds": list(self.kinds), "agent": self.agent, "public_key": self.public_key}

    @classmethod
    def from_primitives(cls, value: Mapping[str, Any] | None) -> Expectation:
        if not value:
            return ANY_ANSWER
        kinds = tuple(kind for kind in value.get("kinds", ()) if kind in ("data", "message"))
        return cls(kinds or ("data", "message"), bool(value.get("agent")), value.get("public_key") or None)


#: What an answer to a call of unknown shape may be (a trigger serialised without expectation).
ANY_ANSWER = Expectation(("data", "message"))


def expectation(call: Call) -> Expectation:
    """What *call*'s answer may be: ``data`` for a list or a read, ``message`` for a write, and
    ``data`` (the reporter) or ``message`` for the creation of a dynamic record."""
    if call.topic == AGENTS:
        return Expectation(("data",), agent=True, public_key=call.header.get("public_key") or None)
    if list_topic_kind(call.topic) is not None:
        return Expectation(("data",))
    body = call.body or {}
    if call.topic.endswith("_Get") or body.get("action") == "get":
        return Expectation(("data",))
    if _is_record_topic(call.topic) and body.get("dynamic") is True:
        return Expectation(("data", "message"))
    return Expectation(("message",))


def _is_record_topic(topic: str) -> bool:
    """Whether *topic* (a protocol name) carries record creations and updates: ``BLK_Rec`` or
    ``BLK_Rec_<record type>``, not the read topic ``BLK_Rec_Get``."""
    return topic == RECORDS or (topic.startswith(RECORD_TOPIC_PREFIX) and topic != RECORD_GET)


def same_text(a: object, b: object) -> bool:
    """Whether *a* and *b* are the same text, compared in constant time, whatever they hold."""
    return (
        isinstance(a, str)
        and isinstance(b, str)
        and hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))
    )


def fits(response: Response, token: str | None, expect: Expectation) -> bool:
    """Whether *response* can be the answer to a call with *expect*, sent with *token*.

    A non-agent answer must carry our token in ``auth`` and an outcome of the kinds the call
    takes (or ``error``). An agent answer (matched by its request id alone: no token in its
    ``auth``) must be about the public key asked for, and its data must hold a token.
    """
    if expect.agent:
        if expect.public_key is not None and response.public_key != expect.public_key:
            return False
        if response.kind == "error":
            return True
        if response.kind != "data" or not isinstance(response.value, Mapping):
            return False
        new_token = response.value.get("token")
        if not isinstance(new_token, str) or not new_token:
            return False
        if expect.public_key is None:
            return response.public_key is not None and response.value.get("public_key") == response.public_key
        return True
    if not same_text(response.auth, token):
        return False
    return response.kind == "error" or response.kind in expect.kinds
