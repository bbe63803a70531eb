"""Update a dynamic record as its own reporter (PROTOCOL.md 3.3), creating both on first use.

A dynamic record is created with a password; the gateway answers with the record's reporter
agent (public key and token), and only that reporter may update the record. Where the reporter's
credentials are kept is the caller's: a :class:`ReporterStore` (the MES database, for the
production units).

When a record's updates may be triggered faster than they are applied, and must be applied in
the order they were made, the caller keeps them in a queue of its own (an :class:`UpdateQueue`)
and the operator claims it: the pending updates, in order, under a lock the caller holds, each
with callbacks that note it applied. The operator knows nothing of where the queue or the lock
lives, and ends each claim itself: it keeps the lock when the task goes on later (it deferred to
the triggerer, or hands on to the run's next task) and lets go of it otherwise. A claim that
finds the queue held by another task raises :class:`QueueBusy`, so the task looks again a little
later from the triggerer instead of waiting in a worker slot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from airflow.sdk.log import mask_secret

from blockchain_provider import protocol
from blockchain_provider.exceptions import (
    BlockchainConfigError,
    BlockchainError,
    BlockchainGatewayError,
    InvalidIdentifierError,
    MalformedResponseError,
)
from blockchain_provider.hooks.gateway_client import PendingRequest
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from blockchain_provider.memory import RecordTypeMemorySource
from blockchain_provider.operators.base import BaseBlockchainOperator, Done, is_template, resolve_callable
from blockchain_provider.operators.record import EnsureRecordTypeOperator
from blockchain_provider.outcomes import Outcome
from blockchain_provider.quoting import quote
from blockchain_provider.triggers import events

#: Seconds a retry waits for the optional read of its record (a gateway without ``BLK_Rec_Get``
#: never answers it, and the token's pool slot is held meanwhile).
RETRY_READ_TIMEOUT = 10.0


class QueueBusy(Exception):
    """A claim found the record's queue held by another task; the message says which.

    A deferrable :class:`UpdateDynamicRecordOperator` looks again after ``queue_retry`` seconds,
    waiting in the triggerer; a blocking one fails its try.
    """


class ReporterStore(Protocol):
    """Where the reporters of dynamic records are kept, by record id.

    A store may also say where the triggerer reads a reporter's token, so that a deferred task's
    update waits there: ``token_source(record_id)`` returning a dotted path to a function and its
    keyword arguments (ids, no secret), or ``None``. Without it, updates wait in the worker.
    """

    def token(self, record_id: str) -> str | None:
        """The reporter's token, or ``None`` while the record has no reporter."""

    def prepare(self, record_id: str, topic: str, password: str) -> str:
        """Keep *password* for the record's reporter unless one is kept already, and return the kept
        one. It is stored before the record is created, so a rerun after a lost answer sends the
        same password (the gateway then answers the same reporter with a fresh token)."""

    def store(self, record_id: str, public_key: str, token: str) -> None:
        """Keep what the gateway answered for the record's reporter."""


@dataclass
class DynamicRecordUpdate:
    """One update of a dynamic record, and what creating the record takes the first time.

    :param record_id: the record's id.
    :param description: its description, used when it is created.
    :param properties: its properties when created (dynamic ones with their first value).
    :param updates: the dynamic properties to set now.
    :param store: where its reporter is kept.
    :param summary: small facts for the task's result (a unit's code), no secret.
    """

    record_id: str
    description: str
    properties: Mapping[str, Any]
    updates: Mapping[str, Any]
    store: ReporterStore = field(repr=False)
    summary: Mapping[str, Any] = field(default_factory=dict)


def _nothing(*_args: Any) -> None:
    return None


@dataclass
class PendingUpdate:
    """One update of a caller's queue, to apply now: the update and how to note what became of it.

    Each note must be durable (committed) when the callback returns: a later claim must see it,
    even if the worker dies right after.

    :param update: the update to make.
    :param key: names it in logs and in the task's result (e.g. ``"change 12"``), no secret.
    :param own: it is the update the task was started for; default ``False``.
    :param maybe_sent: an earlier attempt may have sent it without noting the answer, so the record
        is read first (``BLK_Rec_Get``) and nothing is sent if it already holds the values;
        default ``False``.
    :param mark_sending: called just before the update is sent; default does nothing.
    :param mark_applied: called with the gateway's confirmation (or ``"already up to date"``) once
        the record holds the update; default does nothing.
    :param mark_refused: called with the reason when the update can never be applied (a value the
        ledger's rules refuse); default does nothing.
    """

    update: DynamicRecordUpdate
    key: str
    own: bool = False
    maybe_sent: bool = False
    mark_sending: Callable[[], None] = field(default=_nothing, repr=False)
    mark_applied: Callable[[str], None] = field(default=_nothing, repr=False)
    mark_refused: Callable[[str], None] = field(default=_nothing, repr=False)


@dataclass
class ClaimedUpdates:
    """What a claim on a record's queue gives the operator, while the caller's lock is held.

    The operator ends every claim once, with :attr:`keep` or :attr:`release`.

    :param pending: the updates to apply, in order; the task's own among them unless it was
        applied already (then the list is usually empty).
    :param applied_by: when the task's own update was applied before this claim, who applied it
        (e.g. another run's id), for the task's result; default ``None``.
    :param summary: small facts for the task's result (a unit's code), no secret; default empty.
    :param keep: called with the seconds the task may be away when the claim goes on later, in
        another process (the task deferred, or a task of part ``"create"`` hands the claim to the
        run's update task, with 0): the lock must outlast them; default does nothing.
    :param release: called when the try ends otherwise, however it ends: the lock goes; default
        does nothing.
    """

    pending: Sequence[PendingUpdate]
    applied_by: str | None = None
    summary: Mapping[str, Any] = field(default_factory=dict)
    keep: Callable[[float], None] = field(default=_nothing, repr=False)
    release: Callable[[], None] = field(default=_nothing, repr=False)


class UpdateQueue(Protocol):
    """A record's queue of updates, kept by the caller and serialised by a lock the caller holds.

    :class:`UpdateDynamicRecordOperator` claims it each time its task starts or resumes, and calls
    :meth:`failed` when a try fails for good.
    """

    def claim(self, context: Mapping[str, Any]) -> ClaimedUpdates:
        """Take the queue's lock for the task's run, and give the updates pending up to the task's own.

        :raises QueueBusy: another task holds the lock.
        """

    def failed(self, context: Mapping[str, Any], failure: BaseException) -> None:
        """The task failed for good (its last try, or a failure no retry can fix), claimed or not:
        note what becomes of its own update (the queue's later claims then pass it by)."""


def ensure_record_type(
    hook: KafkaBlockchainHook,
    name: str,
    description: str,
    properties: list[dict[str, Any]],
    record_types: RecordTypeMemorySource | None = None,
) -> None:
    """Create record type *name* unless *record_types* remembers it; a refusal is taken as "it
    exists" (read and compared where reads are on).

    :class:`~blockchain_provider.operators.record.EnsureRecordTypeOperator`'s steps, run with
    *hook* inside another task.
    """
    ensure = EnsureRecordTypeOperator(
        task_id="ensure_record_type",
        name=name,
        description=description,
        properties=properties,
        record_types=record_types,
        kafka_config_id=hook.kafka_config_id,
        token_conn_id=hook.token_conn_id,
    )
    ensure.hook = hook  # type: ignore[misc]  # the same gateway, connections and clients
    first = ensure.first_step({})
    if not isinstance(first, Done):
        ensure.run_steps({}, first, hook)


#: What an :class:`UpdateDynamicRecordOperator` does: everything, only what the master signs
#: (the record type, the record and its reporter), or only what the reporter signs (the updates).
PARTS = ("all", "create", "update")


class UpdateDynamicRecordOperator(BaseBlockchainOperator):
    """Set dynamic properties of a record, signed with its reporter's token.

    In order: the record type is ensured (created unless *record_types* remembers it on this
    gateway, as :class:`~blockchain_provider.operators.record.EnsureRecordTypeOperator` does); on
    the record's first update the record and its reporter are created with the password the store
    prepares, and the reporter's public key and token are stored; then the update is sent as the
    reporter. The master token (``token_conn_id``) only creates.

    A retry, where the connection switches reads on (``reads``), first reads the record (the
    optional ``BLK_Rec_Get``, :data:`RETRY_READ_TIMEOUT` at most): values already there mean the
    earlier try was applied, and nothing is sent. This narrows the window for a twice-recorded
    update, it does not close it (a gateway that has not applied the lost try yet gets the update
    again). Without reads (the default: the original gateway has none) the retry cannot know
    whether the lost try was applied: it sends the update again, which sets the same values (the
    record ends as the MES has it) and may add a second transaction of them to the ledger; an
    update refused meanwhile is refused again, not lost.

    Deferrable: each request is sent from the worker, and an answer that has not come within
    *defer_after* seconds is awaited in the triggerer; the task resumes with it and goes on. An
    update waits there when the store says where the triggerer reads the reporter's token
    (:class:`ReporterStore`), else in the worker. The creation of a record and its reporter always
    waits in the worker: its answer holds the reporter's token, which no event may carry.

    The master's requests and the reporter's may run in tasks of their own (*part*), each in its
    token's pool: a task of part ``"create"`` sends only what the master signs and hands the claim
    on (:attr:`ClaimedUpdates.keep`); one of part ``"update"`` sends only what the reporters sign,
    and fails when the record has no reporter yet.

    Returns the record id, the gateway's confirmation, the values set and the update's summary.

    The update is given as plain values (*record_id*, *description*, *properties*, *updates* and
    the *reporters* store), or as a *queue* the caller keeps (:class:`UpdateQueue`), whose
    pending updates are applied in order under the caller's lock.

    Returns the record id, the gateway's confirmation, the values set and the update's summary.

    :param record_type: the record type's name (it names the topic).
    :param record_type_description: what the record type's records hold.
    :param record_type_properties: its ``{"name", "data_type", "dynamic"}`` objects.
    :param record_id: the record's id; templated.
    :param description: its description, used when it is created; templated.
    :param properties: its properties when created (dynamic ones with their first value); templated.
    :param updates: the dynamic properties to set; templated.
    :param reporters: where the record's reporter is kept (:class:`ReporterStore`).
    :param queue: instead of the five above, the caller's queue of updates (:class:`UpdateQueue`).
    :param defer_after: when deferrable, seconds to wait in the worker for an answer before
        handing the wait to the triggerer; defaults to 1. ``0`` defers every wait.
    :param part: ``"all"`` (the default), ``"create"`` or ``"update"``: see above.
    :param queue_retry: seconds a deferrable task waits in the triggerer before it claims a busy
        queue again; defaults to 2.
    :param record_types: the MES's memory of the record types it created on each gateway, as
        :class:`~blockchain_provider.operators.record.EnsureRecordTypeOperator` takes it: a type
        remembered is not sent again. Defaults to None (the type is sent on each task's first
        update).
    """

    template_fields = (
        *BaseBlockchainOperator.template_fields,
        "record_id",
        "description",
        "properties",
        "updates",
    )

    def __init__(
        self,
        *,
        record_type: str,
        record_type_description: str,
        record_type_properties: list[dict[str, Any]],
        record_id: str | None = None,
        description: str = "",
        properties: Mapping[str, Any] | None = None,
        updates: Mapping[str, Any] | None = None,
        reporters: ReporterStore | None = None,
        queue: UpdateQueue | None = None,
        defer_after: float = 1.0,
        queue_retry: float = 2.0,
        record_types: RecordTypeMemorySource | None = None,
        part: str = "all",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if part not in PARTS:
            raise BlockchainConfigError(f"part must be one of {', '.join(PARTS)}, not {part!r}")
        self.part = part
        protocol.record_type_create_call(record_type, record_type_description, record_type_properties)
        if isinstance(record_types, str):
            resolve_callable(record_types, "record_types")
        self.record_types = record_types
        self.record_type = record_type
        self.record_type_description = record_type_description
        self.record_type_properties = record_type_properties
        plain = {"record_id": record_id, "updates": updates, "reporters": reporters}
        if queue is None and None in plain.values():
            missing = ", ".join(name for name, value in plain.items() if value is None)
            raise BlockchainConfigError(f"Give the update ({missing} missing), or a queue")
        if queue is not None and any(
            value is not None for value in (record_id, properties, updates, reporters)
        ):
            raise BlockchainConfigError("Give either the update's values or a queue, not both")
        if queue is not None and not (
            callable(getattr(queue, "claim", None)) and callable(getattr(queue, "failed", None))
        ):
            raise BlockchainConfigError(
                f"queue must have claim() and failed() (an UpdateQueue), not {queue!r:.80}"
            )
        if record_id is not None and not is_template(record_id):
            protocol.validate_name(record_id, "record id")
        self.record_id = record_id
        self.description = description
        self.properties = properties if properties is not None else {}
        self.updates = updates
        self.reporters = reporters
        self.queue = queue
        for name, value in (("defer_after", defer_after), ("queue_retry", queue_retry)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise BlockchainConfigError(f"{name} must be a number of seconds >= 0, not {value!r}")
        self.defer_after = float(defer_after)
        self.queue_retry = float(queue_retry)

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any]:
        return self._run(context, {}, None)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        """Resume after the triggerer. When the wait itself failed (the trigger failed, or the
        deferral timed out), the claim the task kept is let go of, and a failure for good is noted."""
        from airflow.sdk.exceptions import TaskDeferralError, TaskDeferralTimeout

        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except (TaskDeferralError, TaskDeferralTimeout) as failure:
            if self.queue is not None:
                self._end_claim(context, failure)
            raise

    def _end_claim(self, context: Mapping[str, Any], failure: BaseException) -> None:
        """Let go of the claim the task kept while it was away, after *failure* ended its wait."""
        try:
            self.queue.claim(context).release()  # type: ignore[union-attr]
        except Exception as exc:  # the lock may be another run's by now: nothing of this try to let go of
            self.log.warning("The record's queue could not be claimed to let go of it: %s", exc)
        self._note_failure(context, failure)

    def _note_failure(self, context: Mapping[str, Any], failure: BaseException) -> None:
        """Tell the queue of a failure no retry follows (the last try, or one that no retry fixes)."""
        ti = context.get("ti")
        last_try = ti is not None and getattr(ti, "try_number", 1) > getattr(ti, "max_tries", 0)
        if isinstance(failure, AirflowFailException) or last_try:
            self.queue.failed(context, failure)  # type: ignore[union-attr]

    def execute_complete(self, context: Mapping[str, Any], event: Any = None, **_: Any) -> dict[str, Any]:
        """Resume after the triggerer: with the answer a deferred request waited for, or after the
        pause of a busy queue (then the task claims again)."""
        if isinstance(event, Mapping) and event.get("status") == events.BATCH:
            resume, (answer,) = self.answers_from(event)
            state = dict(resume.get("state") or {})
            return self._run(context, state, (state.pop("asking", None), answer))
        return self._run(context, {}, None)

    def _run(
        self, context: Mapping[str, Any], state: dict[str, Any], answer: tuple[str | None, Any] | None
    ) -> dict[str, Any]:
        if self.queue is None:
            return self._run_plain(context, state, answer)
        try:
            claimed = self.queue.claim(context)
        except QueueBusy as exc:
            if not self.deferrable:
                self._note_failure(context, exc)
                raise
            self.log.info(
                "%s: claiming again in %g s, meanwhile waiting in the triggerer", exc, self.queue_retry
            )
            self.defer(
                trigger=TimeDeltaTrigger(timedelta(seconds=self.queue_retry)), method_name="execute_complete"
            )
        except Exception as exc:
            self._note_failure(context, exc)
            raise
        try:
            result = self._apply(claimed, context, state, answer)
        except TaskDeferred as deferred:
            # the task goes on when the triggerer has the answer: the lock lasts the wait out
            claimed.keep(deferred.timeout.total_seconds() if deferred.timeout is not None else 0.0)
            raise
        except BaseException as exc:
            claimed.release()
            if isinstance(exc, Exception):
                self._note_failure(context, exc)
            raise
        if self.part == "create" and claimed.pending:
            # the run's update task goes on with the claim
            claimed.keep(0.0)
        else:
            claimed.release()
        return result

    def _run_plain(
        self, context: Mapping[str, Any], state: dict[str, Any], answer: tuple[str | None, Any] | None
    ) -> dict[str, Any]:
        update = DynamicRecordUpdate(
            record_id=str(self.record_id),
            description=self.description,
            properties=dict(self.properties),
            updates=dict(self.updates or {}),
            store=self.reporters,  # type: ignore[arg-type]
        )
        try:
            protocol.record_update_call(self.record_type, update.record_id, update.updates)
        except InvalidIdentifierError as exc:
            # a value the ledger's rules refuse: a retry would fail alike
            raise AirflowFailException(str(exc)) from None
        single = ClaimedUpdates(pending=[PendingUpdate(update=update, key="update", own=True)])
        result = self._apply(single, context, state, answer)
        result.pop("applied", None)
        return result

    def _apply(
        self,
        claimed: ClaimedUpdates,
        context: Mapping[str, Any],
        state: dict[str, Any],
        answer: tuple[str | None, Any] | None,
    ) -> dict[str, Any]:
        """Apply a claim's pending updates in order, noting each applied as soon as the record holds it.

        An update whose values the ledger's rules refuse is noted refused and skipped; if it is the
        task's own, the task then fails without retries. Any other error stops the claim where it
        is (the updates before it stay noted applied) and fails the try. The first update of a retry
        and any update that may have been sent (``maybe_sent``) are read first (``BLK_Rec_Get``,
        :data:`RETRY_READ_TIMEOUT` at most): values already there are noted applied, not sent again.

        Returns the record id, the task's own values and confirmation (or who applied them), and the
        keys of the updates this task applied.

        :param claimed: what the caller's claim gives, while its lock is held.
        :param state: what this task did before it deferred (empty on a first run).
        :param answer: the key of the request it deferred on, and what became of it.
        """
        ti = context.get("ti")
        retry = ti is not None and getattr(ti, "try_number", 1) > 1
        state.setdefault("applied", [])
        result: dict[str, Any] = {**claimed.summary, "applied": state["applied"]}
        if claimed.applied_by is not None:
            result["message"] = f"applied by {claimed.applied_by}"
        if not claimed.pending:
            if state.get("refused_own"):
                raise AirflowFailException(state["refused_own"])
            self.log.info("Nothing left to apply: %s", result.get("message", "no pending update"))
            return result
        hook = self.hook
        try:
            if not state.get("ensured") and self.part != "update":
                self._ensure_record_type(hook, context, state, answer)
                state["ensured"] = True
            if self.part == "create":
                for record_id, update in {
                    item.update.record_id: item.update for item in claimed.pending
                }.items():
                    self._reporter_token(hook, update)
                    result.setdefault("created", []).append(record_id)
                return result
            for index, item in enumerate(claimed.pending):
                update = item.update
                if item.own:
                    result.update({"record_id": update.record_id, **update.summary, **update.updates})
                try:
                    call = protocol.record_update_call(self.record_type, update.record_id, update.updates)
                except InvalidIdentifierError as exc:
                    item.mark_refused(str(exc))
                    self.log.warning("%s refused for good: %s", item.key, exc)
                    if item.own:
                        state["refused_own"] = str(exc)
                    continue
                token = self._reporter_token(hook, update)
                source = getattr(update.store, "token_source", None)
                token_source = source(update.record_id) if callable(source) else None
                outcome = _answer_for(answer, f"update {item.key}")
                if outcome is None:
                    read_first = item.maybe_sent or (retry and index == 0)
                    if read_first and self._record_holds(hook, update, state, answer, item.key):
                        outcome = "already up to date"
                        self.log.info(
                            "%s: %s already holds %s", item.key, update.record_id, dict(update.updates)
                        )
                    else:
                        item.mark_sending()
                        outcome = self._ask(hook, f"update {item.key}", call, state, token, token_source)
                if isinstance(outcome, BlockchainGatewayError):
                    # refused: sending it again changes nothing, and kept pending it would
                    # stand before every later update of the record
                    item.mark_refused(outcome.gateway_text)
                    self.log.warning("%s refused by the gateway: %s", item.key, outcome.gateway_text)
                    if item.own:
                        state["refused_own"] = str(outcome)
                    continue
                if isinstance(outcome, BaseException):
                    raise outcome
                message = outcome if isinstance(outcome, str) else outcome.value
                if isinstance(outcome, Outcome):
                    self.log.info(
                        "%s: updated %s as its reporter: %s", item.key, update.record_id, dict(update.updates)
                    )
                item.mark_applied(message)
                state["applied"].append(item.key)
                if item.own:
                    result["message"] = message
        finally:
            hook.close()
        if state.get("refused_own"):
            raise AirflowFailException(state["refused_own"])
        return result

    def _ask(
        self,
        hook: KafkaBlockchainHook,
        key: str,
        call: protocol.Call,
        state: dict[str, Any],
        token: str | None = None,
        token_source: tuple[str, dict[str, Any]] | None = None,
        timeout: float | None = None,
    ) -> Outcome | BlockchainError:
        """Make *call* (signed with *token*, the connection's when ``None``) and return its answer
        or the gateway's refusal. Deferrable, an answer not come within *defer_after* defers the
        task (resumed with *state*, and the answer under *key*), unless the triggerer could not read
        the token (a reporter's without *token_source*)."""
        if not self.deferrable or (token is not None and token_source is None):
            try:
                return hook.client.call(call, token=token, timeout=timeout)
            except BlockchainGatewayError as exc:
                return exc
        (result,) = hook.client.send_batch([call], timeout=timeout, wait=self.defer_after, token=token)
        if not isinstance(result, PendingRequest):
            return result
        self.log.info("%s: sent, its answer awaited in the triggerer", key)
        self.defer_for_answers([result], {"state": {**state, "asking": key}}, token_source)

    def _ensure_record_type(
        self,
        hook: KafkaBlockchainHook,
        context: Mapping[str, Any],
        state: dict[str, Any],
        answer: tuple[str | None, Any] | None,
    ) -> None:
        """Create the record type unless remembered, or take it as existing
        (:class:`~blockchain_provider.operators.record.EnsureRecordTypeOperator`'s steps)."""
        ensure = EnsureRecordTypeOperator(
            task_id="ensure_record_type",
            name=self.record_type,
            description=self.record_type_description,
            properties=self.record_type_properties,
            record_types=self.record_types,
            kafka_config_id=self.kafka_config_id,
            token_conn_id=self.token_conn_id,
        )
        ensure.hook = hook  # type: ignore[misc]  # the same gateway, connections and clients
        first = ensure.first_step({})
        if isinstance(first, Done):
            return
        outcome = _answer_for(answer, "ensure record type")
        if outcome is None:
            outcome = self._ask(hook, "ensure record type", first.call, state)
        if isinstance(outcome, Outcome):
            following = ensure.next_step({}, first.state, outcome, None)
        elif isinstance(outcome, BlockchainGatewayError):
            following = ensure.next_step({}, first.state, None, outcome)
        else:
            raise outcome
        if not isinstance(following, Done):
            # refused: the rare read of what the ledger holds waits in the worker
            ensure.run_steps({}, following, hook)

    def _reporter_token(self, hook: KafkaBlockchainHook, update: DynamicRecordUpdate) -> str:
        token = update.store.token(update.record_id)
        if token is not None:
            mask_secret(token)
            return token
        if self.part == "update":
            # the master's request belongs in the master's pool: a task of part "create" makes it
            raise AirflowFailException(
                f"Record {update.record_id} has no reporter yet, and this task only updates (part "
                "'update'): its creation must run first"
            )
        topic = hook.settings.topics[protocol.record_topic(self.record_type)]
        password = update.store.prepare(update.record_id, topic, protocol.new_password())
        mask_secret(password)
        try:
            created = hook.create_dynamic_record(
                update.record_id, self.record_type, update.description, update.properties, password
            )
        except MalformedResponseError as exc:
            # the gateway made the record without a reporter we can use: no retry can change that
            raise AirflowFailException(str(exc)) from None
        update.store.store(update.record_id, created.public_key, created.token)
        self.log.info("Created record %s and its reporter %s", update.record_id, created.public_key)
        return created.token

    def _record_holds(
        self,
        hook: KafkaBlockchainHook,
        update: DynamicRecordUpdate,
        state: dict[str, Any],
        answer: tuple[str | None, Any] | None,
        key: str,
    ) -> bool:
        """Whether the record holds the update's values already (the optional ``BLK_Rec_Get``); an
        unanswered or refused read counts as no, and so does a gateway without reads."""
        if not hook.settings.reads:
            self.log.info(
                "%s may have been sent by an earlier try; without reads (the connection's 'reads' "
                "field) it cannot be checked, so it is sent again with the same values",
                key,
            )
            return False
        outcome = _answer_for(answer, f"read {key}")
        if outcome is None:
            try:
                outcome = self._ask(
                    hook,
                    f"read {key}",
                    protocol.record_get_call(update.record_id),
                    state,
                    timeout=RETRY_READ_TIMEOUT,
                )
            except BlockchainError as exc:  # a timeout, a broker error: the read is optional
                outcome = exc
        if not isinstance(outcome, Outcome):
            self.log.warning("Could not read record %s (BLK_Rec_Get): %s", update.record_id, quote(outcome))
            return False
        record = outcome.value
        current = record.get("properties") if isinstance(record, dict) else None
        return isinstance(current, dict) and all(current.get(k) == v for k, v in update.updates.items())


def _answer_for(answer: tuple[str | None, Any] | None, key: str) -> Any:
    """What became of the request the task deferred on, if it is the one named *key*."""
    if answer is None or answer[0] != key:
        return None
    return answer[1]
