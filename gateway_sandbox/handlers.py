"""What the sandbox answers to each request: the ledger semantics of every ``BLK_*`` topic.

:func:`handle` turns one request value into an :class:`Answer` (whom to address, the outcome
and what to log), applying its effect to the ledger. It runs inside the caller's
:meth:`Ledger.transaction`; a refused write is rolled back on its own (a savepoint), so the
caller can still record the answer and the consumed offset in the same transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway_sandbox import wire
from gateway_sandbox.ledger import Ledger
from gateway_sandbox.profiles import PROFILES, Profile
from gateway_sandbox.schema import ORDER, PARTNER_REQUEST
from gateway_sandbox.validation import LedgerError, check_item_id
from gateway_sandbox.wire import PUBLIC_KEY_RE

DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000

#: The ``auth`` of a ``BLK_Agt`` error when the request named no agent (when it did, its public
#: key is the ``auth``): the protocol's decoders require a non-empty ``auth``, and agent
#: responses are matched by ``request_id`` anyway.
ANONYMOUS = "anonymous"

#: ``BLK_Agt`` requests each client may make per minute (a token request costs a scrypt check,
#: about 50 ms; a creation a scrypt hash). Clients are the agent a token request names; every
#: creation shares one client.
DEFAULT_AGENT_REQUESTS_PER_MINUTE = 30


class AgentRateLimiter:
    """A token bucket per client: *per_client* requests, refilled over *per_seconds*.

    Requests over the limit are refused at once, before any scrypt work, so one client flooding
    ``BLK_Agt`` cannot stall the answers of everyone else.
    """

    def __init__(
        self, per_client: int = DEFAULT_AGENT_REQUESTS_PER_MINUTE, per_seconds: float = 60.0
    ) -> None:
        if per_client < 1 or per_seconds <= 0:
            raise ValueError("a rate limit needs at least one request per positive period")
        self.per_client = per_client
        self.per_seconds = per_seconds
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def wait_for(self, client: str, now: float | None = None) -> float:
        """Take one request of *client*; return 0 when allowed, else the seconds until it would be."""
        now = time.monotonic() if now is None else now
        rate = self.per_client / self.per_seconds
        with self._lock:
            tokens, then = self._buckets.get(client, (float(self.per_client), now))
            tokens = min(float(self.per_client), tokens + (now - then) * rate)
            if tokens >= 1:
                self._buckets[client] = (tokens - 1, now)
                if len(self._buckets) > 10_000:  # forget the full buckets of idle clients
                    self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self.per_client - 1}
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1 - tokens) / rate


@dataclass
class Answer:
    """The response to one request, before encoding.

    ``auth`` is ``None`` when the request is dropped (nothing could be read to address an answer).
    """

    auth: str | None
    outcome: dict[str, Any]
    action: str = "-"
    agent: str | None = None
    request_id: str | None = None
    extra_header: dict[str, Any] = field(default_factory=dict)
    always_echo: bool = False
    reason: str = ""
    injected: bool = False
    #: a record type this request created: its records' topic must exist before the answer is sent
    new_record_type: str | None = None

    @property
    def kind(self) -> str:
        return next(iter(self.outcome)) if self.outcome else "dropped"

    def header(self, echo: bool) -> dict[str, Any]:
        assert self.auth is not None
        header: dict[str, Any] = {"auth": self.auth, **self.extra_header}
        if (echo or self.always_echo) and self.request_id:
            header["request_id"] = self.request_id
        return header


@dataclass(frozen=True)
class RequestTopics:
    """The topics of one request kind (partner request, order) and what they call on the ledger.

    :param noun: how answers name one item.
    :param list_topic: its list topic.
    :param answer_topic: its answer topic.
    :param list: the ledger's list method (``agent_pk``, ``start``, ``limit``).
    :param answer: the ledger's answer method (``agent_pk``, id, response).
    """

    noun: str
    list_topic: str
    answer_topic: str
    list: Callable[..., list[dict[str, Any]]]
    answer: Callable[[Ledger, str, str, Any], dict[str, Any]]


REQUEST_TOPICS = (
    RequestTopics(
        PARTNER_REQUEST.noun,
        wire.PARTNER_LIST,
        wire.PARTNER_ANSWER,
        Ledger.partner_requests,
        Ledger.answer_partner_request,
    ),
    RequestTopics(ORDER.noun, wire.ORDER_LIST, wire.ORDER_ANSWER, Ledger.orders, Ledger.answer_order),
)
_BY_LIST_TOPIC = {kind.list_topic: kind for kind in REQUEST_TOPICS}
_BY_ANSWER_TOPIC = {kind.answer_topic: kind for kind in REQUEST_TOPICS}
#: The topics that read one item: topic -> (the body field naming it, the ledger's lookup method, its noun).
_BY_GET_TOPIC: dict[str, tuple[str, str, str]] = {
    wire.RECORD_TYPE_GET: ("name", "record_type", "record type"),
    wire.RECORD_GET: ("record_id", "record", "record"),
}


class Refused(Exception):
    """A request refused before touching the ledger; its text is the ``error``."""


def _page(header: dict[str, Any], page_cap: int | None = None) -> tuple[int, int]:
    """``start`` and ``limit`` of a list request; a gateway with a *page_cap* answers at most that many
    items whatever the limit (the next page starts at ``start`` plus the items received)."""
    start = header.get("start", 0)
    limit = header.get("limit", DEFAULT_LIMIT)
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise Refused("invalid start: expected an integer >= 0")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise Refused(f"invalid limit: expected an integer from 1 to {MAX_LIMIT}")
    return start, limit if page_cap is None else min(limit, page_cap)


def _body(body: Any, topic: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Refused(f"a {topic} request needs a body object (element 1)")
    return body


def _action(body: dict[str, Any], topic: str, allowed: tuple[str, ...]) -> str:
    action = body.get("action")
    if action not in allowed:
        shown = action if isinstance(action, str) and len(action) <= 40 else type(action).__name__
        raise Refused(f"unknown action {shown!r} on {topic}: one of {', '.join(allowed)}")
    return action


def handle(
    ledger: Ledger,
    topic: str,
    raw: bytes | None,
    kafka_headers: list[tuple[str, bytes]] | None = None,
    *,
    inject_error: str | None = None,
    page_cap: int | None = None,
    agent_limiter: AgentRateLimiter | None = None,
    profile: Profile = PROFILES["sandbox"],
) -> Answer:
    """Answer the request *raw* read from the protocol topic *topic* (its default name, or
    ``BLK_Rec_<record type>``).

    With ``inject_error``, a well-addressed request is answered with that error text and not
    applied (the error-rate fault knob). With ``page_cap``, list pages hold at most that many items.
    *agent_limiter* limits ``BLK_Agt`` requests per client. *profile* says what the gateway
    forgives (:mod:`gateway_sandbox.profiles`).
    """
    try:
        header, body = wire.decode_request(raw)
    except wire.MalformedRequest as exc:
        request_id = wire.request_id_of(exc.header, kafka_headers)
        if topic == wire.AGENTS and request_id is not None:
            # agent answers are matched by request_id alone: the caller gets the refusal, not a timeout
            text = f"malformed request: {exc.reason}"
            return Answer(
                ANONYMOUS,
                {"error": text},
                action="malformed",
                request_id=request_id,
                always_echo=True,
                reason=text,
            )
        if topic == wire.AGENTS or exc.token is None:
            return Answer(None, {}, action="malformed", request_id=request_id, reason=exc.reason)
        return _authenticated_error(
            ledger, exc.token, f"malformed request: {exc.reason}", request_id, "malformed"
        )
    request_id = wire.request_id_of(header, kafka_headers)
    if topic == wire.AGENTS:
        return _handle_agents(ledger, header, body, request_id, inject_error, agent_limiter)
    auth = header.get("auth")
    if not isinstance(auth, str) or not auth:
        return Answer(None, {}, action="malformed", request_id=request_id, reason="header has no auth token")
    agent = ledger.agent_for_token(auth)
    action = _action_name(topic, body)
    if agent is None:
        return Answer(
            auth, {"error": "unknown token"}, action=action, request_id=request_id, reason="unknown token"
        )
    answer = Answer(auth, {}, action=action, agent=agent, request_id=request_id)
    try:
        if inject_error:
            answer.injected = True
            raise Refused(inject_error)
        answer.outcome = _dispatch(ledger, topic, agent, header, body, answer, page_cap, profile)
    except (Refused, LedgerError) as exc:
        answer.outcome = {"error": str(exc)}
    return answer


def _action_name(topic: str, body: Any) -> str:
    """What the request asks, for the log line (before it is validated)."""
    if topic in _BY_LIST_TOPIC:
        return "list"
    if not isinstance(body, dict):
        return "-"
    if topic in _BY_ANSWER_TOPIC:
        response = body.get("response")
        return {1: "accept", 0: "reject"}.get(response, "answer") if isinstance(response, int) else "answer"
    if topic in _BY_GET_TOPIC:
        return "get"
    return "create" if topic == wire.RECORD_TYPES else "-"


def _authenticated_error(
    ledger: Ledger, token: str, text: str, request_id: str | None, action: str
) -> Answer:
    agent = ledger.agent_for_token(token)
    if agent is None:
        text = "unknown token"
    return Answer(token, {"error": text}, action=action, agent=agent, request_id=request_id, reason=text)


def _dispatch(
    ledger: Ledger,
    topic: str,
    agent: str,
    header: dict[str, Any],
    body: Any,
    answer: Answer,
    page_cap: int | None = None,
    profile: Profile = PROFILES["sandbox"],
) -> dict[str, Any]:
    if topic in _BY_LIST_TOPIC:
        start, limit = _page(header, page_cap)
        if profile.ignore_start:
            start = 0
        return {"data": _BY_LIST_TOPIC[topic].list(ledger, agent_pk=agent, start=start, limit=limit)}
    if topic in _BY_ANSWER_TOPIC:
        kind = _BY_ANSWER_TOPIC[topic]
        body = _body(body, topic)
        response = body.get("response")
        item_id = check_item_id(body.get("id"), f"{kind.noun} id")
        with ledger.transaction():
            item = kind.answer(ledger, agent, item_id, response)
        return {"message": f"{kind.noun} {item_id} {item['status']}"}
    if topic in _BY_GET_TOPIC:
        key, lookup, noun = _BY_GET_TOPIC[topic]
        wanted = _body(body, topic).get(key)
        found = getattr(ledger, lookup)(wanted) if isinstance(wanted, str) else None
        if found is None:
            raise Refused(f"{noun} {_name(wanted)} not found")
        return {"data": found}
    if topic == wire.RECORD_TYPES:
        body = _body(body, topic)
        if _is_record(header, topic):
            raise Refused(
                f"a record type is created with isRecord false; records go on {wire.RECORDS}_<record type>"
            )
        name = body.get("name")
        if profile.refuse_recreation and isinstance(name, str) and ledger.record_type(name) is not None:
            raise Refused(f"record type {name} exists")
        with ledger.transaction():
            created = ledger.create_record_type(
                agent, name, body.get("properties"), _description(body.get("description"))
            )
        answer.new_record_type = name
        return {"message": f"record type {name} {'created' if created else 'exists with identical values'}"}
    if topic == wire.RECORDS:
        raise Refused(f"records travel on {wire.RECORDS}_<record type>, not on {wire.RECORDS}")
    record_type = wire.record_type_of(topic)
    if record_type is not None:
        body = _body(body, topic)
        record_id = body.get("record_id")
        if _is_record(header, topic):
            answer.action = "create"
            if (
                profile.refuse_recreation
                and isinstance(record_id, str)
                and ledger.record(record_id) is not None
            ):
                raise Refused(f"record {record_id} exists")
            return _create_record(ledger, agent, record_type, body)
        answer.action = "update"
        unknown = sorted(set(body) - {"record_id", "properties"})
        if unknown:
            raise Refused(
                f"an update holds record_id and properties only, not {', '.join(map(_name, unknown))}"
            )
        with ledger.transaction():
            ledger.update_record(agent, record_id, _property_values(body), record_type=record_type)
        return {"message": f"record {record_id} updated"}
    raise Refused(f"topic {topic} is not served")  # pragma: no cover - the server only reads known topics


def _is_record(header: dict[str, Any], topic: str) -> bool:
    flag = header.get("isRecord")
    if not isinstance(flag, bool):
        raise Refused(f"the header of a {topic} request needs isRecord: true (create a record) or false")
    return flag


def _property_values(body: dict[str, Any]) -> list[Any]:
    """The wire's property values: a list of ``{"name", "value"}`` (PROTOCOL.md 3.3), never an object."""
    properties = body.get("properties")
    if not isinstance(properties, list):
        raise Refused("properties must be a list of {name, value}")
    return properties


def _description(value: object) -> str:
    if not isinstance(value, str):
        raise Refused("a description (text) is required")
    return value


def _create_record(ledger: Ledger, agent: str, record_type: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create a record of the topic's *record_type*: non-dynamic -> ``message``; dynamic -> its
    reporter's ``data``."""
    record_id = body.get("record_id")
    if body.get("record_type") != record_type:
        raise Refused(
            f"record {_name(record_id)} is of record type {_name(body.get('record_type'))}, but this topic "
            f"serves record type {record_type}"
        )
    if ledger.record_type(record_type) is None:
        raise Refused(f"record type {record_type} not found: create it on {wire.RECORD_TYPES} first")
    dynamic = body.get("dynamic")
    password = body.get("password")
    if not isinstance(dynamic, bool):
        raise Refused("a record needs dynamic: true or false")
    if not isinstance(password, str):
        raise Refused('a record needs a password ("" for a non-dynamic record)')
    description = _description(body.get("description"))
    with ledger.transaction():
        if not dynamic:
            if password:
                raise Refused("a non-dynamic record has no reporter: its password must be empty")
            created = ledger.create_record(
                agent, record_id, record_type, _property_values(body), description=description
            )
            return {
                "message": f"record {record_id} created"
                if created
                else f"record {record_id} exists with identical values"
            }
        public_key, token = ledger.create_dynamic_record(
            agent, record_id, record_type, _property_values(body), password, description=description
        )
    return {"data": {"record_id": record_id, "public_key": public_key, "token": token}}


def _name(value: object) -> str:
    if isinstance(value, str):
        return value if len(value) <= 80 else value[:77] + "..."
    return f"<{type(value).__name__}>"


def _handle_agents(
    ledger: Ledger,
    header: dict[str, Any],
    body: Any,
    request_id: str | None,
    inject_error: str | None,
    limiter: AgentRateLimiter | None = None,
) -> Answer:
    named = header.get("public_key")
    # only a well-formed key is echoed or logged: the field may hold anything, a secret included
    public_key = named if isinstance(named, str) and PUBLIC_KEY_RE.fullmatch(named) else None
    answer = Answer(
        public_key or ANONYMOUS,
        {},
        request_id=request_id,
        agent=public_key,
        always_echo=True,
        extra_header={"public_key": public_key} if public_key else {},
    )
    try:
        body = _body(body, wire.AGENTS)
        answer.action = _action(body, wire.AGENTS, ("create", "token"))
        if limiter is not None:
            wait = limiter.wait_for(public_key if answer.action == "token" and public_key else "create")
            if wait:
                raise Refused(f"too many agent requests from this client: retry in {wait:.0f} s")
        if inject_error:
            answer.injected = True
            raise Refused(inject_error)
        if answer.action == "create":
            with ledger.transaction():
                public_key, token = ledger.create_agent(body.get("name"), body.get("password"))
            answer.outcome = {"data": {"public_key": public_key, "token": token}}
        else:
            if public_key is None:
                raise Refused("a token request needs the agent's public_key (66 hex) in its header")
            with ledger.transaction():
                token = ledger.issue_token(public_key, body.get("password"))
            answer.outcome = {"data": {"token": token}}
        # never the token: agent answers are matched by request_id, the token is only in data
        answer.auth = public_key
        answer.agent = public_key
        answer.extra_header = {"public_key": public_key}
    except (Refused, LedgerError) as exc:
        answer.outcome = {"error": str(exc)}
    return answer
