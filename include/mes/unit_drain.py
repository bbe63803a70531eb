"""Every unit's noted changes drained at once, from the triggerer (:class:`UnitsDrainTrigger`).

A run of ``blockchain_production_unit_update`` whose unit has its reporter does not update its
unit alone: it defers to this trigger, which takes the lock of every unit with pending changes
that no other run holds and drains them side by side, each unit's changes in order, each update
signed by that unit's reporter (one request in flight per unit, so per token: the original
gateway's rule without echo). It reads the reporters' tokens from the MES itself (none is in its
arguments), notes each change applied or refused in the MES as its answer comes (no task resume
per request), takes the units whose changes are noted meanwhile, and ends once the run's own
change is settled and the units it holds are done with the changes they had then (later changes
go to later runs, so the trigger ends however fast the MES makes changes). A burst of changes
is then applied by the first runs to reach the triggerer; the later runs find theirs settled.

A unit whose update gets no answer in time (after the connection's late-answer grace, the token
is free for nothing else meanwhile) is let go and not taken again by this trigger: its change
stays pending with ``attempted_at`` set, for the next drain. Where the gateway answers reads
(the connection's ``reads`` field), that drain reads the record first and sends nothing it
already holds; without reads (the default) it sends the change again, which leaves the record
as the MES has it.
The trigger's event carries counts, never gateway data.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from airflow.sdk.log import mask_secret
from airflow.triggers.base import BaseTrigger, TriggerEvent
from asgiref.sync import sync_to_async

from blockchain_provider import protocol
from blockchain_provider.exceptions import InvalidIdentifierError
from blockchain_provider.operators.reporter import RETRY_READ_TIMEOUT
from blockchain_provider.triggers import events
from blockchain_provider.triggers.gateway_session import GatewaySession
from include.day_report_keys import (
    PRODUCTION_UNIT_RECORD_TYPE,
    production_unit_dynamic_properties,
    production_unit_record_id,
)
from include.mes.reporter_store import stored_token
from include.mes.unit_updates import (
    APPLIED,
    REFUSED,
    UnitChange,
    UnitDrain,
    claim_unit,
    positive_seconds,
    release_unit,
    unit_change,
    units_with_pending_changes,
)

__all__ = ["DEFAULT_MAX_UNITS", "DEFAULT_POLL", "DRAINED", "UnitsDrainTrigger"]

#: The event's status.
DRAINED = "drained"
#: Seconds between two looks for units with new changes.
DEFAULT_POLL = 0.5
#: Units one trigger drains at once (each with one request in flight).
DEFAULT_MAX_UNITS = 128
#: Seconds a unit's drain waits for the unit's lock, which the sweep took for the run already.
LOCK_RECHECK = 1.0
#: What became of a change whose answer is not known: the unit is left to a later drain.
STOPPED = "stopped"


class UnitsDrainTrigger(BaseTrigger):
    """Drain the pending changes of every unit no other run holds, side by side, for run *run_id*;
    fire once its own change is settled and the units it holds have none left.

    :param conn_id: the Airflow connection of the MES database.
    :param run_id: the run the units' locks are taken for, noted as each change's ``applied_by_run``.
    :param kafka_config_id: the ``kafka`` connection.
    :param token_conn_id: the ``blockchain_token`` connection whose agent created the reporters
        (its topics and echo setting are followed; its token signs nothing here).
    :param timeout: seconds each update waits for its answer, besides the connection's late-answer
        grace; default ``None``: the connection's ``timeout``.
    :param poll: seconds between two looks for units with new changes; default :data:`DEFAULT_POLL`.
    :param max_units: units drained at once; default :data:`DEFAULT_MAX_UNITS`.
    """

    def __init__(
        self,
        conn_id: str,
        run_id: str,
        kafka_config_id: str,
        token_conn_id: str,
        timeout: float | None = None,
        poll: float = DEFAULT_POLL,
        max_units: int = DEFAULT_MAX_UNITS,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.run_id = run_id
        self.kafka_config_id = kafka_config_id
        self.token_conn_id = token_conn_id
        self.timeout = None if timeout is None else positive_seconds("timeout", timeout)
        self.poll = positive_seconds("poll", poll)
        if isinstance(max_units, bool) or not isinstance(max_units, int) or max_units < 1:
            raise ValueError(f"Invalid max_units {max_units!r}: expected a positive integer")
        self.max_units = max_units
        self._taking = True

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "run_id": self.run_id,
                "kafka_config_id": self.kafka_config_id,
                "token_conn_id": self.token_conn_id,
                "timeout": self.timeout,
                "poll": self.poll,
                "max_units": self.max_units,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from include.mes.repository import process_repository

        repository = await sync_to_async(process_repository)(self.conn_id)
        engine = repository.engine
        counts: Counter[str] = Counter()
        # units let go of for good by this trigger: an update with no answer, or no reporter yet
        passed: set[int] = set()
        running: dict[int, asyncio.Task[Counter[str]]] = {}
        async with GatewaySession(self.kafka_config_id, self.token_conn_id) as session:
            try:
                while True:
                    for unit_id, task in list(running.items()):
                        if not task.done():
                            continue
                        del running[unit_id]
                        if task.exception() is not None:
                            self.log.warning(
                                "Draining production unit %s failed: %r; left to a later drain",
                                unit_id,
                                task.exception(),
                            )
                            counts["errors"] += 1
                            passed.add(unit_id)
                            continue
                        drained = task.result()
                        counts.update(drained)
                        if drained["stopped"] or drained["no_reporter"]:
                            passed.add(unit_id)
                    own = await sync_to_async(unit_change)(engine, self.run_id)
                    own_open = own is not None and own.pending and own.production_unit_id not in passed
                    # once the run's change is settled, the run takes no more: the units it holds
                    # end with the changes they have, and later changes go to later runs (the
                    # trigger ends however fast the MES makes changes)
                    self._taking = own_open
                    for unit_id in await sync_to_async(units_with_pending_changes)(engine, self.run_id):
                        if not self._taking or len(running) >= self.max_units:
                            break
                        if unit_id in running or unit_id in passed:
                            continue
                        if await sync_to_async(claim_unit)(engine, unit_id, self.run_id):
                            running[unit_id] = asyncio.create_task(self._drain(session, repository, unit_id))
                    if not running and not own_open:
                        break
                    if running:
                        await asyncio.wait(
                            running.values(), timeout=self.poll, return_when=asyncio.FIRST_COMPLETED
                        )
                    else:
                        await asyncio.sleep(self.poll)  # the run's unit is drained by another run
            finally:
                for task in running.values():
                    task.cancel()
                if running:
                    await asyncio.wait(running.values())
        self.log.info("Run %s drained the units' changes: %s", self.run_id, dict(counts) or "none")
        yield TriggerEvent({"status": DRAINED, "run_id": self.run_id, **counts})

    async def _drain(self, session: GatewaySession, repository: Any, unit_id: int) -> Counter[str]:
        """Apply unit *unit_id*'s pending changes in order (its lock is the run's), and those noted
        meanwhile; let go of the lock when none is left or an update got no answer."""
        counts: Counter[str] = Counter()
        # the lock is the run's already: a lock lost meanwhile fails at once, in no shared thread
        drain = repository.drain_unit_changes(unit_id, None, self.run_id, lock_timeout=LOCK_RECHECK)
        try:
            unit = await sync_to_async(repository.require_production_unit)(unit_id)
            record_id = production_unit_record_id(unit)
            token = await sync_to_async(stored_token)(repository, record_id)
            if token is None:
                # its first update creates the reporter, under the lock, in a run of its own
                self.log.info(
                    "Production unit %s has no reporter yet: left to the run that creates it", unit.code
                )
                counts["no_reporter"] += 1
                return counts
            mask_secret(token)
            changes = await sync_to_async(drain.open)()
            while changes:
                for change in changes:
                    try:
                        updates = production_unit_dynamic_properties(change.status, change.process_name)
                        call = protocol.record_update_call(PRODUCTION_UNIT_RECORD_TYPE, record_id, updates)
                    except (InvalidIdentifierError, ValueError) as exc:
                        await sync_to_async(drain.mark_refused)(change.seq, str(exc))
                        counts["refused"] += 1
                        continue
                    outcome, text = await self._apply(session, drain, token, record_id, change, call, updates)
                    if outcome == APPLIED:
                        await sync_to_async(drain.mark_applied)(change.seq, text)
                    elif outcome == REFUSED:
                        self.log.warning(
                            "Change %s of %s refused by the gateway: %s", change.seq, unit.code, text
                        )
                        await sync_to_async(drain.mark_refused)(change.seq, text)
                    else:
                        self.log.warning(
                            "Change %s of %s: %s; the unit is left to a later drain",
                            change.seq,
                            unit.code,
                            text,
                        )
                        counts["stopped"] += 1
                        return counts
                    counts[outcome] += 1
                # the changes noted meanwhile too, while the run takes more
                changes = await sync_to_async(drain.open)() if self._taking else []
            return counts
        finally:
            await sync_to_async(drain.close)()
            # a lock taken by the sweep but never opened (no reporter) goes too
            await sync_to_async(release_unit)(repository.engine, unit_id, self.run_id)

    async def _apply(
        self,
        session: GatewaySession,
        drain: UnitDrain,
        token: str,
        record_id: str,
        change: UnitChange,
        call: protocol.Call,
        updates: dict[str, str],
    ) -> tuple[str, str]:
        """Send *change*'s update, signed with the unit's reporter *token*; ``(APPLIED, the
        gateway's confirmation)``, ``(REFUSED, its refusal)``, or ``(STOPPED, why)`` when the token's
        answer is not known (the unit must send nothing more now)."""
        settings = session.settings
        wait = (settings.timeout if self.timeout is None else self.timeout) + settings.late_answer_grace
        if change.attempted_at is not None:
            # sent before, its answer never noted: an earlier drain of the run may have been stopped
            # with it in flight (a triggerer restart). Its answer, matched by the token, must not be
            # taken for the next request's: the token sends nothing until its wait is over.
            left = change.attempted_at.timestamp() + wait - time.time()
            if left > 0:
                await sync_to_async(drain.keep)(left)
                self.log.info(
                    "Change %s was sent before: waiting %.0f s for its answer's time to pass",
                    change.seq,
                    left,
                )
                await asyncio.sleep(left)
            if session.settings.reads:
                read = await session.ask(protocol.record_get_call(record_id), token, RETRY_READ_TIMEOUT)
                if not read.answered:
                    return STOPPED, f"no answer to the read of record {record_id} (BLK_Rec_Get): {read.text}"
                if read.status == events.SUCCESS and protocol.record_holds(read.value, updates):
                    return APPLIED, "already up to date"
        await sync_to_async(drain.mark_attempted)(change.seq)
        await sync_to_async(drain.keep)(wait)  # the lock outlasts the wait
        answer = await session.ask(call, token, wait)
        if answer.status == events.SUCCESS:
            return APPLIED, answer.text
        if answer.status == events.GATEWAY_ERROR:
            return REFUSED, answer.text
        return STOPPED, answer.text
