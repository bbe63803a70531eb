"""Whatever a request holds, the handler answers it or drops it: it never raises, never leaks a
secret into an answer it should not, and leaves a ledger that verifies."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_sandbox import handlers, wire
from gateway_sandbox.ledger import Ledger
from tests.sandbox.conftest import MES_PASSWORD

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(["action", "id", "response", "name", "properties", "record_id", "record_type", "reporter",
                        "password", "start", "limit", "auth", "public_key", "isRecord", "description",
                        "dynamic"])  # fmt: skip
bodies = st.dictionaries(keys, json_values, max_size=5) | json_values


@pytest.fixture
def prepared(ledger: Ledger, mes: tuple[str, str]) -> tuple[Ledger, str]:
    mes_pk, token = mes
    ledger.create_record_type(mes_pk, "Unit", [{"name": "Status", "data_type": "STRING", "dynamic": True}])
    ledger.create_record(mes_pk, "PT10", "Unit", {"Status": "idle"})
    return ledger, token


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    topic=st.sampled_from([*wire.REQUEST_TOPICS, "BLK_Rec_Unit", "BLK_Rec_Nope"]),
    with_token=st.booleans(),
    header=st.dictionaries(keys, json_values, max_size=3),
    body=bodies,
    shape=st.sampled_from(["pair", "header-only", "three", "raw-json"]),
)
def test_any_request_is_answered_or_dropped_never_raises(prepared, topic, with_token, header, body, shape):
    ledger, token = prepared
    if with_token:
        header = {**header, "auth": token}
    if topic == wire.AGENTS and isinstance(body, dict) and body.get("action") == "token":
        body = {**body, "password": "wrong"}  # keep scrypt out of most examples
    envelope = {"pair": [header, body], "header-only": [header], "three": [header, body, body]}.get(
        shape, body
    )
    raw = json.dumps(envelope).encode()
    with ledger.transaction():
        answer = handlers.handle(ledger, topic, raw, [])
    assert ledger.verify() == []
    if answer.auth is None:
        assert answer.outcome == {}
        return
    assert len(answer.outcome) == 1 and next(iter(answer.outcome)) in ("data", "message", "error")
    encoded = wire.encode_response(answer.header(echo=True), answer.outcome, "python-literal")
    assert isinstance(json.loads(encoded), str)
    if "error" in answer.outcome:
        assert token not in answer.outcome["error"]
        assert MES_PASSWORD not in answer.outcome["error"]
