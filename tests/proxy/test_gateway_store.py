"""The gateway's store calls: off the event loop, on the store's own threads."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from sluice.config import Config
from sluice.proxy.server import build_gateway


def test_store_calls_run_one_at_a_time_on_the_sqlite_store_thread(tmp_path: Path) -> None:
    gateway = build_gateway(Config.model_validate({"data_dir": str(tmp_path)}))
    seen: list[str] = []
    running = 0
    overlapped = False
    guard = threading.Lock()

    def call(i: int) -> int:
        nonlocal running, overlapped
        with guard:
            running += 1
            overlapped = overlapped or running > 1
        time.sleep(0.01)
        seen.append(threading.current_thread().name)
        with guard:
            running -= 1
        return i * 2

    async def main() -> list[int]:
        loop_thread = threading.current_thread().name
        results = await asyncio.gather(*(gateway.in_store(call, i) for i in range(8)))
        assert loop_thread not in seen
        return list(results)

    try:
        assert asyncio.run(main()) == [i * 2 for i in range(8)]
    finally:
        gateway.close()
    assert not overlapped  # SQLite: one writer, so one thread
    assert len(set(seen)) == 1
    assert seen[0].startswith("sluice-store")
    # Closed: the thread is gone; a later call starts a new one.
    assert not any(t.name.startswith("sluice-store") for t in threading.enumerate())
    assert asyncio.run(gateway.in_store(call, 5)) == 10
    gateway.close()


def test_store_call_errors_reach_the_caller(tmp_path: Path) -> None:
    gateway = build_gateway(Config.model_validate({"data_dir": str(tmp_path)}))

    def fail() -> None:
        raise ValueError("boom")

    async def main() -> str:
        try:
            await gateway.in_store(fail)
        except ValueError as exc:
            return str(exc)
        return "no error"

    try:
        assert asyncio.run(main()) == "boom"
    finally:
        gateway.close()
