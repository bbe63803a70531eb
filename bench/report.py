"""The one renderer of ``bench/run_all.py``: rows, targets and notes from the measurements' data, the
console table, and the head of ``bench/RESULTS.md`` (the sections other runs write are kept).

Pure: nothing here touches a broker, and only :func:`write_results` touches a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import singledispatch
from typing import Any

from bench import results
from bench.harness import BROKER_COLUMNS, percentile
from bench.measurements import (
    DAY_REPORT_PARTITIONS,
    ORIGINAL_CONSUMER,
    ORIGINAL_LIMIT_S,
    ORIGINAL_PRODUCER,
    DagBagParse,
    DayReports,
    FullSyncs,
    IdleReader,
    InstantRoundTrips,
    PassResult,
    PeakRss,
    RoundTrips,
)

#: Instant-responder targets per broker: (p50 ms, p99 ms).
INSTANT_TARGETS = {"tansu": (5, 20), "apache": (2, 10)}
#: The full sync's target: this many partner requests in at most this many seconds.
SYNC_TARGET = (10_000, 5.0)
#: The day report's target: this many units in at most this many seconds, on any layout.
DAY_REPORT_TARGET = (100, 10.0)
#: The DagBag fill's target, in seconds.
DAGBAG_TARGET_S = 2.0


@dataclass(frozen=True)
class Row:
    """One figure of one pass; ``met`` is ``None`` when it has no target.

    :param any_broker: measured once, without a broker: it spans the brokers' columns.
    """

    name: str
    figure: str
    target: str = ""
    met: bool | None = None
    any_broker: bool = False

    @property
    def status(self) -> str:
        return "" if self.met is None else ("met" if self.met else "NOT met")

    def line(self) -> str:
        """The row as the run prints it when it is measured."""
        return f"  {self.name}: {self.figure}" + (f"  [{self.target}: {self.status}]" if self.target else "")


@dataclass
class Rendered:
    """What one measurement shows: its rows, and how it was measured."""

    rows: list[Row]
    notes: list[str]


@singledispatch
def render(measurement: Any) -> Rendered:
    """The rows and notes of one measurement's data.

    :param measurement: one of the dataclasses of ``bench/measurements.py``.
    """
    raise TypeError(f"no rendering for {type(measurement).__name__}")


def _ms(samples: list[float]) -> str:
    return f"p50 {percentile(samples, 50) * 1e3:.1f} ms, p99 {percentile(samples, 99) * 1e3:.1f} ms"


@render.register
def _(m: InstantRoundTrips) -> Rendered:
    rows = []
    p50_target, p99_target = INSTANT_TARGETS[m.broker]
    for wait, name, samples in m.rows:
        p50, p99 = percentile(samples, 50) * 1e3, percentile(samples, 99) * 1e3
        figure = f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({wait} ms)"
        which = "the hook's default" if wait == m.hook_wait else "1 ms"
        label = f"{name.replace('hook.request', 'instant responder, hook')}, fetch wait: {which}"
        if name.startswith("broker floor"):
            rows.append(Row(label, figure))
        else:
            target = f"p50 <= {p50_target} ms, p99 <= {p99_target} ms"
            rows.append(Row(label, figure, target, p50 <= p50_target and p99 <= p99_target))
    note = (
        f"Instant responder (`bench/request_roundtrip.py`): {m.requests:,} sequential "
        f"`list_partner_requests()` calls on one hook (after {m.warm_up} warm-up "
        "calls), answered at once by a responder in the bench process that reads only "
        "`BLK_Part_Lst`, on a broker of its own; the floor is one produce→consume hop with the same "
        "client settings, measured just before. Topics of "
        f"{m.partitions} partitions, fresh for each measurement: on tansu's in-memory storage a "
        "fetch costs more as its partition holds more batches, and every request is its own batch. "
        "On tansu once at the hook's default `fetch.wait.max.ms` there (5 ms), once at 1 ms: tansu "
        "holds every fetch for the whole wait even when data arrives, and a round trip has two "
        "fetches. On Apache Kafka at the hook's default there, 100 ms: a fetch returns "
        "when data arrives, and the setting only decides how often an idle reader asks. Targets: "
        "p50 <= 5 ms, p99 <= 20 ms on tansu; p50 <= 2 ms, p99 <= 10 ms on Apache Kafka."
    )
    return Rendered(rows, [note])


@render.register
def _(m: RoundTrips) -> Rendered:
    off, on, orig = m.off.samples, m.on.samples, m.original
    rows = [Row("round trip, hook, echo off", _ms(off)), Row("round trip, hook, echo on", _ms(on))]
    answered = [s for s, o in zip(orig.samples, orig.outcomes, strict=True) if o == "right"]
    counts = {o: orig.outcomes.count(o) for o in dict.fromkeys(orig.outcomes)}
    summary = ", ".join(f"{n} {o}" for o, n in counts.items())
    name = f"round trip, original pattern ({m.baseline_requests} requests)"
    if answered:
        p50_orig = percentile(answered, 50)
        rows.append(Row(name, f"p50 {p50_orig:.2f} s, p99 {percentile(orig.samples, 99):.2f} s ({summary})"))
        rows.append(
            Row("original pattern / hook (echo off), p50", f"{p50_orig / percentile(off, 50):,.0f}x slower")
        )
    else:
        rows.append(Row(name, f"no right answer ({summary})"))
    serial, pipelined = m.off.serial_s, m.on.pipelined_s
    assert pipelined is not None, "the echo-on round trips are pipelined too"
    rows.append(
        Row(f"{m.requests:,} requests serial (echo off)", f"{serial:.2f} s ({m.requests / serial:,.0f}/s)")
    )
    rows.append(
        Row(
            f"{m.requests:,} requests pipelined (echo on, 16 in flight)",
            f"{pipelined:.2f} s ({m.requests / pipelined:,.0f}/s), {serial / pipelined:.1f}x faster",
        )
    )
    notes = [
        f"Round trips: {m.requests:,} sequential `list_partner_requests(start, 1)` calls on one hook "
        f"(after {m.warm_up} warm-up calls) through the sandbox, on topics of 1 partition (the project's "
        "default), each answer checked against the ledger; p50/p99 of each call's wall time. Echo "
        "off is the original gateway (matched by token); echo on matches by request_id.",
        f"Original pattern: the seed document's views, in confluent-kafka: per request a new producer "
        f"({ORIGINAL_PRODUCER}) sends, then a new consumer with {ORIGINAL_CONSUMER} (kafka-python's "
        "defaults, which the seed used; the group id gets a per-run suffix) subscribes to BLK_Res and "
        "takes the first answer for its token, decoded as the seed does; a request that read nothing "
        "commits its position when it closes, as kafka-python does. The seed waits forever; here "
        f"each request gives up after {ORIGINAL_LIMIT_S:.0f} s ('timeout'). p50 is over the right answers, "
        "p99 over all requests. With `auto.offset.reset=latest` the first request of a new group "
        "misses its answer, which came before the group join (about half the session timeout on "
        "tansu) finished.",
        f"Serial against pipelined: the same {m.requests:,} one-item pages, one at a time without echo (one "
        "request per token in flight), then with `call_many` and echo (16 in flight).",
    ]
    return Rendered(rows, notes)


@render.register
def _(m: FullSyncs) -> Rendered:
    target_size, target_s = SYNC_TARGET
    rows = []
    for size, seconds in m.seconds.items():
        if size == target_size:
            rows.append(
                Row(
                    f"full sync, {size:,} partner requests",
                    f"{seconds:.2f} s",
                    f"<= {target_s:.0f} s",
                    seconds <= target_s,
                )
            )
        else:
            rows.append(Row(f"full sync, {size:,} partner requests", f"{seconds:.2f} s"))
    note = (
        "Full sync: `ListPartnerRequestsOperator` (what the sync DAGs' task runs) with a new hook: every "
        "page of 100 from the gateway without echo, each upserted into a new SQLite MES database as it "
        "is read; timed from the operator's creation (its hook's first request also waits for the "
        "idempotent producer's id, about 0.5-1 s on tansu) to the last upsert's commit; fresh topics "
        "and gateway process for each size. The "
        f"ledger holds {sum(m.seconds):,} partner requests of {max(m.seconds):,} ERP agents (seeded with a cheap password "
        "hash: nothing here checks those passwords)."
    )
    return Rendered(rows, [note])


@render.register
def _(m: DayReports) -> Rendered:
    records = m.records_per_unit * m.units
    target_units, target_s = DAY_REPORT_TARGET
    rows = []
    for partitions, seconds in m.seconds.items():
        name = f"day report, {m.units} units ({records:,} records), echo on, {partitions}-partition topics"
        figure = f"{seconds:.2f} s ({records / seconds:,.0f} records/s)"
        if m.units == target_units:
            rows.append(Row(name, figure, f"<= {target_s:.0f} s", seconds <= target_s))
        else:
            rows.append(Row(name, figure))
    layouts = " and of ".join(str(p) for p in DAY_REPORT_PARTITIONS[1:])
    note = (
        "Day report: with one hook and echo, `EnsureRecordTypeOperator` then a `CreateRecordsOperator` "
        f"for each of the {m.units} reports ({m.records_per_unit} records each, pipelined 16 at a time), in sequence as the DAG's "
        "one-slot pool runs them; timed from the hook's creation; every record is then counted on the "
        f"ledger. Twice: on topics of 1 partition (the project's default) and of {layouts}, because tansu's "
        f"fetches slow down as a partition grows, and {records:,} requests plus {records:,} answers on one partition "
        "reach that point."
    )
    return Rendered(rows, [note])


@render.register
def _(m: DagBagParse) -> Rendered:
    row = Row(
        f"DagBag fill of dags/ ({m.dags} DAGs), beyond importing Airflow",
        f"{m.fill_s:.2f} s (importing Airflow: {m.import_airflow_s:.2f} s)",
        f"<= {DAGBAG_TARGET_S:.0f} s",
        m.fill_s <= DAGBAG_TARGET_S,
        any_broker=True,
    )
    note = (
        f"DagBag: median of {m.runs} fresh processes (`bench/dagbag_parse.py`): the time of "
        "`DagBag('dags/')` after `import airflow, airflow.sdk` and the DagBag class, which are timed apart."
    )
    return Rendered([row], [note])


@render.register
def _(m: PeakRss) -> Rendered:
    peaks = {size: result["peak_rss_kb"] / 1024 for size, result in m.by_size.items()}
    growth = {size: (r["rss_kb"] - r["rss_kb_after_warmup"]) / 1024 for size, r in m.by_size.items()}
    spread = max(peaks.values()) - min(peaks.values())
    flat = spread <= max(4.0, 0.05 * min(peaks.values())) and max(growth.values()) <= 4.0
    rows = []
    for size, peak in peaks.items():
        name = f"peak RSS, {size:,} requests, one hook"
        figure = f"{peak:.1f} MiB (RSS {growth[size]:+.1f} MiB from warm-up to the end)"
        if size == max(peaks):
            rows.append(Row(name, figure, "flat with the count", flat))
        else:
            rows.append(Row(name, figure))
    note = (
        "Peak RSS: `ru_maxrss` of a process (`bench/rss_probe.py`) making that many requests through "
        "one hook (echo, pipelined in batches of 500) against an instant responder in the bench "
        f"process, on topics of {m.partitions} partitions (on one, tansu stalls after a few thousand). "
        "The peak is the process's `ru_maxrss`; the growth is its resident size (VmRSS) after the "
        "requests minus after a warm-up of 100. 'Flat' means the peaks differ by at most 4 MiB or 5% "
        f"(here {spread:.1f} MiB) and no run grew by more than 4 MiB."
    )
    return Rendered(rows, [note])


@render.register
def _(m: IdleReader) -> Rendered:
    rows = [
        Row(
            f"idle reader, fetch wait: {whose} default",
            f"{reader['fetches_per_s']:.1f} fetches/s; broker CPU {reader['broker_cpu']:.1%} "
            f"(broker alone {m.alone['broker_cpu']:.1%}) ({m.waits[whose]} ms)",
        )
        for whose, reader in m.readers.items()
    ]
    note = (
        "Idle reader (`bench/idle_fetch_cpu.py`, which also measures other waits): one consumer "
        f"assigned to an empty topic for {m.seconds:.0f} s at the hook's, then the triggerer's default "
        "`fetch.wait.max.ms` on that broker; fetch requests a second from librdkafka's statistics, "
        "broker CPU from its process's CPU time (a share of one core), next to the same broker with "
        f"no client for {m.seconds:.0f} s."
    )
    return Rendered(rows, [note])


# ------------------------------------------------------------------------------ the table
def merge(passes: list[PassResult]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """One row per benchmark with a figure column per broker: ``(headers, rows)``. A figure that
    does not depend on the broker (measured in one pass only, marked so) spans the columns.

    :param passes: the passes, in the order of their columns.
    """
    columns = [BROKER_COLUMNS[p.broker] for p in passes]
    merged: dict[str, dict[str, Row]] = {}
    for p in passes:
        for m in p.measurements:
            for row in render(m).rows:
                merged.setdefault(row.name, {})[BROKER_COLUMNS[p.broker]] = row
    rows = []
    for name, by_broker in merged.items():
        independent = any(row.any_broker for row in by_broker.values())
        missing = "(any broker)" if independent else "—"
        figures = [by_broker[c].figure if c in by_broker else missing for c in columns]
        targets = {row.target for row in by_broker.values() if row.target}
        statuses = {c: row.status for c, row in by_broker.items() if row.status}
        if len(targets) <= 1:
            target = next(iter(targets), "")
        else:
            target = "; ".join(f"{c}: {row.target}" for c, row in by_broker.items() if row.target)
        if len(set(statuses.values())) <= 1:
            status = next(iter(statuses.values()), "")
        else:
            status = "; ".join(f"{c}: {v}" for c, v in statuses.items())
        rows.append((name, *figures, target, status))
    return ("benchmark", *columns, "target", "status"), rows


def notes(passes: list[PassResult]) -> list[str]:
    """How each figure is measured: every pass's notes, each once, in the order they came."""
    return list(dict.fromkeys(n for p in passes for m in p.measurements for n in render(m).notes))


def table(headers: tuple[str, ...], rows: list[tuple[str, ...]], markdown: bool) -> str:
    """The table as Markdown, or as aligned plain text for the console.

    :param headers: the column titles.
    :param rows: the rows, as many cells as titles.
    :param markdown: Markdown rather than plain text.
    """
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


@dataclass
class RunInfo:
    """What the head of the results says about the run.

    :param about: the machine, from ``harness.machine()`` (its ``load`` is at the start).
    :param brokers: the brokers, described.
    :param minutes: the whole run's wall time, in minutes.
    :param when: when it ended (UTC).
    :param load_at_end: the load averages at the end.
    """

    about: dict[str, str]
    brokers: str
    minutes: float
    when: datetime
    load_at_end: str


def console(passes: list[PassResult], info: RunInfo) -> str:
    """The summary the run prints at its end: machine, brokers, the table, the time taken."""
    about = info.about
    return "\n".join(
        [
            f"\n{about['cpu']}, {about['memory']}; Python {about['python']}, Airflow {about['airflow']}",
            info.brokers,
            table(*merge(passes), markdown=False),
            f"({info.minutes:.1f} minutes)",
        ]
    )


def results_head(passes: list[PassResult], info: RunInfo) -> str:
    """The head of ``bench/RESULTS.md``: the run, the table, and how each figure is measured."""
    about = info.about
    return (
        f"""# Benchmark results

Produced by `make bench` (`.venv/bin/python bench/run_all.py`), which prints the same table. Every
figure is from one run on the machine below, against the broker and gateway named; run it again
to reproduce them on yours.

- date: {info.when.strftime("%Y-%m-%d %H:%M UTC")}
- machine: {about["cpu"]}, {about["memory"]} RAM, {about["os"]}
- load average {about["load"]} at the start, {info.load_at_end} at the end: the machine is shared with
  other work, and the figures move with it (the sync and the day report most: they are CPU-bound
  in the gateway and the broker, which share the two cores with everything else)
- Python {about["python"]}, Apache Airflow {about["airflow"]}, confluent-kafka {about["confluent-kafka"]}
- brokers: {info.brokers}; gateway: the sandbox (`python -m gateway_sandbox serve`), its own process,
  Python-literal answers like the original gateway; a fresh set of topics per measurement
- whole run: {info.minutes:.1f} minutes

{table(*merge(passes), markdown=True)}

## How each figure is measured

"""
        + "\n".join(f"- {note}" for note in notes(passes))
        + "\n"
    )


def write_results(passes: list[PassResult], info: RunInfo) -> None:
    """Refresh the head of ``bench/RESULTS.md``; the soak and production sections come from runs of
    their own (minutes each) and are kept."""
    results.write_head(results_head(passes, info))
