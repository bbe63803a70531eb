"""The topics (PROTOCOL.md section 3): their protocol names, and the actual names a connection maps them to."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from blockchain_provider.exceptions import InvalidIdentifierError
from blockchain_provider.protocol.identifiers import validate_name
from blockchain_provider.protocol.ours import (
    AGENTS,
    RECORD_GET,
    RECORD_TOPIC_PREFIX,
    RECORD_TYPE_GET,
    RECORDS,
)
from blockchain_provider.request_kinds import (
    BUILT_IN_KINDS,
    ORDER,
    PARTNER,
    RequestKind,
    kind_of_topic,
    request_kinds,
)

RESPONSES = "BLK_Res"

# The request kinds' topics are declared with their kind (blockchain_provider.request_kinds).
PARTNER_LIST = PARTNER.list_topic

PARTNER_ANSWER = PARTNER.answer_topic

ORDER_LIST = ORDER.list_topic

ORDER_ANSWER = ORDER.answer_topic

RECORD_TYPES = "BLK_Rty"

#: The topics that belong to no request kind.
NON_KIND_TOPICS: tuple[str, ...] = (RESPONSES, RECORD_TYPES, RECORDS, RECORD_TYPE_GET, RECORD_GET, AGENTS)

#: The protocol's topics: the built-in kinds' and the others.
DEFAULT_TOPICS: tuple[str, ...] = (
    RESPONSES,
    *(topic for kind in BUILT_IN_KINDS for topic in (kind.list_topic, kind.answer_topic)),
    *NON_KIND_TOPICS[1:],
)

#: The built-in kinds by their topics.
_BUILT_IN_BY_TOPIC = {
    topic: kind for kind in BUILT_IN_KINDS for topic in (kind.list_topic, kind.answer_topic)
}


def protocol_topics() -> tuple[str, ...]:
    """The protocol's topics and those of the kinds a deployment configured (``[blockchain]
    request_kinds``)."""
    added = [
        topic
        for kind in request_kinds().values()
        for topic in (kind.list_topic, kind.answer_topic)
        if topic not in DEFAULT_TOPICS
    ]
    return (*DEFAULT_TOPICS, *added)


def _kind_of(topic: object) -> RequestKind | None:
    """The request kind that lists or answers on *topic*. The protocol's own topics and record
    topics are told without reading the configuration, so that a broken ``[blockchain]
    request_kinds`` fails only what concerns the kinds it adds."""
    if topic in DEFAULT_TOPICS:
        return _BUILT_IN_BY_TOPIC.get(topic)  # type: ignore[arg-type]
    if is_record_topic(topic):
        return None
    return kind_of_topic(topic)


def list_topic_kind(topic: object) -> RequestKind | None:
    """The request kind that lists on *topic*, or ``None``."""
    kind = _kind_of(topic)
    return kind if kind is not None and kind.list_topic == topic else None


def answer_topic_kind(topic: object) -> RequestKind | None:
    """The request kind that answers on *topic*, or ``None``."""
    kind = _kind_of(topic)
    return kind if kind is not None and kind.answer_topic == topic else None


@dataclass(frozen=True)
class TopicMap:
    """Actual topic names by their protocol (default) names.

    :param overrides: default name -> actual name, for the topics that differ.
    """

    overrides: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(name for name in self.overrides if not is_known_topic(name))
        if unknown:
            raise InvalidIdentifierError(
                f"Unknown topic(s) in topic overrides: {', '.join(unknown)}; "
                f"the protocol's topics are {', '.join(protocol_topics())} and {RECORDS}_<record type>"
            )
        for name, actual in self.overrides.items():
            if not isinstance(actual, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", actual):
                raise InvalidIdentifierError(f"Topic override for {name} is not a valid Kafka topic name")

    def __getitem__(self, name: str) -> str:
        if name in DEFAULT_TOPICS:
            return self.overrides.get(name, name)
        if is_record_topic(name):
            # an explicit override of this record topic, else the (overridden) base plus the suffix
            return self.overrides.get(name) or self[RECORDS] + name[len(RECORDS) :]
        if _kind_of(name) is not None:
            return self.overrides.get(name, name)
        raise KeyError(name)

    @property
    def responses(self) -> str:
        return self[RESPONSES]

    @classmethod
    def parse(cls, value: Mapping[str, str] | str | None) -> TopicMap:
        """Build from a mapping or a JSON object text, as a connection's extra holds it."""
        if value is None or value == "":
            return cls()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise InvalidIdentifierError(f"Topic overrides are not a JSON object: {exc}") from None
        if not isinstance(value, Mapping):
            raise InvalidIdentifierError("Topic overrides must be a JSON object of default name -> name")
        return cls(dict(value))


_RECORD_TYPE_TOPIC_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def record_topic(record_type: str) -> str:
    """(ours) The protocol name of the topic of records of *record_type*: ``BLK_Rec_<record type>``.

    The name must also be a legal part of a Kafka topic name (letters, digits, ``_ . -``), and
    ``Get`` is taken by the read topic ``BLK_Rec_Get``.
    """
    name = validate_name(record_type, "record type name")
    if not _RECORD_TYPE_TOPIC_RE.fullmatch(name) or RECORD_TOPIC_PREFIX + name in DEFAULT_TOPICS:
        raise InvalidIdentifierError(
            f"Record type name {name!r} cannot name a topic: use letters, digits and _ . - (not 'Get')"
        )
    return RECORD_TOPIC_PREFIX + name


def is_record_topic(name: object) -> bool:
    """Whether *name* is the protocol name of a record topic (``BLK_Rec_<record type>``)."""
    if not isinstance(name, str) or not name.startswith(RECORD_TOPIC_PREFIX) or name in DEFAULT_TOPICS:
        return False
    return bool(_RECORD_TYPE_TOPIC_RE.fullmatch(name[len(RECORDS) + 1 :]))


def is_known_topic(name: object) -> bool:
    """Whether *name* is one of the protocol's topics, a configured request kind's, or a record topic."""
    return name in DEFAULT_TOPICS or is_record_topic(name) or _kind_of(name) is not None
