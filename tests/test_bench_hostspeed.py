"""The host-speed probes that a benchmark run reports at its start and end."""

from __future__ import annotations

from bench.hostspeed import describe, probe
from bench.report import markdown


def test_the_probes_measure_positive_rates_and_times() -> None:
    speed = probe()
    assert set(speed) == {"sha256_gb_s", "copy_gb_s", "python_us", "python_median_us"}
    assert speed["sha256_gb_s"] > 0.01
    assert speed["copy_gb_s"] > 0.1
    assert 0 < speed["python_us"] <= speed["python_median_us"]


def test_the_report_line_pairs_start_and_end() -> None:
    start = {"sha256_gb_s": 2.6, "copy_gb_s": 12.5, "python_us": 1400, "python_median_us": 1500}
    end = {"sha256_gb_s": 1.3, "copy_gb_s": 6.0, "python_us": 2800, "python_median_us": 5000}
    line = describe(start, end)
    assert "SHA-256 2.6 / 1.3 GB/s" in line
    assert "memory copy 12.5 / 6 GB/s" in line
    assert "1400 / 2800 µs at best" in line
    assert "1500 / 5000 µs median" in line
    assert describe(start, None).startswith("Host speed at start / end: SHA-256 2.6 GB/s")
    assert describe(None, end) == ""


def test_a_run_without_probes_reports_no_speed_line() -> None:
    machine = {
        "nproc": 2,
        "cpu_model": "x",
        "memory_gb": 1.0,
        "python": "3.11",
        "load_avg_at_start": [0.0, 0.0, 0.0],
    }
    run = {
        "started": "2026-12-07T00:00:00+00:00",
        "machine": machine,
        "versions": {},
        "args": {"quick": True, "repeat": 1, "seconds": 1.0},
    }
    assert "Host speed" not in markdown(run, [], [])
    machine["host_speed_at_start"] = {"sha256_gb_s": 2.0}
    assert "Host speed at start / end: SHA-256 2 GB/s" in markdown(run, [], [])
