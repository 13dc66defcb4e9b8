"""How fast this host runs right now: three short probes, taken at a run's start and end.

Ratios in one run compare targets under the same conditions, but the
conditions move between runs: the same cloud machine type has given twice
the time per transaction for every target, pgbouncer included, from one
session to the next, with no CPU steal reported. The probes make such a
host visible in the run's report:

- `sha256_gb_s`: SHA-256 over 4 MiB (libcrypto, the CPU's SHA instructions
  where it has them), compute-bound like TLS;
- `copy_gb_s`: copying a 64 MiB buffer, bound by memory bandwidth;
- `python_us`, `python_median_us`: a fixed interpreted loop of dict, tuple
  and attribute work, the kind of code the gateway runs per message; its
  best and median round, since on a busy host it swings within seconds.

The others are the best of a few rounds; all of it takes about a second.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from typing import Final

ROUNDS: Final = 5
PYTHON_ROUNDS: Final = 40  # the loop's speed swings within seconds on a busy host
_HASHED: Final = bytes(range(256)) * (4 * 2**20 // 256)
_COPIED_BYTES: Final = 64 * 2**20


def _seconds(work: Callable[[], object], rounds: int = ROUNDS) -> list[float]:
    """Each round's time, sorted."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return sorted(times)


def _best_seconds(work: Callable[[], object], rounds: int = ROUNDS) -> float:
    return _seconds(work, rounds)[0]


class _Record:
    __slots__ = ("key", "value")

    def __init__(self, key: str, value: int) -> None:
        self.key = key
        self.value = value


def _python_loop() -> int:
    """A few milliseconds of interpreter work on a small working set."""
    table: dict[str, int] = {}
    total = 0
    for i in range(4000):
        record = _Record(f"k{i % 97}", i)
        table[record.key] = table.get(record.key, 0) + record.value
        pair = (record.key, record.value)
        total += len(pair[0]) + pair[1] % 7
    return total + len(table)


def probe() -> dict[str, float]:
    """The three figures, rounded for reports."""
    hashed = _best_seconds(lambda: hashlib.sha256(_HASHED).digest())
    source = bytearray(b"\x5a" * _COPIED_BYTES)  # touched: no page faults in the copy
    target = bytearray(_COPIED_BYTES)
    target[:] = source

    def copy() -> None:
        target[:] = source

    copied = _best_seconds(copy, rounds=3)
    looped = _seconds(_python_loop, PYTHON_ROUNDS)
    return {
        "sha256_gb_s": round(len(_HASHED) / hashed / 1e9, 2),
        "copy_gb_s": round(_COPIED_BYTES / copied / 1e9, 1),
        "python_us": round(looped[0] * 1e6),
        "python_median_us": round(statistics.median(looped) * 1e6),
    }


def describe(at_start: dict[str, float] | None, at_end: dict[str, float] | None) -> str:
    """One line for the report, e.g. `SHA-256 2.6 / 2.5 GB/s, ...` (start / end)."""
    if not at_start:
        return ""
    end = at_end or {}

    def pair(key: str, unit: str) -> str:
        first = at_start.get(key)
        last = end.get(key)
        shown = "-" if first is None else f"{first:g}"
        return f"{shown} / {last:g} {unit}" if last is not None else f"{shown} {unit}"

    return (
        f"Host speed at start / end: SHA-256 {pair('sha256_gb_s', 'GB/s')}, "
        f"memory copy {pair('copy_gb_s', 'GB/s')}, "
        f"a fixed Python loop {pair('python_us', 'µs')} at best, "
        f"{pair('python_median_us', 'µs')} median (compare runs by these: "
        "the same machine type has run at half speed)"
    )


if __name__ == "__main__":
    import argparse
    import json

    argparse.ArgumentParser(
        prog="python -m bench.hostspeed",
        description="Print this host's speed probes (SHA-256, memory copy, a Python loop).",
    ).parse_args()
    print(json.dumps(probe()))
