"""The production units' reporters, kept in the MES database (the original's ``KafkaToken`` rows).

:class:`MesReporterStore` is what the provider's ``UpdateDynamicRecordOperator`` asks for a
record's reporter: its token, and where to keep a new reporter's password and credentials.
"""

from __future__ import annotations

from include.mes.repository import MesRepository


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
        reporter = self.repository.reporter(record_id)
        if reporter is None or reporter.token is None:
            return None
        return reporter.token.reveal()

    def prepare(self, record_id: str, topic: str, password: str) -> str:
        """Store *password* for the reporter unless it has one already; return the stored one."""
        return self.repository.prepare_reporter(self.unit_code, record_id, topic, password).password.reveal()

    def store(self, record_id: str, public_key: str, token: str) -> None:
        """Keep the reporter's public key and token (encrypted) that the gateway answered."""
        self.repository.store_reporter_credentials(record_id, public_key, token)
