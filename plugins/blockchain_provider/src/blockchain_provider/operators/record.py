"""Operators for record types and records on the ledger (PROTOCOL.md 3.3).

A record type is created once per gateway: the MES remembers what it created, and a type it
remembers is not sent again. A gateway may refuse any second creation, so no flow relies on it
confirming one; reads (``BLK_Rty_Get``) are used only where the connection switches them on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk.exceptions import AirflowFailException

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainConfigError, BlockchainError, BlockchainGatewayError
from blockchain_provider.memory import RecordTypeMemory, RecordTypeMemorySource
from blockchain_provider.operators.base import (
    BaseBlockchainOperator,
    Done,
    Step,
    is_template,
    resolve_callable,
    seconds_argument,
)
from blockchain_provider.outcomes import Outcome, PendingRequest, gateway_refusal
from blockchain_provider.quoting import quote
from blockchain_provider.triggers.serial_requests import MAX_CONVERSATION

if TYPE_CHECKING:
    from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook


def _declared(properties: Any) -> set[tuple[Any, Any, bool]] | None:
    if not isinstance(properties, list) or not all(isinstance(p, dict) for p in properties):
        return None
    return {(p.get("name"), p.get("data_type"), bool(p.get("dynamic", False))) for p in properties}


def check_declaration(name: str, existing: Any, properties: list[dict[str, Any]]) -> None:
    """Refuse record type *name* as the ledger holds it (*existing*) unless it declares *properties*."""
    theirs = _declared(existing.get("properties") if isinstance(existing, dict) else None)
    if theirs == _declared(properties):
        return
    creator = existing.get("creator") or existing.get("owner") if isinstance(existing, dict) else None
    by = f" by agent {creator}" if isinstance(creator, str) and creator else " by another agent"
    shown = sorted(theirs, key=str) if theirs is not None else "unreadable properties"
    raise BlockchainConfigError(
        f"Record type {name} is already declared on the ledger{by} with other properties ({shown}); "
        "the MES will not write its records into it: use another record type name"
    )


def record_type_memory(source: RecordTypeMemorySource | None) -> RecordTypeMemory | None:
    """The memory *source* gives: itself, or what the callable (or dotted path) it is returns."""
    if source is None or hasattr(source, "created"):
        return source  # type: ignore[return-value]
    make = resolve_callable(source, "record_types")
    assert make is not None
    return make()


class EnsureRecordTypeOperator(BaseBlockchainOperator):
    """Create a record type (``BLK_Rty``) once per gateway (PROTOCOL.md 3.3).

    With *record_types* (the MES's memory of what it created), a type it remembers on this
    gateway is not sent again, and a type it creates is remembered. A refusal of a type it does
    not remember (a restored MES database, another MES) is taken as "it exists": remembered, and
    logged as a warning. Only where the connection switches reads on (``reads``) is the type then
    read (``BLK_Rty_Get``): the same properties (another description, another agent) are used as
    they are, other properties fail the task, and no answer to the read raises the refusal.

    :param name: the record type's name; templated.
    :param description: what its records hold.
    :param properties: ``{"name", "data_type", "dynamic"}`` objects.
    :param record_types: the memory of the record types created on each gateway
        (:class:`~blockchain_provider.memory.RecordTypeMemory`), or a callable or a dotted path to a
        callable that returns it when the task runs; defaults to None (nothing remembered: the type
        is sent on every run).
    """

    template_fields = (*BaseBlockchainOperator.template_fields, "name")

    def __init__(
        self,
        *,
        name: str,
        description: str,
        properties: list[dict[str, Any]],
        record_types: RecordTypeMemorySource | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.description = description
        self.properties = properties
        protocol.record_type_create_call(name if not is_template(name) else "x", description, properties)
        if isinstance(record_types, str):
            resolve_callable(record_types, "record_types")
        self.record_types = record_types

    def _memory(self) -> RecordTypeMemory | None:
        return record_type_memory(self.record_types)

    def first_step(self, context: Mapping[str, Any]) -> Step | Done:
        memory = self._memory()
        if memory is not None and memory.created(self.hook.gateway_id, self.name):
            self.log.info("Record type %s was created on this gateway already: nothing sent", self.name)
            return Done(f"{self.name} created earlier")
        return Step(protocol.record_type_create_call(self.name, self.description, self.properties))

    def _remember(self) -> None:
        memory = self._memory()
        if memory is not None:
            memory.remember(self.hook.gateway_id, self.name)

    def answered(self, context: Mapping[str, Any], state: dict[str, Any], outcome: Outcome) -> Done:
        if "refusal" not in state:
            self.log.info("Record type %s: %s", self.name, quote(outcome.value))
            self._remember()
            return Done(outcome.value)
        existing = outcome.value
        if not isinstance(existing, dict):
            self._unread(state, existing)
        check_declaration(self.name, existing, self.properties)
        self.log.info("Record type %s exists on the ledger with the same properties: using it", self.name)
        self._remember()
        return Done(f"{self.name} exists with the same properties")

    def refused(
        self, context: Mapping[str, Any], state: dict[str, Any], error: BlockchainError
    ) -> Step | Done:
        if "refusal" in state:
            self._unread(state, error)
        if not isinstance(error, BlockchainGatewayError):
            raise error
        if not self.hook.settings.reads:
            self.log.warning(
                "The gateway refused to create record type %s (%s), which the MES has no memory of "
                "creating: taken as existing and remembered. Its properties cannot be compared "
                "without reads (the connection's 'reads' field).",
                self.name,
                error.gateway_text,
            )
            self._remember()
            return Done(f"{self.name} exists (refused as a new type: {error.gateway_text})")
        refusal = {"text": error.gateway_text, "topic": error.topic, "request_id": error.request_id}
        return Step(protocol.record_type_get_call(self.name), {"refusal": refusal}, optional=True)

    def _unread(self, state: dict[str, Any], what: object) -> NoReturn:
        """The ledger's record type could not be read (*what*: the error, or an answer that is not
        one): the task fails with the creation's refusal."""
        self.log.warning("Could not read record type %s (BLK_Rty_Get): %s", self.name, quote(what))
        refusal = state["refusal"]
        raise gateway_refusal(refusal["topic"], refusal["request_id"], refusal["text"])


def record_type_steps(
    hook: KafkaBlockchainHook,
    name: str,
    description: str,
    properties: list[dict[str, Any]],
    record_types: RecordTypeMemorySource | None = None,
) -> EnsureRecordTypeOperator:
    """:class:`EnsureRecordTypeOperator`'s steps for record type *name*, to run with *hook* (the same
    gateway, connections and clients) inside another task."""
    ensure = EnsureRecordTypeOperator(
        task_id="ensure_record_type",
        name=name,
        description=description,
        properties=properties,
        record_types=record_types,
        kafka_config_id=hook.kafka_config_id,
        token_conn_id=hook.token_conn_id,
    )
    ensure.hook = hook  # type: ignore[misc]
    return ensure


class CreateRecordOperator(BaseBlockchainOperator):
    """Create a non-dynamic record on ``BLK_Rec_<record type>``; an identical one is confirmed.

    :param record_id: the record's id; templated.
    :param record_type: its record type's name.
    :param description: the record's description; templated.
    :param properties: property name -> value (one element for a day-report indicator); templated.
    """

    template_fields = (*BaseBlockchainOperator.template_fields, "record_id", "description", "properties")

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


RecordSpec = Mapping[str, Any]


class CreateRecordsOperator(BaseBlockchainOperator):
    """Create many non-dynamic records of one record type; those already written are skipped.

    The records come from *records* when the task runs, so a retry or a rerun asks again and
    sends only what is still missing. With request_id echo the requests are pipelined; without,
    they go one by one (one request per token in flight).

    Deferrable: the answers that come within *defer_after* seconds are taken in the worker, and
    the rest is handed to the triggerer, so a request the gateway is slow to answer holds no
    worker slot. With echo, one trigger waits for the whole batch. Without, the first record not
    answered in time hands the conversation to the triggerer
    (:meth:`~.base.BaseBlockchainOperator.defer_conversation`): it sends each of the next records
    (up to :data:`~blockchain_provider.triggers.serial_requests.MAX_CONVERSATION` in all) when the
    answer before it comes, and the task resumes once to note them, not once per record. A gateway
    answers a record in milliseconds, or a second when it commits a block; a task resume costs
    seconds.

    Returns ``{"written", "already_done"}`` counts. A refusal fails the task, without retries,
    after every record that could be written is written and reported to *on_written*. A request
    with no answer by its deadline fails the try (a retry sends what is still missing).

    :param record_type: the records' type (it names the topic).
    :param records: a callable (or dotted path to one) given the task's context and
        *records_kwargs*; it returns
        ``{"record_id", "description", "properties"}`` dicts, the records still to write, and
        may report how many are done already as ``already_done`` in an optional second value
        (``(records, already_done)``). A deferred task calls it again when it resumes.
    :param on_written: called with the ids written and the task's context (e.g. to note them in
        a database), a callable or a dotted path to one; defaults to None.
    :param records_kwargs: keyword arguments for *records* and *on_written* (a report's id), the
        argument to map over for one task per batch; templated. Defaults to None.
    :param defer_after: when deferrable, seconds to wait in the worker for the answers before
        handing the wait to the triggerer; defaults to 1. ``0`` defers every wait.
    """

    template_fields = (*BaseBlockchainOperator.template_fields, "records_kwargs")

    def __init__(
        self,
        *,
        record_type: str,
        records: str | Callable[..., Any],
        on_written: str | Callable[..., Any] | None = None,
        records_kwargs: Mapping[str, Any] | None = None,
        defer_after: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.records_kwargs = records_kwargs
        protocol.record_topic(record_type)
        self.record_type = record_type
        resolve_callable(records, "records")
        resolve_callable(on_written, "on_written")
        self.records = records
        self.on_written = on_written
        self.defer_after = seconds_argument("defer_after", defer_after)

    def _produce(self, context: Mapping[str, Any]) -> tuple[list[RecordSpec], int]:
        produce = resolve_callable(self.records, "records")
        assert produce is not None
        produced = produce(context, **dict(self.records_kwargs or {}))
        specs, already_done = produced if isinstance(produced, tuple) else (produced, 0)
        return list(specs), int(already_done)

    def _call(self, spec: RecordSpec) -> protocol.Call:
        return protocol.record_create_call(
            spec["record_id"], self.record_type, spec["description"], spec["properties"]
        )

    def execute(self, context: Mapping[str, Any]) -> dict[str, int]:
        specs, already_done = self._produce(context)
        state: dict[str, Any] = {"already_done": already_done, "written": 0, "done": [], "refused": {}}
        if self.deferrable:
            return self._send(context, specs, state)
        try:
            outcomes = self.hook.client.call_many([self._call(spec) for spec in specs]) if specs else []
        finally:
            self.hook.close()
        self._settle(
            context, state, [(spec["record_id"], o) for spec, o in zip(specs, outcomes, strict=True)]
        )
        return self._finish(state)

    def _send(
        self, context: Mapping[str, Any], specs: list[RecordSpec], state: dict[str, Any]
    ) -> dict[str, int]:
        """Send *specs*, all at once with echo, else one by one; settle the answers that come within
        *defer_after*, and defer when some have not come by then."""
        hook = self.hook
        try:
            while specs:
                window, specs = (specs, []) if hook.settings.echo_request_id else (specs[:1], specs[1:])
                results = hook.client.send_batch([self._call(spec) for spec in window], wait=self.defer_after)
                answered = [
                    (spec["record_id"], result)
                    for spec, result in zip(window, results, strict=True)
                    if not isinstance(result, PendingRequest)
                ]
                self._settle(context, state, answered)
                pending = [
                    (spec["record_id"], result)
                    for spec, result in zip(window, results, strict=True)
                    if isinstance(result, PendingRequest)
                ]
                if pending and hook.settings.echo_request_id:
                    self._defer_batch(state, pending)
                if pending:
                    # one at a time: the triggerer sends the next records as the answers come
                    conversation = [*window, *specs][:MAX_CONVERSATION]
                    resume = {"state": state, "pending": [spec["record_id"] for spec in conversation]}
                    self.defer_conversation(
                        [self._call(spec) for spec in conversation], pending[0][1], resume
                    )
        finally:
            hook.close()
        return self._finish(state)

    def _defer_batch(self, state: dict[str, Any], pending: list[tuple[str, PendingRequest]]) -> None:
        resume = {"state": state, "pending": [record_id for record_id, _ in pending]}
        self.defer_for_answers([request for _, request in pending], resume)

    def execute_complete(
        self, context: Mapping[str, Any], event: dict[str, Any] | None = None, **_: Any
    ) -> dict[str, int]:
        """Resume after the triggerer's batch of answers: settle them, then send what is left."""
        resume, answers = self.answers_from(event)
        state, record_ids = resume["state"], resume["pending"]
        if len(answers) > len(record_ids):
            raise BlockchainConfigError(
                f"The triggerer answered {len(answers)} requests for {len(record_ids)} records sent"
            )
        # a conversation that ended at a timeout has no answer for the records after it: unsent
        self._settle(context, state, list(zip(record_ids, answers, strict=False)))
        done = set(state["done"])
        specs, _ = self._produce(context)
        return self._send(context, [spec for spec in specs if spec["record_id"] not in done], state)

    def _settle(
        self, context: Mapping[str, Any], state: dict[str, Any], answers: list[tuple[str, Any]]
    ) -> None:
        """Count the written and refused records of *answers* in *state* and report the written
        ones to *on_written*; then raise the first error that is neither (a timeout)."""
        written = [record_id for record_id, outcome in answers if isinstance(outcome, Outcome)]
        notify = resolve_callable(self.on_written, "on_written")
        if written and notify is not None:
            notify(written, context, **dict(self.records_kwargs or {}))
        state["written"] += len(written)
        state["done"].extend(written)
        for record_id, outcome in answers:
            if isinstance(outcome, BlockchainGatewayError):
                state["refused"][record_id] = outcome.gateway_text
                state["done"].append(record_id)
        failed = next((o for _, o in answers if not isinstance(o, (Outcome, BlockchainGatewayError))), None)
        if failed is not None:
            raise failed

    def _finish(self, state: dict[str, Any]) -> dict[str, int]:
        refused: dict[str, str] = state["refused"]
        self.log.info(
            "%s: %d record(s) written, %d already on the ledger, %d refused",
            self.record_type,
            state["written"],
            state["already_done"],
            len(refused),
        )
        if refused:
            details = "; ".join(f"{rid}: {text}" for rid, text in list(refused.items())[:5])
            # the gateway's rules refuse these values: sending them again changes nothing
            raise AirflowFailException(f"The gateway refused {len(refused)} record(s): {details}")
        return {"written": state["written"], "already_done": state["already_done"]}


class UpdateRecordOperator(BaseBlockchainOperator):
    """Update dynamic properties of a record on ``BLK_Rec_<record type>``.

    The update is signed with the token of ``token_conn_id``: give it the record's reporter's
    token connection.

    :param record_type: the record's type (it names the topic).
    :param record_id: the record's id; templated.
    :param properties: property name -> value; templated.
    """

    template_fields = (*BaseBlockchainOperator.template_fields, "record_id", "properties")

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
