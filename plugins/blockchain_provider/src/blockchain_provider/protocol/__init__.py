"""The BLK wire protocol: the one package that knows the gateway's message formats.

Everything the hook, the operators and the trigger put on or read from Kafka goes through here;
they never build or parse an envelope themselves. Its modules, one job each:

- :mod:`.topics`: the topics' protocol names and a connection's overrides (PROTOCOL.md 3);
- :mod:`.identifiers`: public keys, request ids and names, and their checks (3.5);
- :mod:`.requests`: each message's builder, its envelope, paging (1 and 3);
- :mod:`.decoder`: the answers on ``BLK_Res`` in their three encodings (1 and 2);
- :mod:`.matching`: which answer can be a request's (2);
- :mod:`.ours`: every choice the gateway's documentation does not make (*(ours)* in PROTOCOL.md).
  A real gateway that differs is met by changing that module or the connection's topic
  overrides, not the DAGs.

Everything is imported from here: ``from blockchain_provider import protocol``, then
``protocol.list_call(...)``.
"""

from __future__ import annotations

from blockchain_provider.protocol.decoder import (
    ERROR_TEXT_MAX_LENGTH,
    MAX_RESPONSE_BYTES,
    MAX_SLOW_LITERAL_CHARS,
    OUTCOME_KINDS,
    OutcomeKind,
    Response,
    decode_response,
    error_text,
    mentions,
    needles_of,
)
from blockchain_provider.protocol.identifiers import (
    PUBLIC_KEY_PATTERN,
    REQUEST_ID_PATTERN,
    TRANSACTION_ID_PATTERN,
    answered_public_key,
    validate_name,
    validate_public_key,
    validate_request_id,
)
from blockchain_provider.protocol.matching import (
    ANY_ANSWER,
    Expectation,
    expectation,
    fits,
    same_text,
)
from blockchain_provider.protocol.ours import (
    AGENTS,
    MAX_LIST_PAGES,
    NON_DYNAMIC_PASSWORD,
    PROPERTY_TYPES,
    READS_DEFAULT,
    RECORD_GET,
    RECORD_TYPE_GET,
    RECORDS,
    REQUEST_ID_KAFKA_HEADER,
    agent_create_call,
    agent_token_call,
    gateway_identity,
    is_not_found,
    new_request_id,
    record_get_call,
    record_type_get_call,
)
from blockchain_provider.protocol.requests import (
    MIN_PASSWORD_LENGTH,
    PAGE_CAP,
    REPEATED_PAGE,
    Call,
    PageTurn,
    ReporterCredentials,
    Request,
    answer_call,
    envelope,
    list_call,
    listing_end_warning,
    new_password,
    next_start,
    page_digest,
    record_create_call,
    record_type_create_call,
    record_update_call,
    reporter_from_answer,
    turn_page,
    validate_max_pages,
)
from blockchain_provider.protocol.topics import (
    DEFAULT_TOPICS,
    ORDER_ANSWER,
    ORDER_LIST,
    PARTNER_ANSWER,
    PARTNER_LIST,
    RECORD_TYPES,
    RESPONSES,
    TopicMap,
    is_known_topic,
    is_record_topic,
    record_topic,
)

__all__ = [
    "AGENTS",
    "ANY_ANSWER",
    "DEFAULT_TOPICS",
    "ERROR_TEXT_MAX_LENGTH",
    "MAX_LIST_PAGES",
    "MAX_RESPONSE_BYTES",
    "MAX_SLOW_LITERAL_CHARS",
    "MIN_PASSWORD_LENGTH",
    "NON_DYNAMIC_PASSWORD",
    "ORDER_ANSWER",
    "ORDER_LIST",
    "OUTCOME_KINDS",
    "PAGE_CAP",
    "PARTNER_ANSWER",
    "PARTNER_LIST",
    "PROPERTY_TYPES",
    "PUBLIC_KEY_PATTERN",
    "READS_DEFAULT",
    "RECORDS",
    "RECORD_GET",
    "RECORD_TYPES",
    "RECORD_TYPE_GET",
    "REPEATED_PAGE",
    "REQUEST_ID_KAFKA_HEADER",
    "REQUEST_ID_PATTERN",
    "RESPONSES",
    "TRANSACTION_ID_PATTERN",
    "Call",
    "Expectation",
    "OutcomeKind",
    "PageTurn",
    "ReporterCredentials",
    "Request",
    "Response",
    "TopicMap",
    "agent_create_call",
    "agent_token_call",
    "answer_call",
    "answered_public_key",
    "decode_response",
    "envelope",
    "error_text",
    "expectation",
    "fits",
    "gateway_identity",
    "is_known_topic",
    "is_not_found",
    "is_record_topic",
    "list_call",
    "listing_end_warning",
    "mentions",
    "needles_of",
    "new_password",
    "new_request_id",
    "next_start",
    "page_digest",
    "record_create_call",
    "record_get_call",
    "record_topic",
    "record_type_create_call",
    "record_type_get_call",
    "record_update_call",
    "reporter_from_answer",
    "same_text",
    "turn_page",
    "validate_max_pages",
    "validate_name",
    "validate_public_key",
    "validate_request_id",
]
