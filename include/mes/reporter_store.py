"""The production units' reporters, kept in the MES database (the original's ``KafkaToken`` rows).

:class:`MesReporterStore` is what the provider's ``UpdateDynamicRecordOperator`` asks for a
record's reporter: its token, where to keep a new reporter's password and credentials, and where
the triggerer reads the token of an update whose answer it waits for (:func:`reporter_token`).
:class:`MesReporterRegistry` is what ``blockchain-provider reporters`` lists and rotates them
through (``AIRFLOW__BLOCKCHAIN__REPORTER_REGISTRY=include.mes.reporter_store.MesReporterRegistry``).
"""

from __future__ import annotations

from blockchain_provider.reporter_registry import ReporterEntry, ReporterLogin, ReporterRegistryError
from include.mes.crypto import MesSecretError
from include.mes.repository import MesRepository


class MesReporterStore:
    """The reporter of one production unit's record, in the MES database.

    :param repository: the MES database.
    :param unit_code: the unit's code (``PT10``), the reporter's name.
    :param conn_id: the Airflow connection of the MES database, for the triggerer to read the
        token by; defaults to ``None`` (updates then wait for their answers in the worker).
    """

    def __init__(self, repository: MesRepository, unit_code: str, conn_id: str | None = None) -> None:
        self.repository = repository
        self.unit_code = unit_code
        self.conn_id = conn_id

    def __repr__(self) -> str:
        return f"MesReporterStore(unit={self.unit_code!r})"

    def token(self, record_id: str) -> str | None:
        """The reporter's token, or ``None`` until the gateway has answered its creation."""
        reporter = self.repository.reporter(record_id)
        if reporter is None or reporter.token is None:
            return None
        return reporter.token.reveal()

    def token_source(self, record_id: str) -> tuple[str, dict[str, str]] | None:
        """Where the triggerer reads the reporter's token: :func:`reporter_token` and its arguments."""
        if self.conn_id is None:
            return None
        return f"{__name__}.reporter_token", {"conn_id": self.conn_id, "record_id": record_id}

    def prepare(self, record_id: str, topic: str, password: str) -> str:
        """Store *password* for the reporter unless it has one already; return the stored one."""
        return self.repository.prepare_reporter(self.unit_code, record_id, topic, password).password.reveal()

    def store(self, record_id: str, public_key: str, token: str) -> None:
        """Keep the reporter's public key and token (encrypted) that the gateway answered."""
        self.repository.store_reporter_credentials(record_id, public_key, token)


def reporter_token(conn_id: str, record_id: str) -> str | None:
    """The token of record *record_id*'s reporter, read from the MES database of Airflow connection
    *conn_id*; ``None`` when it has none. The triggerer calls it to match and clean the answer to
    an update signed with that token."""
    from include.mes.db import mes_engine

    engine = mes_engine(conn_id)
    try:
        reporter = MesRepository(engine).reporter(record_id)
    finally:
        engine.dispose()
    if reporter is None or reporter.token is None:
        return None
    return reporter.token.reveal()


class MesReporterRegistry:
    """Every unit's reporter in the MES database of the connection ``BLOCKCHAIN_MES_CONN_ID``
    names (default ``mes_db``): the provider's ``ReporterRegistry``. A reporter's name is its
    unit's code. Reading a secret needs Airflow's Fernet key, as the workers do."""

    def __init__(self, conn_id: str | None = None) -> None:
        from include.mes.db import configured_conn_id, mes_engine

        self.repository = MesRepository(mes_engine(conn_id or configured_conn_id()))
        self.repository.create_schema()

    def reporters(self) -> list[ReporterEntry]:
        return [
            ReporterEntry(r["name"], r["record_id"], r["topic"], r["public_key"], bool(r["has_token"]))
            for r in self.repository.reporters()
        ]

    def credentials(self, name: str) -> ReporterLogin | None:
        try:
            # reading the row decrypts its secrets: a Fernet key that cannot is the registry's refusal
            reporter = self.repository.reporter_of_unit(name)
            if reporter is None or reporter.public_key is None:
                return None
            password = reporter.password.reveal()
        except MesSecretError as exc:
            raise ReporterRegistryError(str(exc)) from None
        return ReporterLogin(reporter.record_id, reporter.public_key, password)

    def set_token(self, record_id: str, token: str) -> None:
        try:
            self.repository.set_reporter_token(record_id, token)
        except (MesSecretError, LookupError) as exc:
            raise ReporterRegistryError(str(exc)) from None
