"""Update a dynamic record as its own reporter (PROTOCOL.md 3.3), creating both on first use.

A dynamic record is created with a password; the gateway answers with the record's reporter
agent (public key and token), and only that reporter may update the record. Where the reporter's
credentials are kept is the caller's: a :class:`ReporterStore` (the MES database, for the
production units).

When a record's updates may be triggered faster than they are applied, and must be applied in
the order they were made, the caller keeps them in a queue of its own and hands the operator a
claim (:class:`ClaimedUpdates` from a context manager): the pending updates, in order, under a
lock the caller holds until the block ends, each with callbacks that note it applied. The
operator knows nothing of where the queue or the lock lives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.log import mask_secret

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainError, BlockchainGatewayError, InvalidIdentifierError
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from blockchain_provider.operators.base import BaseBlockchainOperator, resolve_callable
from blockchain_provider.operators.record import EnsureRecordTypeOperator

#: Seconds a retry waits for the optional read of its record (a gateway without ``BLK_Rec_Get``
#: never answers it, and the token's pool slot is held meanwhile).
RETRY_READ_TIMEOUT = 10.0


class ReporterStore(Protocol):
    """Where the reporters of dynamic records are kept, by record id."""

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

    :param pending: the updates to apply, in order; the task's own among them unless it was
        applied already (then the list is usually empty).
    :param applied_by: when the task's own update was applied before this claim, who applied it
        (e.g. another run's id), for the task's result; default ``None``.
    :param summary: small facts for the task's result (a unit's code), no secret; default empty.
    """

    pending: Sequence[PendingUpdate]
    applied_by: str | None = None
    summary: Mapping[str, Any] = field(default_factory=dict)


def ensure_record_type(
    hook: KafkaBlockchainHook, name: str, description: str, properties: list[dict[str, Any]]
) -> None:
    """Create record type *name*; when refused, use it if the ledger declares the same properties.

    :class:`~blockchain_provider.operators.record.EnsureRecordTypeOperator`'s steps, run with
    *hook* inside another task.
    """
    ensure = EnsureRecordTypeOperator(
        task_id="ensure_record_type", name=name, description=description, properties=properties
    )
    ensure.run_steps({}, ensure.first_step({}), hook)


class UpdateDynamicRecordOperator(BaseBlockchainOperator):
    """Set dynamic properties of a record, signed with its reporter's token.

    In order: the record type is ensured (created, or found with the same properties); on the
    record's first update the record and its reporter are created with the password the store
    prepares, and the reporter's public key and token are stored; then the update is sent as the
    reporter. The master token (``token_conn_id``) only creates.

    A retry first reads the record (the optional ``BLK_Rec_Get``, :data:`RETRY_READ_TIMEOUT` at
    most): values already there mean the earlier try was applied, and nothing is sent. This narrows
    the window for a twice-recorded update, it does not close it (a gateway without the read, or
    that has not applied the lost try yet, gets the update again).

    The requests are awaited in the worker, whatever ``deferrable`` says: the update is signed
    with a reporter's token, which lives in the store, not in a connection the triggerer could read.

    Returns the record id, the gateway's confirmation, the values set and the update's summary.

    :param record_type: the record type's name (it names the topic).
    :param record_type_description: what the record type's records hold.
    :param record_type_properties: its ``{"name", "data_type", "dynamic"}`` objects.
    :param update: a callable (or dotted path to one) given the task's context that returns
        either the :class:`DynamicRecordUpdate` to make, or a context manager whose block holds
        the caller's lock on the record's queue and which gives the :class:`ClaimedUpdates` to
        apply in order (see :meth:`apply_claimed`).
    """

    def __init__(
        self,
        *,
        record_type: str,
        record_type_description: str,
        record_type_properties: list[dict[str, Any]],
        update: str
        | Callable[[Mapping[str, Any]], DynamicRecordUpdate | AbstractContextManager[ClaimedUpdates]],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        protocol.record_type_create_call(record_type, record_type_description, record_type_properties)
        self.record_type = record_type
        self.record_type_description = record_type_description
        self.record_type_properties = record_type_properties
        resolve_callable(update, "update")
        self.update = update

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any]:
        if self.deferrable:
            self.log.info("Awaited in the worker: the updates are signed with a token the store keeps")
        make = resolve_callable(self.update, "update")
        assert make is not None
        made = make(context)
        if not isinstance(made, DynamicRecordUpdate):
            with made as claimed:
                return self.apply_claimed(claimed, context)
        update = made
        try:
            protocol.record_update_call(self.record_type, update.record_id, update.updates)
        except InvalidIdentifierError as exc:
            # a value the ledger's rules refuse: a retry would fail alike
            raise AirflowFailException(str(exc)) from None
        ti = context.get("ti")
        retry = ti is not None and getattr(ti, "try_number", 1) > 1
        hook = self.hook
        try:
            ensure_record_type(
                hook, self.record_type, self.record_type_description, self.record_type_properties
            )
            token = self._reporter_token(hook, update)
            result = {"record_id": update.record_id, **update.summary, **update.updates}
            if retry and self._record_holds(hook, update):
                # the earlier try was applied but its answer was lost (a worker killed while
                # waiting): a second update would record the same change twice in the history
                self.log.info(
                    "%s already holds %s: nothing to update", update.record_id, dict(update.updates)
                )
                return {**result, "message": "already up to date"}
            message = hook.update_record(self.record_type, update.record_id, update.updates, token=token)
        finally:
            hook.close()
        self.log.info("Updated %s as its reporter: %s", update.record_id, dict(update.updates))
        return {**result, "message": message}

    def apply_claimed(self, claimed: ClaimedUpdates, context: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a claim's pending updates in order, noting each applied as soon as the record holds it.

        An update whose values the ledger's rules refuse is noted refused and skipped; if it is the
        task's own, the task then fails without retries. Any other error stops the claim where it
        is (the updates before it stay noted applied) and fails the try. The first update of a retry
        and any update that may have been sent (``maybe_sent``) are read first (``BLK_Rec_Get``,
        :data:`RETRY_READ_TIMEOUT` at most): values already there are noted applied, not sent again.

        Returns the record id, the task's own values and confirmation (or who applied them), and the
        keys of the updates this task applied.

        :param claimed: what the caller's claim gives, while its lock is held.
        :param context: the task's context.
        """
        ti = context.get("ti")
        retry = ti is not None and getattr(ti, "try_number", 1) > 1
        result: dict[str, Any] = {**claimed.summary, "applied": []}
        if claimed.applied_by is not None:
            result["message"] = f"applied by {claimed.applied_by}"
        if not claimed.pending:
            self.log.info("Nothing left to apply: %s", result.get("message", "no pending update"))
            return result
        refused_own: str | None = None
        hook = self.hook
        try:
            ensure_record_type(
                hook, self.record_type, self.record_type_description, self.record_type_properties
            )
            for index, item in enumerate(claimed.pending):
                update = item.update
                if item.own:
                    result.update({"record_id": update.record_id, **update.summary, **update.updates})
                try:
                    protocol.record_update_call(self.record_type, update.record_id, update.updates)
                except InvalidIdentifierError as exc:
                    item.mark_refused(str(exc))
                    self.log.warning("%s refused for good: %s", item.key, exc)
                    if item.own:
                        refused_own = str(exc)
                    continue
                token = self._reporter_token(hook, update)
                if (item.maybe_sent or (retry and index == 0)) and self._record_holds(hook, update):
                    message = "already up to date"
                    self.log.info("%s: %s already holds %s", item.key, update.record_id, dict(update.updates))
                else:
                    item.mark_sending()
                    try:
                        message = hook.update_record(
                            self.record_type, update.record_id, update.updates, token=token
                        )
                    except BlockchainGatewayError as exc:
                        # refused: sending it again changes nothing, and kept pending it would
                        # stand before every later update of the record
                        item.mark_refused(exc.gateway_text)
                        self.log.warning("%s refused by the gateway: %s", item.key, exc.gateway_text)
                        if item.own:
                            refused_own = str(exc)
                        continue
                    self.log.info(
                        "%s: updated %s as its reporter: %s", item.key, update.record_id, dict(update.updates)
                    )
                item.mark_applied(message)
                result["applied"].append(item.key)
                if item.own:
                    result["message"] = message
        finally:
            hook.close()
        if refused_own is not None:
            raise AirflowFailException(refused_own)
        return result

    def _reporter_token(self, hook: KafkaBlockchainHook, update: DynamicRecordUpdate) -> str:
        token = update.store.token(update.record_id)
        if token is not None:
            mask_secret(token)
            return token
        topic = hook.settings.topics[protocol.record_topic(self.record_type)]
        password = update.store.prepare(update.record_id, topic, protocol.new_password())
        mask_secret(password)
        created = hook.create_dynamic_record(
            update.record_id, self.record_type, update.description, update.properties, password
        )
        update.store.store(update.record_id, created.public_key, created.token)
        self.log.info("Created record %s and its reporter %s", update.record_id, created.public_key)
        return created.token

    def _record_holds(self, hook: KafkaBlockchainHook, update: DynamicRecordUpdate) -> bool:
        try:
            record = hook.get_record(update.record_id, timeout=RETRY_READ_TIMEOUT)
        except BlockchainError as exc:
            self.log.warning("Could not read record %s (BLK_Rec_Get): %s", update.record_id, exc)
            return False
        current = record.get("properties") if isinstance(record, dict) else None
        return isinstance(current, dict) and all(current.get(k) == v for k, v in update.updates.items())
