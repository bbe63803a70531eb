"""Operators for record types and non-dynamic records on the ledger (PROTOCOL.md 3.3).

They send the creation and update messages only, never a read: the MES remembers what it has
created, and the gateway confirms an identical creation instead of refusing it. A dynamic record
(and its reporter) is created by the production-unit flow, which stores the reporter's
credentials in the MES database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blockchain_provider import protocol
from blockchain_provider.operators.base import BaseBlockchainOperator, Step, is_template


class EnsureRecordTypeOperator(BaseBlockchainOperator):
    """Create a record type (``BLK_Rty``); creating it again identically is confirmed.

    :param name: the record type's name.
    :param description: what its records hold.
    :param properties: ``{"name", "data_type", "dynamic"}`` objects.
    """

    template_fields = ("name",)

    def __init__(
        self, *, name: str, description: str, properties: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.description = description
        self.properties = properties
        protocol.record_type_create_call(name if not is_template(name) else "x", description, properties)

    def first_step(self, context: Mapping[str, Any]) -> Step:
        return Step(protocol.record_type_create_call(self.name, self.description, self.properties))


class CreateRecordOperator(BaseBlockchainOperator):
    """Create a non-dynamic record on ``BLK_Rec_<record type>``; an identical one is confirmed.

    :param record_id: the record's id; templated.
    :param record_type: its record type's name.
    :param description: the record's description; templated.
    :param properties: property name -> value (one element for a day-report indicator); templated.
    """

    template_fields = ("record_id", "description", "properties")

    def __init__(
        self,
        *,
        record_id: str,
        record_type: str,
        description: str,
        properties: Mapping[str, Any],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.record_id = record_id
        self.record_type = record_type
        self.description = description
        self.properties = properties
        protocol.record_topic(record_type)

    def first_step(self, context: Mapping[str, Any]) -> Step:
        return Step(
            protocol.record_create_call(self.record_id, self.record_type, self.description, self.properties)
        )


class UpdateRecordOperator(BaseBlockchainOperator):
    """Update dynamic properties of a record on ``BLK_Rec_<record type>``.

    The update is signed with the token of ``token_conn_id``: give it the record's reporter's
    token connection.

    :param record_type: the record's type (it names the topic).
    :param record_id: the record's id; templated.
    :param properties: property name -> value; templated.
    """

    template_fields = ("record_id", "properties")

    def __init__(
        self, *, record_type: str, record_id: str, properties: Mapping[str, Any], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.record_type = record_type
        self.record_id = record_id
        self.properties = properties
        protocol.record_topic(record_type)

    def first_step(self, context: Mapping[str, Any]) -> Step:
        return Step(protocol.record_update_call(self.record_type, self.record_id, self.properties))
