"""The plant-scale benchmark's sampler of busy worker slots, on a metadata table of its own."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench.plant_scale import SlotSampler


def test_the_sampler_keeps_the_peak_of_running_task_instances_of_its_dag(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'metadata.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE task_instance (dag_id TEXT, state TEXT)"))
        conn.execute(
            sa.text("INSERT INTO task_instance VALUES ('d', 'running'), ('d', 'running'), ('d', 'deferred'), "
                    "('other', 'running')")
        )  # fmt: skip
    sampler = SlotSampler(url, "d", every=0.01)
    sampler.start()
    while sampler.samples < 3:
        time.sleep(0.01)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE task_instance SET state = 'success' WHERE dag_id = 'd'"))
    time.sleep(0.05)
    assert sampler.stop() == 2
    engine.dispose()


def test_a_sampler_that_cannot_read_says_so(tmp_path: Path) -> None:
    sampler = SlotSampler(f"sqlite:///{tmp_path / 'empty.db'}", "d", every=0.01)
    sampler.start()
    sampler.join(10)  # it ends at its first read
    with pytest.raises(RuntimeError, match="no such table"):
        sampler.stop()
