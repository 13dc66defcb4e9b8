"""In-process micro-benchmark of the gateway's per-statement path, without sockets.

A `PgSession` is driven with the exact bytes of a `pgbench -S` round trip
(a simple Query, then RowDescription, DataRow, CommandComplete and
ReadyForQuery from the backend) through in-memory transports, so the figure is
the gateway's own CPU per statement: framing, policy, recording, audit and
masking, with no kernel, TLS or PostgreSQL in it. `--profile` prints where the
time goes (cProfile).

    python -m bench.hotpath [--n 20000] [--profile] [--target governed]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from sluice.config import Config
from sluice.events import Identity, Protocol, SessionContext
from sluice.protocols.postgres import messages as m
from sluice.proxy.governance import Governor
from sluice.proxy.governance_setup import build_services
from sluice.proxy.pg_session import PgSession
from sluice.store.db import Store

TARGETS = ("pass", "governed", "norecord")


class _Sink(asyncio.Transport):
    """Collects what the session writes; counts bytes only."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        return None

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


def _config(target: str, data_dir: Path) -> Config:
    conn: dict[str, Any] = {
        "name": "bench",
        "host": "127.0.0.1",
        "port": 5432,
        "database": "bench",
        "user": "bench",
        "password": {"env": "UNUSED"},
    }
    raw: dict[str, Any] = {"data_dir": str(data_dir), "connections": [conn]}
    if target == "governed":
        conn["policy"] = "agent"
        conn["masking"] = ["pii"]
        raw["policies"] = [{"name": "agent", "extends": "ai-agent"}]
        raw["masking"] = {"profiles": [{"name": "pii", "detectors": ["all"], "content": True}]}
    if target == "norecord":
        conn["recording"] = {"enabled": False}
    return Config.model_validate(raw)


def _round_trip() -> tuple[bytes, bytes]:
    query = m.encode_query("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;")
    fields = [
        m.FieldDescription(
            name="abalance",
            table_oid=16399,
            column=3,
            type_oid=23,
            type_size=4,
            type_modifier=-1,
            format=0,
        )
    ]
    response = (
        m.encode_row_description(fields)
        + m.encode_data_row([b"0"])
        + m.command_complete("SELECT 1")
        + m.ready_for_query("I")
    )
    return query, response


async def _run(target: str, n: int, profile: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="sluice-hotpath-") as tmp:
        data_dir = Path(tmp)
        config = _config(target, data_dir)
        store = Store(f"sqlite:///{data_dir / 'sluice.db'}")
        governor = Governor(build_services(config, store))
        context = SessionContext(
            session_id="hotpath",
            identity=Identity(user="agent", groups=("agents",)),
            connection="bench",
            protocol=Protocol.POSTGRES,
            client_addr="127.0.0.1",
        )
        governance = governor.session(context, config.connections[0])

        async def no_catalog(sql: str) -> list[list[list[bytes | None]]]:
            return [[], []]

        await governance.start_masking(no_catalog)
        client, backend = _Sink(), _Sink()
        session = PgSession(
            client=client,
            backend=backend,
            governance=governance,
            limits=config.limits,
            transaction_status="I",
            on_finish=lambda s: None,
        )
        query, response = _round_trip()
        for _ in range(200):  # warm the caches
            session.client_data(query)
            session.backend_data(response)
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        start = time.perf_counter()
        for _ in range(n):
            session.client_data(query)
            session.backend_data(response)
        elapsed = time.perf_counter() - start
        if profiler is not None:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        session.finish("client_terminated")
        governance.close(reason="client_terminated", detail=None)
        store.close()
        return elapsed / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hotpath",
        description="Gateway CPU per pgbench -S round trip, in process (no sockets or TLS).",
    )
    parser.add_argument("--n", type=int, default=20000, help="round trips per target")
    parser.add_argument("--target", choices=TARGETS, action="append", help="default: all")
    parser.add_argument("--profile", action="store_true", help="print a cProfile table")
    args = parser.parse_args(argv)
    for target in args.target or TARGETS:
        micros = asyncio.run(_run(target, args.n, args.profile))
        print(f"{target:10s} {micros:7.1f} us per round trip")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
