"""What the MES keeps of its ledger creations: record types, and reporters as KafkaToken rows, with
the token and password encrypted at rest with Airflow's Fernet key (SQLite and PostgreSQL)."""

from __future__ import annotations

import pickle

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from include.mes import crypto, schema
from include.mes.repository import MesRepository

PK = "02" + "cd" * 32
TOKEN = "reporter-token-6f1e2d"
PASSWORD = "reporter-password-9a8b7c6d5e"


@pytest.fixture
def fernet_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """Airflow's Fernet key for this test, as a deployment sets it."""
    from airflow.sdk.crypto import get_fernet

    key = Fernet.generate_key().decode()
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", key)
    get_fernet.cache_clear()
    yield key
    get_fernet.cache_clear()


def test_reporter_secrets_are_encrypted_with_airflows_fernet_key(engine: Engine, fernet_key: str) -> None:
    repo = MesRepository(engine)
    repo.create_schema()
    prepared = repo.prepare_reporter("PT10", "PU_PT10", "BLK_Rec_ProductionUnit", PASSWORD)
    assert (prepared.public_key, prepared.token) == (None, None)
    assert prepared.password.reveal() == PASSWORD
    # a second preparation (a rerun whose creation answer was lost) keeps the first password
    again = repo.prepare_reporter("PT10", "PU_PT10", "BLK_Rec_ProductionUnit", "another-password-123456")
    assert again.password.reveal() == PASSWORD

    stored = repo.store_reporter_credentials("PU_PT10", PK, TOKEN)
    assert (stored.name, stored.record_id, stored.topic, stored.public_key) == (
        "PT10",
        "PU_PT10",
        "BLK_Rec_ProductionUnit",
        PK,
    )
    assert stored.instance_type == "Reporter"
    assert stored.token.reveal() == TOKEN
    for shown in (repr(stored), str(stored), f"{stored.token}", repr(repo.reporter_of_unit("PT10"))):
        assert TOKEN not in shown and PASSWORD not in shown
    with pytest.raises(TypeError):
        pickle.dumps(stored.token)

    with engine.connect() as conn:
        row = conn.execute(sa.select(schema.kafka_tokens)).mappings().one()
    assert row["instance_type"] == "Reporter" and row["public_key"] == PK
    assert TOKEN not in row["token"] and PASSWORD not in row["password"]  # encrypted at rest
    fernet = Fernet(fernet_key.encode())
    assert fernet.decrypt(row["token"].encode()).decode() == TOKEN
    assert fernet.decrypt(row["password"].encode()).decode() == PASSWORD

    repo.set_reporter_token("PU_PT10", "fresh-token-123")
    assert repo.reporter("PU_PT10").token.reveal() == "fresh-token-123"
    listed = repo.reporters()
    assert [(r["name"], r["record_id"], r["public_key"], r["has_token"]) for r in listed] == [
        ("PT10", "PU_PT10", PK, True)
    ]
    assert "fresh-token-123" not in repr(listed) and "token" not in listed[0]
    with pytest.raises(LookupError, match="PU_PT99"):
        repo.set_reporter_token("PU_PT99", "x" * 20)


def test_no_fernet_key_means_nothing_is_stored(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.crypto import get_fernet

    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "")
    get_fernet.cache_clear()
    try:
        repo = MesRepository(engine)
        repo.create_schema()
        with pytest.raises(crypto.MesSecretError, match="no Fernet key"):
            repo.prepare_reporter("PT10", "PU_PT10", "BLK_Rec_ProductionUnit", PASSWORD)
        assert repo.reporters() == []
    finally:
        get_fernet.cache_clear()


def test_a_replaced_fernet_key_is_a_clear_error(engine: Engine) -> None:
    repo = MesRepository(engine, fernet=Fernet(Fernet.generate_key()))
    repo.create_schema()
    repo.prepare_reporter("PT10", "PU_PT10", "BLK_Rec_ProductionUnit", PASSWORD)
    other = MesRepository(engine, fernet=Fernet(Fernet.generate_key()))
    with pytest.raises(crypto.MesSecretError, match="cannot be decrypted") as raised:
        other.reporter("PU_PT10")
    assert PASSWORD not in str(raised.value)


def test_record_types_created_are_remembered_per_gateway(engine: Engine) -> None:
    repo = MesRepository(engine)
    repo.create_schema()
    gateway, other_gateway = "kafka:9092|02" + "a" * 64, "kafka:9092|03" + "b" * 64
    assert not repo.record_type_created(gateway, "DayReportIndicator")
    repo.mark_record_type_created(gateway, "DayReportIndicator")
    repo.mark_record_type_created(gateway, "DayReportIndicator")
    assert repo.record_type_created(gateway, "DayReportIndicator")
    assert not repo.record_type_created(gateway, "ProductionUnit")
    # another master agent (or another cluster) is another gateway: the type is created there too
    assert not repo.record_type_created(other_gateway, "DayReportIndicator")
    with pytest.raises(ValueError, match="gateway"):
        repo.mark_record_type_created("", "DayReportIndicator")
