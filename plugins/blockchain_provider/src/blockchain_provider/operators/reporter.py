"""Update a dynamic record as its own reporter (PROTOCOL.md 3.3), creating both on first use.

A dynamic record is created with a password; the gateway answers with the record's reporter
agent (public key and token), and only that reporter may update the record. Where reporters are
kept and a record's queue of updates are the deployment's (:mod:`~.update_queue`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

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
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from blockchain_provider.memory import RecordTypeMemorySource
from blockchain_provider.operators.base import (
    BaseBlockchainOperator,
    Done,
    answer_for,
    is_template,
    resolve_callable,
    seconds_argument,
)
from blockchain_provider.operators.record import record_type_steps
from blockchain_provider.operators.update_queue import (
    ClaimedUpdates,
    DynamicRecordUpdate,
    PendingUpdate,
    QueueBusy,
    ReporterStore,
    UpdateQueue,
    check_update_arguments,
    end_kept_claim,
    fail_claim,
)
from blockchain_provider.outcomes import Outcome
from blockchain_provider.quoting import quote
from blockchain_provider.reporter_registry import triggerer_reads_reporter_tokens
from blockchain_provider.triggers import events

#: Seconds a retry waits for the optional read of its record (a gateway without ``BLK_Rec_Get``
#: never answers it, and the token's pool slot is held meanwhile).
RETRY_READ_TIMEOUT = 10.0


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
    update waits there when the triggerer can read the reporter's token (``[blockchain]
    reporter_registry`` is set), else in the worker. The creation of a record and its reporter always
    waits in the worker: its answer holds the reporter's token, which no event may carry.

    The master's requests and the reporter's may run in tasks of their own (*part*), each in its
    token's pool: a task of part ``"create"`` sends only what the master signs and hands the claim
    on (:attr:`ClaimedUpdates.keep`); one of part ``"update"`` sends only what the reporters sign,
    and fails when the record has no reporter yet.

    The update is given as plain values (*record_id*, *description*, *properties*, *updates* and
    the *reporters* store), or as an *update_queue* the caller keeps (:class:`UpdateQueue`), whose
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
    :param update_queue: instead of the five above, the caller's queue of updates
        (:class:`UpdateQueue`); not ``queue``, which is Airflow's (the executor's queue of the task).
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
        update_queue: UpdateQueue | None = None,
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
        check_update_arguments(
            update_queue, record_id=record_id, properties=properties, updates=updates, reporters=reporters
        )
        if record_id is not None and not is_template(record_id):
            protocol.validate_name(record_id, "record id")
        self.record_id = record_id
        self.description = description
        self.properties = properties if properties is not None else {}
        self.updates = updates
        self.reporters = reporters
        self.update_queue = update_queue
        self.defer_after = seconds_argument("defer_after", defer_after)
        self.queue_retry = seconds_argument("queue_retry", queue_retry)

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any]:
        return self._run(context, {}, None)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        """Resume after the triggerer. When the wait itself failed (the trigger failed, or the
        deferral timed out), the claim the task kept is let go of, and a failure for good is noted."""
        from airflow.sdk.exceptions import TaskDeferralError, TaskDeferralTimeout

        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except (TaskDeferralError, TaskDeferralTimeout) as failure:
            if self.update_queue is not None:
                end_kept_claim(self.update_queue, context, failure)
            raise

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
        if self.update_queue is None:
            return self._run_plain(context, state, answer)
        # a claim that fails notes nothing: the update stays in the queue, whose holder (or a later
        # task) applies it in its turn
        try:
            claimed = self.update_queue.claim(context)
        except QueueBusy as exc:
            if not self.deferrable:
                raise
            self.log.info(
                "%s: claiming again in %g s, meanwhile waiting in the triggerer", exc, self.queue_retry
            )
            self.defer(
                trigger=TimeDeltaTrigger(timedelta(seconds=self.queue_retry)), method_name="execute_complete"
            )
        try:
            result = self._apply(claimed, context, state, answer)
            if self.part == "create" and claimed.pending:
                # the run's update task goes on with the claim
                claimed.keep(0.0)
            else:
                claimed.release()
        except TaskDeferred as deferred:
            # the task goes on when the triggerer has the answer: the lock lasts the wait out
            away = deferred.timeout.total_seconds() if deferred.timeout is not None else 0.0
            try:
                claimed.keep(away)
            except BaseException as lost:
                fail_claim(self.update_queue, claimed, context, lost)
                raise
            raise
        except BaseException as exc:  # a timeout or a kill of the task too
            fail_claim(self.update_queue, claimed, context, exc)
            raise
        return result

    def _run_plain(
        self, context: Mapping[str, Any], state: dict[str, Any], answer: tuple[str | None, Any] | None
    ) -> dict[str, Any]:
        for name in ("properties", "updates"):
            if not isinstance(getattr(self, name), Mapping):
                # a template rendered to something else: a retry renders it alike
                raise AirflowFailException(
                    f"{name} must be an object of property values, not {getattr(self, name)!r:.60}"
                )
        update = DynamicRecordUpdate(
            record_id=str(self.record_id),
            description=self.description,
            properties=dict(self.properties),
            updates=dict(self.updates),
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
            # the triggerer reads a reporter's token from the deployment's registry, if any
            registry = triggerer_reads_reporter_tokens()
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
                reporter = update.record_id if registry else None
                outcome = answer_for(answer, f"update {item.key}")
                if outcome is None:
                    read_first = item.maybe_sent or (retry and index == 0)
                    if read_first and self._record_holds(hook, update, state, answer, item.key):
                        outcome = "already up to date"
                        self.log.info(
                            "%s: %s already holds %s", item.key, update.record_id, dict(update.updates)
                        )
                    else:
                        item.mark_sending()
                        outcome = self.ask(hook, f"update {item.key}", call, state, token, reporter)
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

    def _ensure_record_type(
        self,
        hook: KafkaBlockchainHook,
        context: Mapping[str, Any],
        state: dict[str, Any],
        answer: tuple[str | None, Any] | None,
    ) -> None:
        """Create the record type unless remembered, or take it as existing
        (:class:`~blockchain_provider.operators.record.EnsureRecordTypeOperator`'s steps)."""
        ensure = record_type_steps(
            hook,
            self.record_type,
            self.record_type_description,
            self.record_type_properties,
            self.record_types,
        )
        first = ensure.first_step({})
        if isinstance(first, Done):
            return
        outcome = answer_for(answer, "ensure record type")
        if outcome is None:
            outcome = self.ask(hook, "ensure record type", first.call, state)
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
        outcome = answer_for(answer, f"read {key}")
        if outcome is None:
            try:
                outcome = self.ask(
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
        return protocol.record_holds(outcome.value, update.updates)
