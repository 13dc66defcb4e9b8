"""The heap trimmer: memory freed by ended sessions goes back to the OS, and a
steady load never pays for a trim."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import psycopg
import pytest

from sluice.proxy.memory import MemoryTrimmer
from tests.helpers import GatewayThread

pytestmark = pytest.mark.skipif(
    not MemoryTrimmer().available, reason="the C library has no malloc_trim (not glibc)"
)


def _rss_mb() -> float:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _fragment_the_heap(megabytes: int) -> list[bytearray]:
    """Allocate `megabytes` in malloc-sized blocks and free nine in ten: the
    survivors pin the heap, so free() alone gives little back."""
    blocks = [bytearray(2000) for _ in range(megabytes * 500)]
    keep = blocks[::10]
    del blocks
    return keep


def test_a_fall_in_sessions_returns_freed_memory_to_the_os() -> None:
    async def scenario() -> tuple[float, float, int]:
        trimmer = MemoryTrimmer(delay=0.05, min_drop=32)
        for _ in range(40):
            trimmer.opened()
        pinned = _fragment_the_heap(60)
        before = _rss_mb()
        for _ in range(40):
            trimmer.closed()
        await asyncio.sleep(0.3)
        after = _rss_mb()
        del pinned
        return before, after, trimmer.trims

    before, after, trims = asyncio.run(scenario())
    assert trims == 1
    assert before - after > 30, (before, after)  # of the 54 MB freed


def test_a_steady_load_never_trims() -> None:
    async def scenario() -> int:
        trimmer = MemoryTrimmer(delay=0.0, min_drop=32)
        for _ in range(8):
            trimmer.opened()
        for _ in range(500):  # as many sessions start as end: churn
            trimmer.closed()
            trimmer.opened()
        await asyncio.sleep(0.05)
        return trimmer.trims

    assert asyncio.run(scenario()) == 0


def test_small_falls_do_not_trim_and_each_burst_trims_once() -> None:
    async def scenario() -> list[int]:
        trimmer = MemoryTrimmer(delay=0.0, min_drop=32)
        seen = []
        for _ in range(20):  # a fall of 20: below the minimum
            trimmer.opened()
        for _ in range(20):
            trimmer.closed()
        await asyncio.sleep(0.01)
        seen.append(trimmer.trims)
        for _ in range(2):  # two bursts of 50
            for _ in range(50):
                trimmer.opened()
            for _ in range(50):
                trimmer.closed()
            await asyncio.sleep(0.01)
            seen.append(trimmer.trims)
        return seen

    assert asyncio.run(scenario()) == [0, 1, 2]


def test_the_gateway_trims_once_a_burst_of_sessions_has_ended(gateway: GatewayThread) -> None:
    assert gateway.gateway is not None
    trimmer = gateway.gateway.memory
    trims = trimmer.trims
    dsn = gateway.dsn(gateway.token())
    sessions = [psycopg.connect(dsn) for _ in range(40)]  # all open at once
    for conn in sessions:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    for conn in sessions:
        conn.close()
    deadline = time.monotonic() + 10
    while trimmer.trims == trims and time.monotonic() < deadline:
        time.sleep(0.1)
    assert trimmer.trims == trims + 1
