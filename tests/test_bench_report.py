"""Goals judged on medians, with each repetition's own ratio beside them."""

from __future__ import annotations

import dataclasses

import pytest
from bench.report import goal_rows, goals, markdown, paired_ratios, summarize
from bench.run import parse_args
from bench.workloads import Sample

# The goal: governed `pgbench -S -c 8`, simple, at least 0.6x pgbouncer.
GOAL = next(
    g
    for g in goals(stream_rows=10_000_000)
    if (g.case, g.target, g.reference) == ("c8-simple", "sluice-governed", "pgbouncer")
)


def _sample(target: str, rep: int, tps: float, error: str | None = None) -> Sample:
    return Sample(
        workload="pgbench-S",
        case="c8-simple",
        target=target,
        rep=rep,
        metrics={} if error else {"tps": tps},
        error=error,
    )


def test_each_repetition_pairs_the_target_with_its_own_reference() -> None:
    samples = [
        _sample("pgbouncer", 0, 1000.0),
        _sample("sluice-governed", 0, 650.0),
        _sample("pgbouncer", 1, 500.0),  # a slow spell of the host, on both
        _sample("sluice-governed", 1, 290.0),
        _sample("pgbouncer", 2, 1000.0),
        _sample("sluice-governed", 2, 0.0, error="refused"),  # no pair: left out
        _sample("direct", 0, 2000.0),
    ]
    assert paired_ratios(GOAL, samples) == pytest.approx([0.65, 0.58])
    absolute = dataclasses.replace(GOAL, reference=None, bound=1.0)
    assert paired_ratios(absolute, samples) == []

    rows = goal_rows([GOAL], summarize(samples), masking_inactive=set(), samples=samples)
    assert rows[0]["per_repetition"] == pytest.approx([0.65, 0.58])
    # Judged on the medians: 470 / 1000 (the median of 650 and 290 against 1000).
    assert rows[0]["status"] == "MISS"
    assert rows[0]["value"] == pytest.approx(0.47)


def test_the_report_shows_the_range_only_with_several_repetitions() -> None:
    run = {
        "started": "2026-12-07T00:00:00+00:00",
        "machine": {
            "nproc": 2,
            "cpu_model": "x",
            "memory_gb": 1.0,
            "python": "3.11",
            "load_avg_at_start": [0.0, 0.0, 0.0],
        },
        "versions": {},
        "args": {"quick": False, "repeat": 2, "seconds": 8.0},
    }
    row = {**dataclasses.asdict(GOAL), "status": "MISS", "value": 0.47, "caveat": None}
    several = markdown(run, [], [{**row, "per_repetition": [0.65, 0.58]}])
    assert "| 0.47x (paired 0.61x, 0.58x-0.65x over 2) | **MISS** |" in several
    one = markdown(run, [], [{**row, "per_repetition": [0.65]}])
    assert "| 0.47x | **MISS** |" in one
    older = markdown(run, [], [row])  # runs written before the field existed
    assert "| 0.47x | **MISS** |" in older


def test_slices_of_one_repetition_pair_with_their_own_slice() -> None:
    samples = [
        _sample("pgbouncer", 0, 1000.0),
        _sample("sluice-governed", 0, 600.0),
        dataclasses.replace(_sample("pgbouncer", 0, 500.0), slice=1),
        dataclasses.replace(_sample("sluice-governed", 0, 350.0), slice=1),
    ]
    assert paired_ratios(GOAL, samples) == pytest.approx([0.6, 0.7])


def test_slices_are_checked_against_the_seconds_they_cut() -> None:
    settings = parse_args(["--seconds", "8", "--slices", "4"])
    assert (settings.seconds, settings.slices) == (8.0, 4)
    assert parse_args([]).slices == 1
    for bad in (["--seconds", "8", "--slices", "9"], ["--slices", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
