"""Waiting for a production unit's lock in the triggerer, outside every pool.

A run of ``blockchain_production_unit_update`` takes its unit's lock (:func:`~include.mes.unit_updates.claim_unit`)
in a task of its own, before the task that talks to the gateway. When another run holds it, the
task defers to :class:`UnitClaimTrigger`, which takes the lock for the run as soon as it is free:
the wait costs neither a worker slot nor a slot of the token's pool, so the run that holds the
lock always finds the slot it needs to go on (a run waiting for the lock in that pool once kept
its only slot from the holder for minutes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent
from asgiref.sync import sync_to_async

from include.mes.unit_updates import CLAIM_LEASE, claim_unit, positive_seconds, unit_lock_holder

__all__ = ["CLAIMED", "DEFAULT_POLL", "UnitClaimTrigger"]

#: The event's status once the lock is the run's.
CLAIMED = "claimed"
#: Seconds between two looks at a busy unit's lock.
DEFAULT_POLL = 0.5


class UnitClaimTrigger(BaseTrigger):
    """Take unit *unit_id*'s lock for run *run_id* as soon as it is free, then fire.

    The event carries the unit and the run, nothing else. The lock is taken for *lease* seconds,
    time enough for the run's gateway task to get a slot of its pool and renew it.

    :param conn_id: the Airflow connection of the MES database.
    :param unit_id: the unit.
    :param run_id: the run the lock is taken for.
    :param lease: seconds the lock lasts once taken; default :data:`~include.mes.unit_updates.CLAIM_LEASE`.
    :param poll: seconds between two looks; default :data:`DEFAULT_POLL`.
    """

    def __init__(
        self,
        conn_id: str,
        unit_id: int,
        run_id: str,
        lease: float = CLAIM_LEASE,
        poll: float = DEFAULT_POLL,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.unit_id = unit_id
        self.run_id = run_id
        self.lease = positive_seconds("lease", lease)
        self.poll = positive_seconds("poll", poll)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "unit_id": self.unit_id,
                "run_id": self.run_id,
                "lease": self.lease,
                "poll": self.poll,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from include.mes.db import mes_engine

        engine = await sync_to_async(mes_engine)(self.conn_id)
        try:
            holder = await sync_to_async(unit_lock_holder)(engine, self.unit_id)
            self.log.info("Production unit %s's lock is held by run %s: waiting for it", self.unit_id, holder)
            while True:
                # a read while the lock is held: only a free lock costs a write
                free = holder in (None, self.run_id)
                if free and await sync_to_async(claim_unit)(
                    engine, self.unit_id, self.run_id, lease=self.lease
                ):
                    break
                await asyncio.sleep(self.poll)
                holder = await sync_to_async(unit_lock_holder)(engine, self.unit_id)
        finally:
            await sync_to_async(engine.dispose)()
        self.log.info("Production unit %s's lock taken for run %s", self.unit_id, self.run_id)
        yield TriggerEvent({"status": CLAIMED, "unit": self.unit_id, "run_id": self.run_id})
