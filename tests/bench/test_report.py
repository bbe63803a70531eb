"""The benchmarks' pure parts, without a broker: percentiles, timers, and the renderer on fixed data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench import report, results
from bench.harness import Stopwatch, percentile, time_each
from bench.measurements import (
    DagBagParse,
    DayReports,
    FullSyncs,
    HookRoundTrips,
    IdleReader,
    InstantRoundTrips,
    OriginalPattern,
    PassResult,
    PeakRss,
    RoundTrips,
)

MS = 1e-3


def test_percentile_is_the_nearest_rank_of_the_sorted_samples():
    samples = [float(v) for v in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose
    assert percentile(samples, 50) == 51.0  # rank round(0.5 * 99) = 50 of 1 .. 100
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile(samples, 0) == 1.0
    assert percentile([7.0], 99) == 7.0


def test_time_each_warms_up_untimed_then_times_each_call():
    calls: list[int] = []
    samples = time_each(calls.append, 3, warm_up=2)
    assert calls == [0, 1, 0, 1, 2]
    assert len(samples) == 3 and all(s >= 0 for s in samples)
    with Stopwatch() as watch:
        pass
    assert watch.seconds >= 0


def instant(broker: str, wait: int, hook_ms: float) -> InstantRoundTrips:
    rows = [
        (wait, "broker floor: produce -> consume", [1 * MS] * 10),
        (wait, "hook.request, echo off (token match)", [hook_ms * MS] * 10),
        (wait, "hook.request, echo on (request_id)", [hook_ms * MS] * 9 + [30 * MS]),
    ]
    return InstantRoundTrips(broker, wait, rows, requests=1000, warm_up=20)


def round_trips(outcomes: list[str]) -> RoundTrips:
    return RoundTrips(
        off=HookRoundTrips(False, [6 * MS] * 10, serial_s=6.0),
        on=HookRoundTrips(True, [7 * MS] * 10, serial_s=7.0, pipelined_s=2.0),
        original=OriginalPattern([15.0] + [3.0] * (len(outcomes) - 1), outcomes),
        requests=1000,
        baseline_requests=len(outcomes),
    )


def one_pass(broker: str, *, wait: int, hook_ms: float, sync_s: float, dagbag: bool) -> PassResult:
    measured = [
        instant(broker, wait, hook_ms),
        round_trips(["timeout", "right", "right"] if broker == "tansu" else ["timeout", "not-for-me"]),
        FullSyncs({1000: 1.0, 10_000: sync_s}),
        DayReports(100, {1: 12.0, 4: 8.0}),
        *([DagBagParse(0.08, 1.4, 7, runs=3)] if dagbag else []),
        PeakRss(
            {
                size: {
                    "peak_rss_kb": 220 * 1024,
                    "rss_kb": 200 * 1024 + 512,
                    "rss_kb_after_warmup": 200 * 1024,
                }
                for size in (1000, 10_000)
            }
        ),
        IdleReader(
            {"the hook's": wait, "the triggerer's": 500},
            {"broker_cpu": 0.0},
            {
                "the hook's": {"fetches_per_s": 10.0, "broker_cpu": 0.02},
                "the triggerer's": {"fetches_per_s": 2.0, "broker_cpu": 0.01},
            },
            seconds=10.0,
        ),
    ]
    return PassResult(broker, measured)


@pytest.fixture
def passes() -> list[PassResult]:
    return [
        one_pass("tansu", wait=5, hook_ms=4.0, sync_s=4.0, dagbag=True),
        one_pass("apache", wait=100, hook_ms=3.0, sync_s=6.0, dagbag=False),
    ]


def by_name(passes: list[PassResult]) -> dict[str, tuple[str, ...]]:
    headers, rows = report.merge(passes)
    assert headers == ("benchmark", "tansu", "Apache Kafka", "target", "status")
    return {row[0]: row[1:] for row in rows}


def test_rows_carry_each_brokers_figure_and_target(passes):
    rows = by_name(passes)
    assert rows["instant responder, hook, echo off (token match), fetch wait: the hook's default"] == (
        "p50 4.0 ms, p99 4.0 ms (5 ms)",
        "p50 3.0 ms, p99 3.0 ms (100 ms)",
        "tansu: p50 <= 5 ms, p99 <= 20 ms; Apache Kafka: p50 <= 2 ms, p99 <= 10 ms",
        "tansu: met; Apache Kafka: NOT met",
    )
    # p99 of ten samples is the largest: the one slow answer fails Apache Kafka's 10 ms target
    echo_on = rows["instant responder, hook, echo on (request_id), fetch wait: the hook's default"]
    assert echo_on[1] == "p50 3.0 ms, p99 30.0 ms (100 ms)"
    assert echo_on[3] == "NOT met"  # on both brokers: one status for the row
    assert rows["full sync, 10,000 partner requests"] == (
        "4.00 s",
        "6.00 s",
        "<= 5 s",
        "tansu: met; Apache Kafka: NOT met",
    )
    assert rows["full sync, 1,000 partner requests"] == ("1.00 s", "1.00 s", "", "")
    assert rows["day report, 100 units (2,800 records), echo on, 1-partition topics"][2:] == (
        "<= 10 s",
        "NOT met",
    )
    assert rows["1,000 requests pipelined (echo on, 16 in flight)"][0] == "2.00 s (500/s), 3.0x faster"


def test_a_figure_measured_once_spans_the_brokers_and_a_missing_one_is_a_dash(passes):
    rows = by_name(passes)
    assert rows["DagBag fill of dags/ (7 DAGs), beyond importing Airflow"] == (
        "0.08 s (importing Airflow: 1.40 s)",
        "(any broker)",
        "<= 2 s",
        "met",
    )
    assert rows["original pattern / hook (echo off), p50"] == ("500x slower", "—", "", "")
    assert rows["round trip, original pattern (2 requests)"][1] == "no right answer (1 timeout, 1 not-for-me)"


def test_targets_hold_only_for_the_sizes_they_name():
    small = PassResult("tansu", [FullSyncs({100: 9.0, 300: 9.0}), DayReports(5, {1: 20.0, 4: 20.0})])
    assert all(row[-2:] == ("", "") for row in report.merge([small])[1])


def test_peak_rss_is_flat_only_within_the_stated_spread():
    def rss(peaks_mib: list[float]) -> report.Row:
        by_size = {
            1000 * (i + 1): {"peak_rss_kb": int(p * 1024), "rss_kb": 1024, "rss_kb_after_warmup": 1024}
            for i, p in enumerate(peaks_mib)
        }
        return report.render(PeakRss(by_size)).rows[-1]

    assert rss([200.0, 203.0]).met is True
    assert rss([200.0, 215.0]).met is False


def test_the_console_table_and_results_head_show_the_same_rows(passes):
    info = report.RunInfo(
        about={
            "cpu": "a CPU",
            "memory": "1.0 GiB",
            "os": "Linux",
            "python": "3.11",
            "airflow": "3.3",
            "confluent-kafka": "2",
            "load": "1.00 1.00 1.00",
        },
        brokers="tansu: tansu; Apache Kafka: one node",
        minutes=7.0,
        when=datetime(2026, 12, 2, 4, 30, tzinfo=UTC),
        load_at_end="2.00 2.00 2.00",
    )
    head = report.results_head(passes, info)
    console = report.console(passes, info)
    names = list(by_name(passes))
    for name in names:
        assert f"| {name} |" in head
        assert name in console
    assert "- date: 2026-12-02 04:30 UTC" in head
    assert "- whole run: 7.0 minutes" in head
    notes = head.split("## How each figure is measured\n\n", 1)[1].splitlines()
    assert len(notes) == len(set(notes)) == 9  # the two passes' identical notes appear once


def test_the_head_is_rewritten_and_the_other_runs_sections_are_kept(tmp_path, monkeypatch):
    path = tmp_path / "RESULTS.md"
    monkeypatch.setattr(results, "RESULTS", path)
    path.write_text(
        "# Benchmark results\n\nold table\n\n"
        f"{results.IDLE_MACHINE_HEADING}\n\nidle figures\n\n"
        "## How each figure is measured\n\nold notes\n\n"
        f"{results.SOAK_HEADING}\n\nsoak figures\n\n"
        f"{results.PRODUCTION_HEADING} (a run)\n\nproduction figures\n"
    )
    results.write_head("# Benchmark results\n\nnew table\n\n## How each figure is measured\n\nnew notes\n")
    text = path.read_text()
    assert "old table" not in text and "old notes" not in text
    assert text.startswith("# Benchmark results\n\nnew table\n")
    for kept in ("idle figures", "soak figures", "production figures"):
        assert text.count(kept) == 1
