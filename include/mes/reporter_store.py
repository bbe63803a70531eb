"""The production units' reporters, kept in the MES database (the original's ``KafkaToken`` rows).

:class:`MesReporterStore` is what the provider's ``UpdateDynamicRecordOperator`` asks for a
record's reporter: its token, and where to keep a new reporter's password and credentials.
:class:`MesReporterRegistry` is the provider's ``ReporterRegistry``
(``AIRFLOW__BLOCKCHAIN__REPORTER_REGISTRY=include.mes.reporter_store.MesReporterRegistry``): the
triggerer reads the token of an update whose answer it waits for through it, and
``blockchain-provider reporters`` lists and rotates the reporters through it.
"""

from __future__ import annotations

from blockchain_provider.reporter_registry import ReporterEntry, ReporterLogin, ReporterRegistryError
from include.mes.crypto import MesSecretError
from include.mes.repository import MesRepository, process_repository


class MesReporterStore:
    """The reporter of one production unit's record, in the MES database.

    :param repository: the MES database.
    :param unit_code: the unit's code (``PT10``), the reporter's name.
    """

    def __init__(self, repository: MesRepository, unit_code: str) -> None:
        self.repository = repository
        self.unit_code = unit_code

    def __repr__(self) -> str:
        return f"MesReporterStore(unit={self.unit_code!r})"

    def token(self, record_id: str) -> str | None:
        """The reporter's token, or ``None`` until the gateway has answered its creation."""
        return stored_token(self.repository, record_id)

    def prepare(self, record_id: str, topic: str, password: str) -> str:
        """Store *password* for the reporter unless it has one already; return the stored one."""
        return self.repository.prepare_reporter(self.unit_code, record_id, topic, password).password.reveal()

    def store(self, record_id: str, public_key: str, token: str) -> None:
        """Keep the reporter's public key and token (encrypted) that the gateway answered."""
        self.repository.store_reporter_credentials(record_id, public_key, token)


def stored_token(repository: MesRepository, record_id: str) -> str | None:
    """The token of record *record_id*'s reporter in the MES database; ``None`` when it has none."""
    reporter = repository.reporter(record_id)
    if reporter is None or reporter.token is None:
        return None
    return reporter.token.reveal()


class MesReporterRegistry:
    """Every unit's reporter in the MES database of the connection ``BLOCKCHAIN_MES_CONN_ID``
    names (default ``mes_db``): the provider's ``ReporterRegistry``. A reporter's name is its
    unit's code. Reading a secret needs Airflow's Fernet key, as the workers do. It reads the
    database through the process's engine (:func:`~include.mes.repository.process_repository`):
    the triggerer's waits share one."""

    def __init__(self, conn_id: str | None = None) -> None:
        from include.mes.db import configured_conn_id

        self.conn_id = conn_id or configured_conn_id()
        self.repository.create_schema()

    @property
    def repository(self) -> MesRepository:
        return process_repository(self.conn_id)

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

    def token(self, record_id: str) -> str | None:
        """The token of record *record_id*'s reporter (the triggerer's registry, one per process,
        asks it with one database engine for every wait)."""
        return stored_token(self.repository, record_id)
