"""BLK_Agt runs scrypt (about 50 ms): a client flooding it must not stall everyone else's answers."""

from __future__ import annotations

import json

from gateway_sandbox import crypto, handlers, wire
from tests.sandbox.conftest import MES_PASSWORD


def token_request(public_key: str, password: str, request_id: str) -> bytes:
    return json.dumps(
        [{"public_key": public_key, "request_id": request_id}, {"action": "token", "password": password}]
    ).encode()


def test_token_requests_are_rate_limited_per_agent(ledger, monkeypatch):
    mes, _ = ledger.create_agent("MES", MES_PASSWORD)
    other, _ = ledger.create_agent("Other", MES_PASSWORD)
    hashed = []
    check = crypto.check_password

    def counting(*args):
        hashed.append(args)
        return check(*args)

    monkeypatch.setattr(crypto, "check_password", counting)
    limiter = handlers.AgentRateLimiter(per_client=3, per_seconds=60.0)
    answers = [
        handlers.handle(
            ledger, wire.AGENTS, token_request(mes, "wrong password!", f"{i:032x}"), agent_limiter=limiter
        )
        for i in range(20)
    ]
    refused = [a.outcome.get("error", "") for a in answers]
    assert sum("wrong password" in text for text in refused) == 3
    limited = [text for text in refused if "too many" in text]
    assert len(limited) == 17 and "retry" in limited[0]
    assert len(hashed) == 3  # the limited ones cost no scrypt
    # another client is not held back by the first
    answer = handlers.handle(
        ledger, wire.AGENTS, token_request(other, MES_PASSWORD, "f" * 32), agent_limiter=limiter
    )
    assert "data" in answer.outcome


def test_the_server_has_a_limiter_by_default(tmp_path):
    from gateway_sandbox.server import GatewayServer

    server = GatewayServer("127.0.0.1:9", str(tmp_path / "ledger.sqlite3"))
    assert isinstance(server.agent_limiter, handlers.AgentRateLimiter)
    assert server.agent_limiter.per_client == handlers.DEFAULT_AGENT_REQUESTS_PER_MINUTE
