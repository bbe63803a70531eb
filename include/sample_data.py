"""Sample data for the MES database: a small press shop with a few weeks of day reports.

Units are ``PT10``, ``PT11``, ... ("Press line 10", ...). Every unit has one report per day with
three 8-hour shifts and their day average:

* availability ``D``, performance ``P`` and quality ``Q`` between 0.6 and 0.99 per shift;
* ``OEE = D x P x Q``;
* ``ProductionTime`` = 8 h x ``D`` (hours the line ran out of 8 planned);
* 1-6 failures per shift: ``MTBF`` = run minutes / failures, ``MTTR`` = stopped minutes / failures;
* shift ``T`` ("Day Average") is the mean of A, B and C for every indicator except ``OEE``, which
  is ``D x P x Q`` of those means, so the OEE identity holds on every shift.

Values are drawn from a generator seeded with (seed, unit code, date): the same arguments give the
same report ids and values. Running it again adds only what is missing (units by code, reports by
unit and day).

From the command line::

    python -m include.sample_data --conn-id mes_db
    python -m include.sample_data --url sqlite:////tmp/mes.sqlite3 --units 8 --weeks 6
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy.engine import Engine

from include.day_report_keys import INDICATORS
from include.mes.models import NewDayReport, new_object_id
from include.mes.repository import MesRepository

__all__ = ["PlantSummary", "day_report_values", "generate_plant", "main"]

FIRST_UNIT_NUMBER = 10
#: A plant's worth and more: ``PT10`` to ``PT1009``
MAX_UNITS = 1000
SHIFT_HOURS = 8.0
PROCESSES = ("Stamping", "Deep drawing", "Blanking", "Bending", "Trimming", "Piercing")
STATUSES = ("Running", "Running", "Running", "Setup", "Maintenance", "Stopped")


@dataclass(frozen=True)
class PlantSummary:
    """What :func:`generate_plant` did."""

    units_created: int
    units_existing: int
    reports_created: int
    reports_existing: int
    start_date: date
    end_date: date
    unit_codes: tuple[str, ...]

    def describe(self) -> str:
        return (
            f"production units: {self.units_created} created, {self.units_existing} already there "
            f"({', '.join(self.unit_codes)})\n"
            f"day reports {self.start_date} to {self.end_date}: {self.reports_created} created, "
            f"{self.reports_existing} already there"
        )


def day_report_values(rng: random.Random) -> dict[tuple[str, str], float]:
    """The 28 values of one plausible day report, drawn from *rng* (see the module docstring)."""
    values: dict[tuple[str, str], float] = {}
    for shift in ("A", "B", "C"):
        availability = round(rng.triangular(0.60, 0.99, 0.88), 4)
        performance = round(rng.triangular(0.60, 0.99, 0.90), 4)
        quality = round(rng.triangular(0.60, 0.99, 0.97), 4)
        failures = rng.randint(1, 6)
        run_minutes = SHIFT_HOURS * 60 * availability
        values.update(
            {
                (shift, "D"): availability,
                (shift, "P"): performance,
                (shift, "Q"): quality,
                (shift, "OEE"): round(availability * performance * quality, 4),
                (shift, "MTBF"): round(run_minutes / failures, 1),
                (shift, "MTTR"): round((SHIFT_HOURS * 60 - run_minutes) / failures, 1),
                (shift, "ProductionTime"): round(SHIFT_HOURS * availability, 2),
            }
        )
    digits = {"D": 4, "P": 4, "Q": 4, "MTBF": 1, "MTTR": 1, "ProductionTime": 2}
    for indicator, ndigits in digits.items():
        values[("T", indicator)] = round(sum(values[(s, indicator)] for s in "ABC") / 3, ndigits)
    values[("T", "OEE")] = round(values[("T", "D")] * values[("T", "P")] * values[("T", "Q")], 4)
    assert len(values) == 4 * len(INDICATORS)
    return values


def generate_plant(
    engine: Engine,
    *,
    units: int = 5,
    weeks: int = 4,
    end_date: date | None = None,
    seed: int = 42,
) -> PlantSummary:
    """Fill the MES database with *units* production units and *weeks* weeks of day reports.

    Creates the schema if needed. Existing units (by code) and reports (by unit and day) are kept
    as they are, so a second run adds nothing.

    :param units: how many units, ``PT10`` upwards; default 5.
    :param weeks: how many weeks of reports, ending at *end_date*; default 4.
    :param end_date: the last report day; default yesterday (the machine's local date).
    :param seed: seeds the values and report ids; default 42.
    """
    if isinstance(units, bool) or not isinstance(units, int) or not 1 <= units <= MAX_UNITS:
        raise ValueError(f"Invalid units {units!r}: expected 1-{MAX_UNITS}")
    if isinstance(weeks, bool) or not isinstance(weeks, int) or not 1 <= weeks <= 520:
        raise ValueError(f"Invalid weeks {weeks!r}: expected 1-520")
    if end_date is None:
        end_date = date.today() - timedelta(days=1)
    start_date = end_date - timedelta(days=7 * weeks - 1)

    repo = MesRepository(engine)
    repo.create_schema()
    units_created = reports_created = reports_existing = 0
    codes = []
    for number in range(FIRST_UNIT_NUMBER, FIRST_UNIT_NUMBER + units):
        code = f"PT{number}"
        codes.append(code)
        unit = repo.production_unit_by_code(code)
        if unit is None:
            unit_rng = random.Random(f"{seed}:{code}")
            unit = repo.add_production_unit(
                code, f"Press line {number}", unit_rng.choice(STATUSES), unit_rng.choice(PROCESSES)
            )
            units_created += 1
        existing = repo.existing_day_report_dates(unit.id, start_date, end_date)
        reports_existing += len(existing)
        new = []
        for offset in range((end_date - start_date).days + 1):
            day = start_date + timedelta(days=offset)
            if day in existing:
                continue
            rng = random.Random(f"{seed}:{code}:{day.isoformat()}")
            # The MES writes a day's report early the next morning.
            written = datetime.combine(day + timedelta(days=1), time(6, 0), tzinfo=UTC).timestamp()
            report_id = new_object_id(written, rng)
            new.append(NewDayReport(unit.id, day, day_report_values(rng), report_id))
        reports_created += len(repo.add_day_reports(new))
    return PlantSummary(
        units_created=units_created,
        units_existing=units - units_created,
        reports_created=reports_created,
        reports_existing=reports_existing,
        start_date=start_date,
        end_date=end_date,
        unit_codes=tuple(codes),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: fill the database of an Airflow connection or a SQLAlchemy URL."""
    parser = argparse.ArgumentParser(prog="python -m include.sample_data", description=__doc__.split("\n")[0])
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--conn-id", default=None, help="Airflow connection id (default: mes_db)")
    target.add_argument("--url", default=None, help="SQLAlchemy URL, e.g. sqlite:////tmp/mes.sqlite3")
    parser.add_argument("--units", type=int, default=5, help="number of production units (default 5)")
    parser.add_argument("--weeks", type=int, default=4, help="weeks of day reports (default 4)")
    parser.add_argument(
        "--end-date",
        type=date.fromisoformat,
        default=None,
        help="last report day, YYYY-MM-DD (default yesterday)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    args = parser.parse_args(argv)

    from include.mes.db import engine_from_url, mes_engine

    engine = engine_from_url(args.url) if args.url else mes_engine(args.conn_id or "mes_db")
    try:
        summary = generate_plant(
            engine, units=args.units, weeks=args.weeks, end_date=args.end_date, seed=args.seed
        )
    except ValueError as exc:
        parser.error(str(exc))
    finally:
        shown = engine.url.render_as_string(hide_password=True)
        engine.dispose()
    print(f"MES database {shown}")
    print(summary.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
