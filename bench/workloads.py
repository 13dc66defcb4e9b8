"""The workloads: each function measures one target once and returns its metrics.

Clients that move many rows run in separate processes (a spawn pool) and read
results through libpq directly (`psycopg.pq`), so that neither the GIL nor
Python row decoding caps the rate we attribute to a gateway.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psycopg
from psycopg import pq

from bench.targets import APPROVER_GROUP, APPROVER_USER, Endpoint, gateway_cpu, gateway_rss
from sluice.config import Limits
from sluice.proxy.memory import TRIM_DELAY

PGBENCH_SCALE = 10
CUSTOMER_ROWS = 10_000
# A worker gets this long to connect before the measured window opens.
CONNECT_LEAD = 1.0
# Rows per chunk when streaming (libpq chunked-rows mode): bounded client memory.
STREAM_CHUNK = 1000
RSS_SAMPLE_SECONDS = 0.1
# Sessions held open at once by the idle-sessions workload (pgbouncer's
# default_pool_size in the lab is 100: more would wait for a server there).
IDLE_SESSIONS = 100
IDLE_LARGE_ROWS = 5000
"""Rows of the large result each session of the second idle case reads first."""
IDLE_SETTLE_SECONDS = Limits().idle_release_seconds + TRIM_DELAY + 1.0
"""How long held sessions sit before a reading: long enough for a gateway's
idle work (Sluice: the TLS read buffers' pages handed back, then a heap
trim), so the reading is what an idle session holds."""
# How long the bench waits for a held statement to show up as a request.
APPROVAL_APPEAR_TIMEOUT = 10.0


class WorkloadError(RuntimeError):
    """A workload failed against a target; the message carries the client's error."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One measurement of one case of a workload against one target."""

    workload: str
    case: str
    target: str
    rep: int
    metrics: dict[str, float]
    error: str | None = None
    series: list[tuple[float, float]] | None = None  # (seconds, RSS MB) for streams
    slice: int = 0  # which run of a measurement cut into slices (bench.run --slices)


# Data


def _copy_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", " ").replace("\n", " ")


def customer_rows(rows: int, *, pii: bool, seed: int = 11) -> str:
    """COPY text for a customers table; with `pii` the text carries emails/phones/SSNs."""
    from faker import Faker

    fake = Faker("en_US")
    Faker.seed(seed)
    out = io.StringIO()
    for cid in range(1, rows + 1):
        name = fake.name()
        if pii:
            email = f"{name.lower().replace(' ', '.')}@{fake.free_email_domain()}"
            fields = [
                name,
                email,
                fake.phone_number(),
                fake.ssn(),
                fake.address().replace("\n", ", "),
                fake.random_element(
                    [
                        f"Call back on {fake.phone_number()} after 5pm",
                        f"Prefers email ({email}); VIP since {fake.year()}",
                        f"Identity checked, SSN {fake.ssn()}",
                        fake.sentence(nb_words=10),
                    ]
                ),
            ]
        else:
            fields = [
                name,
                fake.company(),
                fake.job(),
                f"{fake.street_name()}, {fake.city()}",
                fake.catch_phrase(),
                fake.sentence(nb_words=14),
            ]
        out.write("\t".join([str(cid), *(_copy_escape(f) for f in fields)]) + "\n")
    return out.getvalue()


SCHEMA = """
DROP TABLE IF EXISTS customers_pii, customers_clean, t;
CREATE TABLE customers_pii (
    id int PRIMARY KEY, full_name text, email text, phone text, ssn text,
    address text, notes text);
CREATE TABLE customers_clean (
    id int PRIMARY KEY, full_name text, company text, job text,
    address text, slogan text, notes text);
CREATE TABLE t (id int PRIMARY KEY, x int NOT NULL);
INSERT INTO t VALUES (1, 0);
"""


def setup_data(direct: Endpoint, *, rows: int = CUSTOMER_ROWS) -> dict[str, float]:
    """pgbench tables and the customers tables, created directly on PostgreSQL.

    Returns the average text bytes per row of each customers table.
    """
    proc = subprocess.run(
        ["pgbench", "-i", "-q", "-s", str(PGBENCH_SCALE)],
        env=direct.pg_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise WorkloadError(f"pgbench -i failed: {proc.stderr.strip()}")
    sizes: dict[str, float] = {}
    with psycopg.connect(direct.dsn(), autocommit=True) as conn:
        conn.execute(SCHEMA)
        for table, pii in (("customers_pii", True), ("customers_clean", False)):
            data = customer_rows(rows, pii=pii)
            with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as copy:
                copy.write(data)
            conn.execute(f"VACUUM ANALYZE {table}")
            row = conn.execute(f"SELECT avg(octet_length(c::text)) FROM {table} c").fetchone()
            assert row is not None
            sizes[table] = float(row[0])
    return sizes


def masked_cells(direct: Endpoint, through: Endpoint, table: str, limit: int = 500) -> int:
    """How many cells of the first rows differ between direct and `through`."""
    sql = f"SELECT * FROM {table} ORDER BY id LIMIT {limit}"
    with psycopg.connect(direct.dsn()) as a, psycopg.connect(through.dsn()) as b:
        rows_a = a.execute(sql).fetchall()
        rows_b = b.execute(sql).fetchall()
    return sum(
        x != y for ra, rb in zip(rows_a, rows_b, strict=True) for x, y in zip(ra, rb, strict=True)
    )


# pgbench


_TPS = re.compile(r"^tps = ([0-9.]+)", re.M)
_LAT = re.compile(r"^latency average = ([0-9.]+) ms", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)
_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.M)


# `pgbench -S` as an agent writes it: the key inlined as a number and in a
# string literal, so no two statement texts are the same.
LITERALS_SCRIPT = """\\set aid random(1, 100000 * :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid AND filler <> 'agent :aid';
"""


def pgbench(
    endpoint: Endpoint,
    *,
    clients: int,
    mode: str,
    seconds: float,
    connect: bool = False,
    script: str | None = None,
) -> dict[str, float]:
    """`pgbench -S` (select-only), or `script`; with `connect`, a new connection
    per transaction."""
    run = partial(
        _pgbench,
        endpoint,
        clients=clients,
        threads=max(1, min(clients, os.cpu_count() or 1)),
        mode=mode,
        seconds=seconds,
        connect=connect,
    )
    if script is None:
        return run(["-S"])
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as file:
        file.write(script)
    try:
        return run(["-f", file.name])
    finally:
        os.unlink(file.name)


def _pgbench(
    endpoint: Endpoint,
    transaction: list[str],
    *,
    clients: int,
    threads: int,
    mode: str,
    seconds: float,
    connect: bool,
) -> dict[str, float]:
    argv = [
        "pgbench",
        "-n",
        *transaction,
        "-M",
        mode,
        "-c",
        str(clients),
        "-j",
        str(threads),
        "-T",
        str(max(1, round(seconds))),
    ]
    if connect:
        argv.append("-C")
    cpu_before = gateway_cpu(endpoint.pid) if endpoint.pid else None
    proc = subprocess.run(
        argv,
        env=endpoint.pg_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 120,
    )
    out = proc.stdout
    tps = _TPS.search(out)
    if proc.returncode != 0 or tps is None:
        err = (proc.stderr.strip().splitlines() or ["(no output)"])[-3:]
        raise WorkloadError(f"pgbench exited {proc.returncode}: {' | '.join(err)}")
    metrics = {"tps": float(tps.group(1))}
    processed = _PROCESSED.search(out)
    if cpu_before is not None and endpoint.pid and processed and int(processed.group(1)):
        # The gateway's CPU per transaction (user and kernel), all its processes.
        user, system = gateway_cpu(endpoint.pid)
        count = int(processed.group(1))
        metrics["gateway_user_us"] = (user - cpu_before[0]) / count * 1e6
        metrics["gateway_sys_us"] = (system - cpu_before[1]) / count * 1e6
        metrics["gateway_cpu_us"] = metrics["gateway_user_us"] + metrics["gateway_sys_us"]
    if lat := _LAT.search(out):
        metrics["latency_ms"] = float(lat.group(1))
    if failed := _FAILED.search(out):
        metrics["failed"] = float(failed.group(1))
    return metrics


# Large results (run in pool processes)


def fetch_worker(dsn: str, sql: str, start_at: float, duration: float) -> tuple[int, float]:
    """Repeat `sql` from `start_at` (wall clock) for `duration` s; (rows, seconds)."""
    conn = pq.PGconn.connect(dsn.encode())
    if conn.status != pq.ConnStatus.OK:
        raise WorkloadError(f"connect failed: {conn.error_message.decode(errors='replace')}")
    try:
        query = sql.encode()
        time.sleep(max(0.0, start_at - time.time()))
        begin = time.perf_counter()
        end = begin + duration
        rows = 0
        now = begin
        while now < end:
            res = conn.exec_(query)
            if res.status != pq.ExecStatus.TUPLES_OK:
                raise WorkloadError(res.error_message.decode(errors="replace").strip())
            rows += res.ntuples
            res.clear()
            now = time.perf_counter()
        return rows, now - begin
    finally:
        conn.finish()


def large_results(
    endpoint: Endpoint,
    *,
    pool: ProcessPoolExecutor,
    table: str,
    clients: int,
    seconds: float,
    row_bytes: float,
) -> dict[str, float]:
    """10,000-row SELECTs from `clients` processes at once: rows/s and MB/s."""
    sql = f"SELECT * FROM {table}"
    start_at = time.time() + CONNECT_LEAD
    futures = [
        pool.submit(fetch_worker, endpoint.dsn(), sql, start_at, seconds) for _ in range(clients)
    ]
    results = [f.result(timeout=seconds + 120) for f in futures]
    rate = sum(rows / elapsed for rows, elapsed in results)
    return {"rows_per_s": rate, "mb_per_s": rate * row_bytes / 1e6}


def stream_worker(dsn: str, sql: str) -> tuple[int, float]:
    """Read one big result in libpq chunked-rows mode; (rows, seconds)."""
    conn = pq.PGconn.connect(dsn.encode())
    if conn.status != pq.ConnStatus.OK:
        raise WorkloadError(f"connect failed: {conn.error_message.decode(errors='replace')}")
    try:
        begin = time.perf_counter()
        conn.send_query(sql.encode())
        conn.set_chunked_rows_mode(STREAM_CHUNK)
        rows = 0
        error = None
        while (res := conn.get_result()) is not None:
            if res.status in (pq.ExecStatus.TUPLES_CHUNK, pq.ExecStatus.TUPLES_OK):
                rows += res.ntuples
            elif res.status == pq.ExecStatus.FATAL_ERROR:
                error = res.error_message.decode(errors="replace").strip()
            res.clear()
        if error:
            raise WorkloadError(f"after {rows} rows: {error}")
        return rows, time.perf_counter() - begin
    finally:
        conn.finish()


def stream(
    endpoint: Endpoint, *, pool: ProcessPoolExecutor, rows: int
) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """`generate_series` of `rows` rows, sampling the gateway's RSS every 100 ms."""
    assert endpoint.pid is not None
    sql = f"SELECT g, md5(g::text) FROM generate_series(1, {rows}) g"
    baseline = gateway_rss(endpoint.pid)
    series: list[tuple[float, float]] = []
    begin = time.perf_counter()
    future: Future[tuple[int, float]] = pool.submit(stream_worker, endpoint.dsn(), sql)
    while not future.done():
        series.append((time.perf_counter() - begin, gateway_rss(endpoint.pid) / 1e6))
        time.sleep(RSS_SAMPLE_SECONDS)
    got, elapsed = future.result()
    if got != rows:
        raise WorkloadError(f"stream returned {got} rows, expected {rows}")
    peak = max((mb for _, mb in series), default=baseline / 1e6)
    metrics = {
        "rows_per_s": got / elapsed,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline / 1e6,
        "seconds": elapsed,
    }
    return metrics, series


# Idle sessions: what holding a session costs the gateway


def _open_idle(dsn: str, query: str) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=30)
    conn.execute(query).fetchall()
    return conn


def _open_files(pid: int) -> int:
    """Descriptors held by a gateway process and its children (workers)."""
    import psutil

    root = psutil.Process(pid)
    return sum(proc.num_fds() for proc in (root, *root.children(recursive=True)))


def idle_sessions(
    endpoint: Endpoint, *, sessions: int = IDLE_SESSIONS, query: str = "SELECT 1"
) -> dict[str, float]:
    """Open `sessions` sessions (8 at a time; each runs `query` and reads its
    result) and hold them: what the gateway holds per session, memory and
    descriptors, the figures that size a gateway for agents that keep
    connections open. With a large result for `query`, what a session keeps
    of the buffers that carried it.

    Per session is read off the second half of the sessions (held RSS at
    `sessions` minus at half of them), so what the first sessions grow once
    (caches, threads, allocator arenas) is not charged to each."""
    assert endpoint.pid is not None
    half = sessions // 2
    opened: list[psycopg.Connection[tuple[object, ...]]] = []
    readings: list[tuple[int, int]] = []
    try:
        with ThreadPoolExecutor(8) as connectors:
            for count in (half, sessions - half):
                futures = [
                    connectors.submit(_open_idle, endpoint.dsn(), query) for _ in range(count)
                ]
                errors = []
                for future in futures:
                    try:
                        opened.append(future.result())
                    except psycopg.Error as exc:
                        errors.append(str(exc).strip().splitlines()[0])
                if errors:
                    raise WorkloadError(f"{len(errors)} of {count} sessions failed: {errors[0]}")
                time.sleep(IDLE_SETTLE_SECONDS)
                readings.append((gateway_rss(endpoint.pid), _open_files(endpoint.pid)))
    finally:
        for conn in opened:
            conn.close()
    (rss_half, files_half), (rss_all, files_all) = readings
    added = sessions - half
    return {
        "sessions": sessions,
        "kb_per_session": (rss_all - rss_half) / added / 1024,
        "files_per_session": (files_all - files_half) / added,
        "rss_held_mb": rss_all / 1e6,
    }


# Approval round-trip


def approval_roundtrip(endpoint: Endpoint, *, store_url: str, rounds: int) -> dict[str, float]:
    """Decision committed -> first result row at the client, over `rounds` held UPDATEs."""
    from sqlalchemy import select

    from sluice.approvals.service import ApprovalService, ApprovalStatus
    from sluice.events import Identity
    from sluice.store.db import Store
    from sluice.store.models import ApprovalRow

    store = Store(store_url)
    service = ApprovalService(store)
    approver = Identity(user=APPROVER_USER, groups=(APPROVER_GROUP,))
    go = threading.Semaphore(0)
    got: list[float | BaseException] = []
    got_ready = threading.Semaphore(0)

    def client() -> None:
        try:
            with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
                for i in range(rounds):
                    go.acquire()
                    row = conn.execute(
                        f"UPDATE t SET x = {i + 1} WHERE id = 1 RETURNING x"
                    ).fetchone()
                    stamp = time.perf_counter()
                    if row is None or row[0] != i + 1:
                        raise WorkloadError(f"unexpected result {row!r}")
                    got.append(stamp)
                    got_ready.release()
        except BaseException as exc:  # reported to the main thread
            got.append(exc)
            got_ready.release()

    thread = threading.Thread(target=client, name="approval-client", daemon=True)
    thread.start()
    latencies: list[float] = []
    appear: list[float] = []
    try:
        for _ in range(rounds):
            sent = time.perf_counter()
            go.release()
            request_id = None
            while request_id is None:
                if time.perf_counter() - sent > APPROVAL_APPEAR_TIMEOUT:
                    raise WorkloadError("the held statement never showed up as a request")
                with store.transaction() as s:
                    request_id = s.scalars(
                        select(ApprovalRow.id).where(
                            ApprovalRow.status == ApprovalStatus.PENDING.value
                        )
                    ).first()
                if request_id is None:
                    if got:  # the client failed instead of waiting
                        break
                    time.sleep(0.001)
            if request_id is not None:
                appear.append(time.perf_counter() - sent)
                service.decide(request_id, approver=approver, approve=True, reason="bench")
            committed = time.perf_counter()
            if not got_ready.acquire(timeout=30):
                raise WorkloadError("no result 30 s after the approval")
            result = got.pop()
            if isinstance(result, BaseException):
                raise WorkloadError(f"client failed: {result}") from result
            latencies.append(result - committed)
    finally:
        thread.join(5)
        store.close()
    ms = sorted(x * 1000 for x in latencies)
    return {
        "p50_ms": statistics.median(ms),
        "p99_ms": _percentile(ms, 0.99),
        "max_ms": ms[-1],
        "request_visible_ms": statistics.median(appear) * 1000 if appear else float("nan"),
        "rounds": float(len(ms)),
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    rank = max(1, min(len(sorted_values), round(q * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def now_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")


def read_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
