"""A unit's changes, noted in order and drained under the unit's lock, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.mes import schema, unit_updates
from include.mes.models import ProductionUnitNotFoundError
from include.mes.repository import MesRepository
from include.mes.unit_updates import (
    APPLIED,
    CLAIM_LEASE,
    FAILED,
    REFUSED,
    UnitLockLostError,
    UnitLockTimeoutError,
    claim_unit,
    positive_seconds,
    release_unit,
    unit_lock_holder,
)
from tests.conftest import wait_until


def test_the_unit_updates_table_is_created_with_the_schema(engine: Engine) -> None:
    schema.create_schema(engine)
    columns = {c["name"] for c in sa.inspect(engine).get_columns("unit_updates")}
    assert {"seq", "production_unit_id", "status", "process_name", "dag_run_id", "applied_at"} <= columns
    assert {"applied_by_run", "attempted_at", "outcome"} <= columns


def test_saving_a_state_with_a_run_id_notes_the_change_in_order(repo: MesRepository) -> None:
    pt10 = repo.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    pt11 = repo.add_production_unit("PT11", "Press line 11", "Running", "Stamping")
    repo.set_production_unit_state(pt10.id, "Stopped", "", dag_run_id="run-a")
    repo.set_production_unit_state(pt11.id, "Maintenance", "Die change", dag_run_id="run-b")
    repo.set_production_unit_state(pt10.id, "Running", "Deep drawing", dag_run_id="run-c")
    repo.set_production_unit_state(pt10.id, "Running", "Not noted")  # no run id: nothing noted
    changes = repo.unit_changes(pt10.id)
    assert [(c.dag_run_id, c.status, c.process_name) for c in changes] == [
        ("run-a", "Stopped", ""),
        ("run-c", "Running", "Deep drawing"),
    ]
    assert changes[0].seq < repo.unit_change("run-b").seq < changes[1].seq
    assert all(c.pending and c.applied_by_run is None and c.noted_at.tzinfo for c in changes)
    assert repo.unit_change("run-z") is None

    # noting a run again (a hand-triggered run's retry) returns its change, unchanged
    again = repo.note_unit_change(pt10.id, "Other", "Other", "run-a")
    assert again == changes[0]
    with pytest.raises(ValueError, match="already carries a change of unit"):
        repo.note_unit_change(pt11.id, "Running", "", "run-a")
    with pytest.raises(ProductionUnitNotFoundError, match="Production unit 999"):
        repo.note_unit_change(999, "Running", "", "run-x")
    with pytest.raises(ProductionUnitNotFoundError):
        repo.set_production_unit_state(999, "Running", "", dag_run_id="run-y")
    assert repo.unit_change("run-x") is None and repo.unit_change("run-y") is None


def test_a_drain_gives_the_pending_changes_up_to_its_own_in_order(repo: MesRepository) -> None:
    unit = repo.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    for n in range(1, 5):
        repo.set_production_unit_state(unit.id, f"S{n}", f"P{n}", dag_run_id=f"run-{n}")
    seq = {n: repo.unit_change(f"run-{n}").seq for n in range(1, 5)}

    drain = repo.drain_unit_changes(unit.id, seq[3], "run-3")
    with drain as pending:
        assert [c.status for c in pending] == ["S1", "S2", "S3"]
        drain.mark_attempted(seq[1])
        drain.mark_applied(seq[1], "ok 1")
        drain.mark_refused(seq[2], "a value the ledger refuses")
        with pytest.raises(LookupError, match="is not pending"):
            drain.mark_applied(seq[1])  # never settled twice
    with pytest.raises(RuntimeError, match="lock is not held"):
        drain.mark_applied(seq[3])

    one, two = repo.unit_change("run-1"), repo.unit_change("run-2")
    assert (one.outcome, one.applied_by_run, one.detail) == (APPLIED, "run-3", "ok 1")
    assert one.attempted_at is not None and one.applied_at >= one.attempted_at
    assert (two.outcome, two.applied_by_run) == (REFUSED, "run-3")

    # the next drain starts where this one stopped; what it did not settle stays pending
    with repo.drain_unit_changes(unit.id, seq[4], "run-4") as pending:
        assert [(c.status, c.attempted_at) for c in pending] == [("S3", None), ("S4", None)]
    assert [c.status for c in repo.unit_changes(unit.id, pending_only=True)] == ["S3", "S4"]

    assert repo.give_up_unit_change("run-3", "its run failed for good") is True
    assert repo.give_up_unit_change("run-3", "again") is False
    assert repo.unit_change("run-3").outcome == FAILED
    with repo.drain_unit_changes(unit.id, seq[4], "run-4") as pending:
        assert [c.status for c in pending] == ["S4"]


def test_the_lock_excludes_a_second_drain_of_the_unit_not_of_another(
    repo: MesRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    pt10 = repo.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    pt11 = repo.add_production_unit("PT11", "Press line 11", "Running", "Stamping")
    repo.set_production_unit_state(pt10.id, "S1", "", dag_run_id="run-1")
    seq = repo.unit_change("run-1").seq
    held, release, outcome = threading.Event(), threading.Event(), {}

    def hold() -> None:
        drain = repo.drain_unit_changes(pt10.id, seq, "run-1")
        with drain:
            held.set()
            release.wait(30)
            drain.mark_applied(seq, "ok")

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        with pytest.raises(
            UnitLockTimeoutError, match=rf"Production unit {pt10.id}'s lock .* \(held by run run-1\)"
        ):
            with repo.drain_unit_changes(pt10.id, seq, "run-2", lock_timeout=0.3):
                pass
        assert claim_unit(repo.engine, pt11.id, "other-unit")  # another unit's lock is free meanwhile
        release_unit(repo.engine, pt11.id, "other-unit")
        # and the MES can still save and note changes of the locked unit
        repo.set_production_unit_state(pt10.id, "S2", "", dag_run_id="run-2")

        def wait_then_drain() -> None:
            with repo.drain_unit_changes(pt10.id, repo.unit_change("run-2").seq, "run-2") as pending:
                outcome["pending"] = [c.status for c in pending]

        refused = []

        def counted_claim(engine, unit_id, run_id, **kwargs):
            claimed = claim_unit(engine, unit_id, run_id, **kwargs)
            if not claimed and run_id == "run-2":
                refused.append(unit_id)
            return claimed

        monkeypatch.setattr(unit_updates, "claim_unit", counted_claim)
        waiter = threading.Thread(target=wait_then_drain)
        waiter.start()
        # the waiter asked for the lock, was refused and asked again: it waits, it did not drain
        assert wait_until(lambda: len(refused) >= 2, timeout=30)
        assert "pending" not in outcome
    finally:
        release.set()
        holder.join(30)
    waiter.join(30)
    # it got the lock once the first drain let go, and saw what that one had applied
    assert outcome["pending"] == ["S2"]


def test_concurrent_drains_apply_each_change_once_in_order(repo: MesRepository) -> None:
    unit = repo.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    runs = [f"run-{n}" for n in range(8)]
    for n, run in enumerate(runs):
        repo.set_production_unit_state(unit.id, f"S{n}", "", dag_run_id=run)
    applied: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(runs))

    def run_drain(run: str) -> None:
        try:
            start.wait(30)
            drain = repo.drain_unit_changes(unit.id, repo.unit_change(run).seq, run, lock_timeout=60)
            with drain as pending:
                for change in pending:
                    applied.append(change.status)  # "the ledger"
                    time.sleep(0.01)
                    drain.mark_applied(change.seq, "ok")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run_drain, args=(run,)) for run in reversed(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert applied == [f"S{n}" for n in range(8)]
    assert repo.unit_changes(unit.id, pending_only=True) == []
    assert all(c.outcome == APPLIED for c in repo.unit_changes(unit.id))


def test_a_kept_lock_outlives_the_block_and_its_run_takes_it_back(repo: MesRepository) -> None:
    unit = repo.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    repo.set_production_unit_state(unit.id, "S1", "", dag_run_id="run-1")
    repo.set_production_unit_state(unit.id, "S2", "", dag_run_id="run-2")
    seq1, seq2 = repo.unit_change("run-1").seq, repo.unit_change("run-2").seq
    drain = repo.drain_unit_changes(unit.id, seq1, "run-1")
    with drain as pending:
        drain.mark_attempted(pending[0].seq)
        drain.keep(3600)  # the run defers while the gateway answers, an hour at most
    assert unit_lock_holder(repo.engine, unit.id) == "run-1"
    # renewed for the deferral's wait on top of the usual lease
    with repo.engine.connect() as conn:
        until = schema.aware(conn.execute(sa.select(schema.unit_claims.c.claimed_until)).scalar_one())
    assert (until - schema.utcnow()).total_seconds() > 3600 + CLAIM_LEASE - 60
    with pytest.raises(UnitLockTimeoutError, match="held by run run-1"):
        with repo.drain_unit_changes(unit.id, seq2, "run-2", lock_timeout=0.3):
            pass
    # the run resumes, in another process: its id takes the lock back, its change still pending
    resumed = repo.drain_unit_changes(unit.id, seq1, "run-1", lock_timeout=0.3)
    with resumed as pending:
        assert [(c.status, c.attempted_at is not None) for c in pending] == [("S1", True)]
        resumed.mark_applied(seq1, "ok")
    assert unit_lock_holder(repo.engine, unit.id) is None  # let go at the end of the block
    with repo.drain_unit_changes(unit.id, seq2, "run-2", lock_timeout=5) as pending:
        assert [c.status for c in pending] == ["S2"]


def test_a_lapsed_lock_goes_to_the_next_run_and_its_holder_cannot_note(repo: MesRepository) -> None:
    unit = repo.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    repo.set_production_unit_state(unit.id, "S1", "", dag_run_id="run-1")
    seq = repo.unit_change("run-1").seq
    drain = repo.drain_unit_changes(unit.id, seq, "run-1")
    with drain:
        # run-1's lease ends (its worker died, say); run-2 takes the lock
        assert claim_unit(repo.engine, unit.id, "run-1", lease=-1)
        assert claim_unit(repo.engine, unit.id, "run-2")
        assert not claim_unit(repo.engine, unit.id, "run-1")
        with pytest.raises(
            UnitLockLostError, match=r"Run run-1's lock on production unit .* run run-2 holds it"
        ):
            drain.mark_applied(seq, "ok")
        with pytest.raises(UnitLockLostError):
            drain.keep(60)  # nor can it keep the lock for a deferral
    assert repo.unit_change("run-1").pending  # nothing noted by the run that lost the lock
    assert unit_lock_holder(repo.engine, unit.id) == "run-2"  # its exit did not release run-2's lock


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), True, "5", None])
def test_seconds_that_are_not_positive_are_refused_naming_the_argument(value):
    with pytest.raises(ValueError, match=r"^Invalid lease .*: expected positive seconds$"):
        positive_seconds("lease", value)


def test_positive_seconds_are_taken_as_floats():
    assert positive_seconds("poll", 2) == 2.0 and isinstance(positive_seconds("poll", 2), float)
    assert positive_seconds("poll", 0.25) == 0.25


def test_the_units_to_drain_are_those_with_pending_changes_and_no_other_holder(repo: MesRepository) -> None:
    from include.mes.unit_updates import units_with_pending_changes

    pt10, pt11, pt12, pt13 = (
        repo.add_production_unit(code, f"Press line {code}", "Running", "Stamping")
        for code in ("PT10", "PT11", "PT12", "PT13")
    )
    repo.set_production_unit_state(pt12.id, "Stopped", "", dag_run_id="run-a")
    repo.set_production_unit_state(pt10.id, "Stopped", "", dag_run_id="run-b")
    repo.set_production_unit_state(pt11.id, "Stopped", "", dag_run_id="run-c")
    repo.set_production_unit_state(pt12.id, "Running", "", dag_run_id="run-d")
    # oldest pending change first; a unit with nothing pending is not one
    assert units_with_pending_changes(repo.engine, "run-x") == [pt12.id, pt10.id, pt11.id]
    drain = repo.drain_unit_changes(pt10.id, repo.unit_change("run-b").seq, "run-b")
    with drain as pending:
        # a unit another run holds is not; one the asking run holds is
        assert units_with_pending_changes(repo.engine, "run-x") == [pt12.id, pt11.id]
        assert units_with_pending_changes(repo.engine, "run-b") == [pt12.id, pt10.id, pt11.id]
        drain.mark_applied(pending[0].seq, "done")
    # settled: PT10 has nothing pending any more
    assert units_with_pending_changes(repo.engine, "run-x") == [pt12.id, pt11.id]
    assert claim_unit(repo.engine, pt11.id, "run-c", lease=-1.0)  # a lapsed lock holds nothing back
    assert units_with_pending_changes(repo.engine, "run-x") == [pt12.id, pt11.id]
    assert pt13.id not in units_with_pending_changes(repo.engine, "run-x")
