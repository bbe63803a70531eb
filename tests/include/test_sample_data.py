"""The sample plant: counts, idempotence, plausible values, and the command line."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from include.day_report_keys import validate_unit_code
from include.mes import schema
from include.mes.db import engine_from_url
from include.mes.repository import MesRepository
from include.sample_data import day_report_values, generate_plant, main

END = date(2021, 1, 10)
REPO_ROOT = Path(__file__).resolve().parents[2]


def _count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_a_plant_of_a_hundred_units_has_valid_unit_codes(engine: Engine) -> None:
    plant = generate_plant(engine, units=100, weeks=1, end_date=END)
    assert len(set(plant.unit_codes)) == 100 and plant.unit_codes[-1] == "PT109"
    assert [validate_unit_code(code) for code in plant.unit_codes] == list(plant.unit_codes)
    assert len(MesRepository(engine).production_units()) == 100
    with pytest.raises(ValueError, match="Invalid units 1001"):
        generate_plant(engine, units=1001, weeks=1, end_date=END)


def test_generate_plant_counts_and_a_second_run_adds_nothing(engine: Engine) -> None:
    first = generate_plant(engine, units=3, weeks=2, end_date=END, seed=1)
    assert (first.units_created, first.units_existing) == (3, 0)
    assert (first.reports_created, first.reports_existing) == (42, 0)
    assert (first.start_date, first.end_date) == (date(2020, 12, 28), END)
    assert first.unit_codes == ("PT10", "PT11", "PT12")

    second = generate_plant(engine, units=3, weeks=2, end_date=END, seed=1)
    assert (second.units_created, second.units_existing, second.reports_created) == (0, 3, 0)
    assert second.reports_existing == 42
    assert _count(engine, schema.production_units) == 3
    assert _count(engine, schema.day_reports) == 42

    wider = generate_plant(engine, units=4, weeks=3, end_date=END, seed=1)
    assert (wider.units_created, wider.reports_created, wider.reports_existing) == (1, 4 * 21 - 42, 42)
    assert _count(engine, schema.day_reports) == 84

    repo = MesRepository(engine)
    units = repo.production_units()
    assert [(u.code, u.name) for u in units] == [(f"PT{n}", f"Press line {n}") for n in range(10, 14)]
    assert all(u.status and u.process_name for u in units)
    report = repo.day_report(units[0].id, END)
    assert report is not None and len(report.values) == 28
    assert len(report.report_id) == 24
    # An object id's first 4 bytes are the time it was written: the next morning.
    assert int(report.report_id[:8], 16) == 1610344800  # 2021-01-11T06:00:00Z


def test_the_same_seed_gives_the_same_plant(tmp_path) -> None:
    ids = []
    for name in ("a", "b"):
        engine = engine_from_url(f"sqlite:///{tmp_path / name}.sqlite3")
        generate_plant(engine, units=2, weeks=1, end_date=END, seed=5)
        with engine.connect() as conn:
            ids.append(conn.execute(sa.select(schema.day_reports.c.id).order_by("id")).scalars().all())
        engine.dispose()
    assert ids[0] == ids[1] and len(set(ids[0])) == 14


@given(st.integers())
def test_day_report_values_are_plausible(seed: int) -> None:
    values = day_report_values(random.Random(seed))
    assert len(values) == 28
    for shift in "ABCT":
        d, p, q = (values[(shift, i)] for i in "DPQ")
        assert all(0.6 <= v <= 0.99 for v in (d, p, q)), (shift, d, p, q)
        assert values[(shift, "OEE")] == pytest.approx(d * p * q, abs=1e-4)
        assert 0 < values[(shift, "ProductionTime")] <= 8
        assert values[(shift, "ProductionTime")] == pytest.approx(8 * d, abs=0.01)
        assert values[(shift, "MTBF")] > 0 and values[(shift, "MTTR")] > 0
    # The day average is the mean of the shifts, to the indicator's rounding.
    for indicator, rounding in (("D", 5e-5), ("P", 5e-5), ("Q", 5e-5), ("MTBF", 0.05), ("MTTR", 0.05)):
        mean = sum(values[(s, indicator)] for s in "ABC") / 3
        assert values[("T", indicator)] == pytest.approx(mean, abs=rounding + 1e-9)
    mean_time = sum(values[(s, "ProductionTime")] for s in "ABC") / 3
    assert values[("T", "ProductionTime")] == pytest.approx(mean_time, abs=0.005 + 1e-9)
    for shift in "ABC":
        # Uptime plus downtime per failure is the 8-hour shift over a whole number of failures.
        failures = (8 * 60) / (values[(shift, "MTBF")] + values[(shift, "MTTR")])
        assert 1 <= round(failures) <= 6 and abs(failures - round(failures)) < 0.02


def test_command_line_with_a_url(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    assert main(["--url", url, "--units", "2", "--weeks", "1", "--end-date", "2021-01-10"]) == 0
    out = capsys.readouterr().out
    assert "production units: 2 created, 0 already there (PT10, PT11)" in out
    assert "day reports 2021-01-04 to 2021-01-10: 14 created, 0 already there" in out
    with pytest.raises(SystemExit):
        main(["--url", url, "--units", "0"])
    assert "Invalid units 0" in capsys.readouterr().err


def test_command_line_with_the_airflow_connection(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    path = tmp_path / "mes.sqlite3"
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    assert main(["--conn-id", "mes_db", "--units", "1", "--weeks", "1", "--end-date", "2021-01-10"]) == 0
    assert "7 created" in capsys.readouterr().out
    assert path.exists()


def test_runs_as_a_module(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'module.sqlite3'}"
    done = subprocess.run(
        [sys.executable, "-m", "include.sample_data", "--url", url, "--units", "1", "--weeks", "1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "production units: 1 created" in done.stdout
    assert "7 created" in done.stdout
