"""What :class:`~blockchain_provider.operators.reporter.UpdateDynamicRecordOperator` takes from the
deployment: where reporters are kept (:class:`ReporterStore`), and a record's queue of updates
(:class:`UpdateQueue`) with what a claim on it gives (:class:`ClaimedUpdates`).

When a record's updates may be triggered faster than they are applied, and must be applied in
the order they were made, the caller keeps them in a queue of its own and the operator claims it:
the pending updates, in order, under a lock the caller holds, each with callbacks that note it
applied. The operator knows nothing of where the queue or the lock lives, and ends each claim
itself: it keeps the lock when the task goes on later (it deferred to the triggerer, or hands on
to the run's next task) and lets go of it otherwise. A claim that finds the queue held by another
task raises :class:`QueueBusy`, so the task looks again a little later from the triggerer instead
of waiting in a worker slot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from blockchain_provider.exceptions import BlockchainConfigError

log = logging.getLogger(__name__)

__all__ = [
    "ClaimedUpdates",
    "DynamicRecordUpdate",
    "PendingUpdate",
    "QueueBusy",
    "ReporterStore",
    "UpdateQueue",
    "check_update_arguments",
    "end_kept_claim",
    "fail_claim",
    "last_try",
]


class QueueBusy(Exception):
    """A claim found the record's queue held by another task; the message says which.

    A deferrable :class:`UpdateDynamicRecordOperator` looks again after ``queue_retry`` seconds,
    waiting in the triggerer; a blocking one fails its try.
    """


class ReporterStore(Protocol):
    """Where the reporters of dynamic records are kept, by record id, as the operator writes them.

    The triggerer reads a reporter's token from the deployment's
    :class:`~blockchain_provider.reporter_registry.ReporterRegistry` (``[blockchain]
    reporter_registry``), which must read where the store keeps them; without a registry, an
    update a reporter signs waits for its answer in the worker.
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


def check_update_arguments(queue: Any, **plain: Any) -> None:
    """Refuse an operator's update unless it is given either as plain values (*plain*: its
    ``record_id``, ``properties``, ``updates`` and ``reporters``) or as an :class:`UpdateQueue`."""
    if queue is None:
        missing = [name for name in ("record_id", "updates", "reporters") if plain.get(name) is None]
        if missing:
            raise BlockchainConfigError(f"Give the update ({', '.join(missing)} missing), or an update_queue")
        return
    if any(value is not None for value in plain.values()):
        raise BlockchainConfigError("Give either the update's values or an update_queue, not both")
    if not (callable(getattr(queue, "claim", None)) and callable(getattr(queue, "failed", None))):
        raise BlockchainConfigError(
            f"update_queue must have claim() and failed() (an UpdateQueue), not {queue!r:.80}"
        )


def last_try(context: Mapping[str, Any]) -> bool:
    """Whether the task's try is its last: no retry follows a failure."""
    ti = context.get("ti")
    return ti is not None and getattr(ti, "try_number", 1) > getattr(ti, "max_tries", 0)


def fail_claim(
    queue: UpdateQueue, claimed: ClaimedUpdates, context: Mapping[str, Any], failure: BaseException
) -> None:
    """A try failed with *failure* while it held *claimed*: tell *queue* when no retry follows (a
    failure no retry fixes, a task killed, or the last try), then let go of the claim (in that
    order: no other task may drain the update between the two)."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowTaskTerminated

    try:
        if isinstance(failure, (AirflowFailException, AirflowTaskTerminated)) or last_try(context):
            queue.failed(context, failure)
    finally:
        claimed.release()


def end_kept_claim(queue: UpdateQueue, context: Mapping[str, Any], failure: BaseException) -> None:
    """A deferred task's wait failed (*failure*): let go of the claim it kept while away, as
    :func:`fail_claim` does. A claim that cannot be taken again (another task holds the queue by
    now) lets nothing go and tells nothing: the holder applies the task's update in its turn."""
    try:
        claimed = queue.claim(context)
    except Exception as exc:
        log.warning("The record's queue could not be claimed to let go of it: %s", exc)
        return
    fail_claim(queue, claimed, context, failure)
