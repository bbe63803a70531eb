"""Operators for record types and records on the ledger."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainGatewayError
from blockchain_provider.hooks.kafka_blockchain import Outcome
from blockchain_provider.operators.base import BaseBlockchainOperator, Done, Step, is_template


class EnsureRecordTypeOperator(BaseBlockchainOperator):
    """Make sure a record type exists: get it, and create it when the gateway does not know it.

    Returns the record type as the gateway holds it (after creating, as declared here).

    :param name: the record type's name.
    :param properties: ``{"name", "data_type", "dynamic"}`` objects.
    """

    template_fields = ("name",)

    def __init__(self, *, name: str, properties: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.properties = properties
        protocol.record_type_create_call(name if not is_template(name) else "x", properties)

    def first_step(self, context: Mapping[str, Any]) -> Step:
        return Step(protocol.record_type_get_call(self.name), {"phase": "get"})

    def next_step(
        self, state: dict[str, Any], outcome: Outcome | None, error: BlockchainGatewayError | None
    ) -> Step | Done:
        if state["phase"] == "get":
            if error is None:
                assert outcome is not None
                self.log.info("Record type %s exists", self.name)
                return Done(outcome.value)
            if not protocol.is_not_found(error.gateway_text):
                raise error
            self.log.info("Record type %s is missing: creating it", self.name)
            return Step(protocol.record_type_create_call(self.name, self.properties), {"phase": "create"})
        if error is not None:
            raise error
        return Done({"name": self.name, "properties": self.properties})


class CreateRecordOperator(BaseBlockchainOperator):
    """Create a record (``BLK_Rec``); creating it again with identical values is confirmed.

    :param record_id: the record's id; templated.
    :param record_type: its record type's name.
    :param properties: property name -> value; templated.
    """

    template_fields = ("record_id", "properties")

    def __init__(
        self, *, record_id: str, record_type: str, properties: Mapping[str, Any], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.record_id = record_id
        self.record_type = record_type
        self.properties = properties
        protocol.validate_name(record_type, "record type name")

    def first_step(self, context: Mapping[str, Any]) -> Step:
        return Step(protocol.record_create_call(self.record_id, self.record_type, self.properties))


class UpdateRecordOperator(BaseBlockchainOperator):
    """Update dynamic properties of a record (``BLK_Rec``).

    :param record_id: the record's id; templated.
    :param properties: property name -> value; templated.
    """

    template_fields = ("record_id", "properties")

    def __init__(self, *, record_id: str, properties: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.record_id = record_id
        self.properties = properties

    def first_step(self, context: Mapping[str, Any]) -> Step:
        return Step(protocol.record_update_call(self.record_id, self.properties))


class AddReporterOperator(BaseBlockchainOperator):
    """Authorise an agent to update a record's dynamic properties (``BLK_Rec``).

    :param record_id: the record's id; templated.
    :param reporter: the agent's public key; templated.
    """

    template_fields = ("record_id", "reporter")

    def __init__(self, *, record_id: str, reporter: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.record_id = record_id
        self.reporter = reporter
        if not is_template(reporter):
            protocol.validate_public_key(reporter, "reporter public key")

    def first_step(self, context: Mapping[str, Any]) -> Step:
        return Step(protocol.record_add_reporter_call(self.record_id, self.reporter))
