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
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Final

import sluice
from sluice.config import Config
from sluice.events import Identity, Protocol, SessionContext
from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.framing import frame
from sluice.proxy.governance import Governor
from sluice.proxy.governance_setup import build_services
from sluice.proxy.pg_session import PgSession
from sluice.proxy.runner import tune_gc
from sluice.store.db import Store

# pass: no rules, recording on (the defaults); norecord: no rules, recording
# off (the bench's sluice-pass); policy: + the ai-agent policy; masking: +
# content masking (governed without recording); governed: all of it.
TARGETS = ("norecord", "pass", "policy", "masking", "governed", "colmask")
READ_BYTES = 256 * 1024


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
    if target in ("policy", "masking"):
        conn["recording"] = {"enabled": False}
        conn["policy"] = "agent"
        raw["policies"] = [{"name": "agent", "extends": "ai-agent"}]
    if target == "masking":
        conn["masking"] = ["pii"]
        raw["masking"] = {"profiles": [{"name": "pii", "detectors": ["all"], "content": True}]}
    if target == "governed":
        conn["policy"] = "agent"
        conn["masking"] = ["pii"]
        raw["policies"] = [{"name": "agent", "extends": "ai-agent"}]
        raw["masking"] = {"profiles": [{"name": "pii", "detectors": ["all"], "content": True}]}
    if target == "colmask":
        conn["policy"] = "agent"
        conn["masking"] = ["cols"]
        raw["policies"] = [{"name": "agent", "extends": "ai-agent"}]
        raw["masking"] = {
            "profiles": [
                {
                    "name": "cols",
                    "columns": [{"match": "*email*", "strategy": "redact"}],
                    "content": False,
                }
            ]
        }
    if target == "norecord":
        conn["recording"] = {"enabled": False}
    return Config.model_validate(raw)


def _large_result(rows: int, *, pii: bool) -> tuple[bytes, bytes]:
    """`SELECT * FROM customers_...` and its response, as the large-result workload has it."""
    from bench.workloads import customer_rows

    table = "customers_pii" if pii else "customers_clean"
    names = (
        ["id", "full_name", "email", "phone", "ssn", "address", "notes"]
        if pii
        else ["id", "full_name", "company", "job", "address", "slogan", "notes"]
    )
    fields = [
        m.FieldDescription(
            name=name,
            table_oid=16500,
            column=i + 1,
            type_oid=23 if i == 0 else 25,
            type_size=4 if i == 0 else -1,
            type_modifier=-1,
            format=0,
        )
        for i, name in enumerate(names)
    ]
    body = bytearray(m.encode_row_description(fields))
    for line in customer_rows(rows, pii=pii).splitlines():
        body += m.encode_data_row([value.encode() for value in line.split("\t")])
    body += m.command_complete(f"SELECT {rows}") + m.ready_for_query("I")
    return m.encode_query(f"SELECT * FROM {table} LIMIT {rows}"), bytes(body)


def _prepared_round_trip() -> tuple[bytes, bytes, bytes, bytes]:
    """pgbench -M prepared: the Parse once, then Bind/Describe/Execute/Sync per transaction."""
    sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
    setup = frame(b"P", b"P0_1\0" + sql.encode() + b"\0\0\0") + frame(b"S", b"")
    setup_response = frame(b"1", b"") + m.ready_for_query("I")
    param = b"48213"
    bind = b"\0P0_1\0" + b"\0\0" + b"\0\1" + len(param).to_bytes(4, "big") + param + b"\0\0"
    query = frame(b"B", bind) + frame(b"D", b"P\0") + frame(b"E", b"\0\0\0\0\0") + frame(b"S", b"")
    _, response = _round_trip()
    return setup, setup_response, query, frame(b"2", b"") + response


# --literals: what differs between the statements of a run, as clients write
# them: nothing (pgbench -M prepared, ORMs), numbers (pgbench -M simple) or
# string literals (agents inlining values).
LITERALS = ("same", "numbers", "strings")
DISTINCT_TEXTS = 50_000


def _queries(literals: str) -> list[bytes]:
    """The client's Query messages, cycled through: one text, or many that
    differ in their numbers or in a string literal."""
    if literals == "same":
        return [_round_trip()[0]]
    rng = random.Random(7)
    keys = rng.sample(range(10_000_000, 99_999_999), DISTINCT_TEXTS)
    if literals == "numbers":
        texts = [f"SELECT abalance FROM pgbench_accounts WHERE aid = {k};" for k in keys]
    else:
        texts = [f"SELECT abalance FROM pgbench_accounts WHERE filler = 'x{k}';" for k in keys]
    return [m.encode_query(text) for text in texts]


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


_PACKAGE_DIR: Final = str(Path(sluice.__file__).resolve().parent)


def _python_calls_into(found: set[str]) -> Callable[[FrameType, str, object], None]:
    """A `sys.setprofile` hook adding to `found` each `sluice` function run as Python code."""

    def hook(frame: FrameType, event: str, arg: object) -> None:
        code = frame.f_code
        if event == "call" and code.co_filename.startswith(_PACKAGE_DIR):
            found.add(f"{Path(code.co_filename).name}:{code.co_firstlineno} {code.co_qualname}")

    return hook


async def _run(
    target: str,
    n: int,
    profile: bool,
    sort: str = "tottime",
    rows: int = 0,
    pii: bool = False,
    prepared: bool = False,
    literals: str = "same",
    interpreted: set[str] | None = None,
) -> tuple[float, float]:
    """Microseconds per round trip, and of those the client message's.

    With `interpreted`, the measured round trips add to it the functions of
    the `sluice` package they run as Python code (not compiled) instead.
    """
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
            return [[], [], []]  # relations, search path, system relations

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
        if prepared:
            setup, setup_response, query, response = _prepared_round_trip()
            session.client_data(setup)
            session.backend_data(setup_response)
        else:
            query, response = _large_result(rows, pii=pii) if rows else _round_trip()
        queries = [query] if prepared or rows else _queries(literals)
        # The backend's stream arrives in socket-sized reads.
        reads = [response[i : i + READ_BYTES] for i in range(0, len(response), READ_BYTES)]
        for query in queries[-1:] * (3 if rows else 200):  # warm the caches
            session.client_data(query)
            for read in reads:
                session.backend_data(read)
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        if interpreted is not None:  # the same hook as cProfile's: one or the other
            sys.setprofile(_python_calls_into(interpreted))
        clock = time.perf_counter
        client_side = 0.0
        start = clock()
        try:
            for i in range(n):
                query = queries[i % len(queries)]
                before = clock()
                session.client_data(query)
                client_side += clock() - before
                for read in reads:
                    session.backend_data(read)
        finally:
            if interpreted is not None:
                sys.setprofile(None)
        elapsed = clock() - start
        if profiler is not None:
            profiler.disable()
            pstats.Stats(profiler).sort_stats(sort).print_stats(40)
        session.finish("client_terminated")
        governance.close(reason="client_terminated", detail=None)
        store.close()
        return elapsed / n * 1e6, client_side / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hotpath",
        description="Gateway CPU per pgbench -S round trip, in process (no sockets or TLS).",
    )
    parser.add_argument("--n", type=int, default=20000, help="round trips per target")
    parser.add_argument("--target", choices=TARGETS, action="append", help="default: all")
    parser.add_argument("--profile", action="store_true", help="print a cProfile table")
    parser.add_argument(
        "--rows", type=int, default=0, help="a customers SELECT of this many rows instead"
    )
    parser.add_argument("--pii", action="store_true", help="with --rows: the table with PII")
    parser.add_argument(
        "--prepared", action="store_true", help="pgbench -M prepared messages instead"
    )
    parser.add_argument(
        "--literals",
        choices=LITERALS,
        default="same",
        help="simple protocol: each statement differs from the last in its numbers or in "
        "a string literal (agents' queries), instead of repeating one text",
    )
    args = parser.parse_args(argv)
    tune_gc()  # as `sluice serve` runs
    for target in args.target or TARGETS:
        micros, client_micros = asyncio.run(
            _run(
                target,
                args.n,
                args.profile,
                rows=args.rows,
                pii=args.pii,
                prepared=args.prepared,
                literals=args.literals,
            )
        )
        if args.rows:
            print(f"{target:10s} {args.rows / micros * 1e6:12,.0f} rows/s")
        else:
            print(
                f"{target:10s} {micros:7.1f} us per round trip "
                f"(client message {client_micros:.1f}, response {micros - client_micros:.1f})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
