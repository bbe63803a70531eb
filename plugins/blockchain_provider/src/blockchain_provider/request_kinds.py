"""The kinds of request the ledger addresses to the MES: partner requests, orders, and any kind a
deployment adds.

A kind is declared once, as a :class:`RequestKind`: its list topic, its answer topic, the field
of a listed item that holds its id, and how it is named (PROTOCOL.md 3.1 and 3.2 for the two the
gateway has). The protocol takes its list and answer topics from here; the operators, the CLI and
the requests page read kinds from :func:`request_kinds` instead of branching on them.

A deployment whose gateway lists another kind declares it in its own code and names it in
Airflow's configuration, so that every Airflow process (scheduler, worker, triggerer, API server)
knows it::

    [blockchain]
    request_kinds = my_deployment.kinds.QUOTE

(a comma-separated list of dotted paths, each to a :class:`RequestKind` or to a tuple or list of
them, so that a deployment can name its kinds once and add to them in code: in the module that
defines the tuple, as each process reads the kinds once). A kind the option does not name is
unknown to the protocol, even where a :class:`RequestKind` object is passed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from blockchain_provider.configured import ConfiguredObjectError, option

#: A kind's name: short, as it is part of URLs, DAG ids, asset names and a deployment's tables.
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,15}$")
#: A kind's topic: a protocol topic name, neither a record topic (``BLK_Rec...``) nor a read
#: (``..._Get``, which the protocol's matching expects data from).
_TOPIC_RE = re.compile(r"^BLK_[A-Za-z0-9_]{1,100}$")
_ID_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class RequestKind:
    """One kind of request the ledger lists for the MES to accept or reject.

    :param name: lowercase letters, digits and ``_`` (``partner``, ``order``).
    :param list_topic: the topic that lists the kind's requests, page by page (``start``/``limit``).
    :param answer_topic: the topic that accepts or rejects one (``{"id", "response"}``).
    :param id_field: the field of a listed item that holds its id (32 lowercase hex).
    :param label: how logs, errors and the page name one (``"partner request"``).
    """

    name: str
    list_topic: str
    answer_topic: str
    id_field: str
    label: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise ValueError(f"Invalid request kind name {self.name!r}: lowercase letters, digits and _")
        for what, topic in (("list_topic", self.list_topic), ("answer_topic", self.answer_topic)):
            if (
                not isinstance(topic, str)
                or not _TOPIC_RE.fullmatch(topic)
                or topic.startswith("BLK_Rec")
                or topic.endswith("_Get")
            ):
                raise ValueError(
                    f"Invalid {what} {topic!r} of request kind {self.name}: BLK_ and letters, digits or "
                    "_ (not a record topic, not ending in _Get)"
                )
        if self.list_topic == self.answer_topic:
            raise ValueError(f"Request kind {self.name} lists and answers on one topic {self.list_topic}")
        if not isinstance(self.id_field, str) or not _ID_FIELD_RE.fullmatch(self.id_field):
            raise ValueError(f"Invalid id_field {self.id_field!r} of request kind {self.name}")
        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError(f"Request kind {self.name} has no label")

    def item_id(self, item: object) -> str | None:
        """The id of a listed *item*, or ``None`` when it has none."""
        value = item.get(self.id_field) if isinstance(item, dict) else None
        return value if isinstance(value, str) else None


PARTNER = RequestKind("partner", "BLK_Part_Lst", "BLK_Part_Ans", "partner_request_id", "partner request")
ORDER = RequestKind("order", "BLK_Act_Lst", "BLK_Act_Ans", "abs_action_id", "order request")

#: The kinds the gateway of the sources has.
BUILT_IN_KINDS: tuple[RequestKind, ...] = (PARTNER, ORDER)


def request_kinds() -> Mapping[str, RequestKind]:
    """Every kind by name: the built-in ones, then those ``[blockchain] request_kinds`` names.

    :raises ConfiguredObjectError: a configured kind cannot be imported, is no
        :class:`RequestKind`, or takes a name or topic another kind (or the protocol) has.
    """
    return _kinds(option("request_kinds"))


def request_kind(name: object) -> RequestKind:
    """The kind called *name* (a :class:`RequestKind` is taken as it is); a clear error for any
    other name."""
    if isinstance(name, RequestKind):
        return name
    kinds = request_kinds()
    try:
        return kinds[name]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown request kind {name!r}: expected one of {', '.join(kinds)}") from None


def kind_of_topic(topic: object) -> RequestKind | None:
    """The kind that lists or answers on the protocol topic *topic*, or ``None``."""
    return _by_topic(option("request_kinds")).get(topic)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=4)
def _kinds(paths: str | None) -> Mapping[str, RequestKind]:
    from blockchain_provider.protocol.topics import NON_KIND_TOPICS

    kinds = {kind.name: kind for kind in BUILT_IN_KINDS}
    taken = {topic: kind.name for kind in BUILT_IN_KINDS for topic in (kind.list_topic, kind.answer_topic)}
    for path in (part.strip() for part in (paths or "").split(",")):
        for kind in _imported(path) if path else ():
            clash = kinds.get(kind.name) or next(
                (kinds[taken[t]] for t in (kind.list_topic, kind.answer_topic) if t in taken), None
            )
            if clash is not None and clash != kind:
                raise ConfiguredObjectError(
                    f"[blockchain] request_kinds: {path} ({kind.name}) takes the name or a topic of kind "
                    f"{clash.name}"
                )
            protocols = sorted({kind.list_topic, kind.answer_topic} & set(NON_KIND_TOPICS))
            if protocols:
                raise ConfiguredObjectError(
                    f"[blockchain] request_kinds: {path} ({kind.name}) takes the protocol's topic(s) "
                    f"{', '.join(protocols)}"
                )
            kinds[kind.name] = kind
            taken.update({kind.list_topic: kind.name, kind.answer_topic: kind.name})
    return MappingProxyType(kinds)


@functools.lru_cache(maxsize=4)
def _by_topic(paths: str | None) -> Mapping[str, RequestKind]:
    return MappingProxyType(
        {topic: kind for kind in _kinds(paths).values() for topic in (kind.list_topic, kind.answer_topic)}
    )


def _imported(path: str) -> tuple[RequestKind, ...]:
    """The kind *path* names, or the kinds of the tuple or list it names."""
    from airflow.sdk.module_loading import import_string

    try:
        named = import_string(path)
    except ImportError as exc:
        raise ConfiguredObjectError(f"[blockchain] request_kinds: cannot import {path}: {exc}") from None
    except Exception as exc:  # the module's own error: its text is not repeated
        raise ConfiguredObjectError(
            f"[blockchain] request_kinds: cannot import {path}: {type(exc).__name__}"
        ) from None
    kinds = tuple(named) if isinstance(named, (tuple, list)) else (named,)
    for kind in kinds:
        if not isinstance(kind, RequestKind):
            raise ConfiguredObjectError(
                f"[blockchain] request_kinds: {path} is or holds a {type(kind).__name__}, not a RequestKind"
            )
    return kinds
