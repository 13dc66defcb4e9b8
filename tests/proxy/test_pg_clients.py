"""Real clients through the gateway against a real PostgreSQL: results equal direct."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import asyncpg
import psycopg
import pytest
import sqlalchemy as sa
from psycopg import pq

from sluice.devservers.postgres import ThrowawayPostgres
from tests.conftest import APP_PASSWORD
from tests.helpers import GatewayThread


def psql(
    dsn: str, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", "-X", dsn, *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        check=False,
    )


def direct_dsn(pg: ThrowawayPostgres) -> str:
    return pg.dsn(user="app", password=APP_PASSWORD, dbname="app", sslmode="require")


@pytest.fixture(scope="module")
def token(gateway: GatewayThread) -> str:
    return gateway.token()


@pytest.fixture(scope="module", autouse=True)
def schema(pg: ThrowawayPostgres) -> None:
    with psycopg.connect(direct_dsn(pg), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS items")
        conn.execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), "
            "tags text[], meta jsonb, born date, blob bytea)"
        )
        conn.execute(
            "INSERT INTO items SELECT g, 'item ' || g, g * 1.5, ARRAY['a' || g, NULL], "
            "jsonb_build_object('n', g, 's', repeat('x', g % 7)), date '2024-01-01' + g, "
            "decode(md5(g::text), 'hex') FROM generate_series(1, 2000) g"
        )


QUERY = "SELECT * FROM items ORDER BY id"


class TestPsql:
    def test_simple_query_equals_direct(
        self, gateway: GatewayThread, pg: ThrowawayPostgres, token: str
    ) -> None:
        through = psql(gateway.dsn(token), "-A", "-c", QUERY)
        direct = psql(direct_dsn(pg), "-A", "-c", QUERY)
        assert through.returncode == 0, through.stderr
        assert through.stdout == direct.stdout
        assert through.stdout.count("\n") == 2002

    def test_meta_commands(self, gateway: GatewayThread, pg: ThrowawayPostgres, token: str) -> None:
        for meta in ("\\dt", "\\d items", "\\l", "\\df", "\\dn+"):
            through = psql(gateway.dsn(token), "-c", meta)
            direct = psql(direct_dsn(pg), "-c", meta)
            assert through.returncode == 0, through.stderr
            assert through.stdout == direct.stdout, meta

    def test_copy_in_and_out(self, gateway: GatewayThread, tmp_path: Path, token: str) -> None:
        src = tmp_path / "in.csv"
        src.write_text("".join(f"{i},name {i}\n" for i in range(5000)))
        out = tmp_path / "out.csv"
        result = psql(
            gateway.dsn(token),
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "DROP TABLE IF EXISTS copied; CREATE TABLE copied (id int, name text)",
            "-c",
            f"\\copy copied FROM '{src}' WITH (FORMAT csv)",
            "-c",
            f"\\copy (SELECT * FROM copied ORDER BY id) TO '{out}' WITH (FORMAT csv)",
        )
        assert result.returncode == 0, result.stderr
        assert "COPY 5000" in result.stdout
        assert out.read_text() == src.read_text()

    def test_copy_from_stdin_with_error_keeps_session(
        self, gateway: GatewayThread, token: str
    ) -> None:
        result = psql(
            gateway.dsn(token),
            "-c",
            "CREATE TEMP TABLE t (id int)",
            "-c",
            "COPY t FROM STDIN",
            "-c",
            "SELECT 'still here'",
            stdin="1\nnot-a-number\n\\.\n",
        )
        assert 'invalid input syntax for type integer: "not-a-number"' in result.stderr
        assert "still here" in result.stdout

    def test_ctrl_c_cancels_the_running_query(self, gateway: GatewayThread, token: str) -> None:
        proc = subprocess.Popen(
            ["psql", "-X", gateway.dsn(token), "-c", "SELECT pg_sleep(30)"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
        assert time.monotonic() - started < 5
        assert "canceling statement due to user request" in err

    def test_notices_and_parameter_status(self, gateway: GatewayThread, token: str) -> None:
        result = psql(
            gateway.dsn(token, application_name="agent-42", options="-c DateStyle=German"),
            "-c",
            "DO $$ BEGIN RAISE NOTICE 'hello from the backend'; END $$",
            "-c",
            "SHOW application_name",
            "-c",
            "SHOW DateStyle",
        )
        assert "NOTICE:  hello from the backend" in result.stderr
        assert "agent-42" in result.stdout
        assert "German" in result.stdout


class TestPsycopg:
    def test_text_and_binary_results_equal_direct(
        self, gateway: GatewayThread, pg: ThrowawayPostgres, token: str
    ) -> None:
        with psycopg.connect(gateway.dsn(token)) as via, psycopg.connect(direct_dsn(pg)) as d:
            for binary in (False, True):
                a = via.cursor(binary=binary).execute(QUERY).fetchall()
                b = d.cursor(binary=binary).execute(QUERY).fetchall()
                assert a == b
                assert len(a) == 2000

    def test_pipeline_mode(self, gateway: GatewayThread, token: str) -> None:
        with psycopg.connect(gateway.dsn(token)) as conn:
            assert conn.pgconn.pipeline_status == pq.PipelineStatus.OFF
            with conn.pipeline():
                cursors = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(200)]
            assert [c.fetchone()[0] for c in cursors] == [i * 2 for i in range(200)]  # type: ignore[index]

    def test_transactions_and_errors(self, gateway: GatewayThread, token: str) -> None:
        with psycopg.connect(gateway.dsn(token)) as conn:
            conn.execute("CREATE TEMP TABLE tx (a int)")
            conn.commit()
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT 1/0")
            conn.rollback()
            with conn.transaction():
                conn.execute("INSERT INTO tx VALUES (1)")
            assert conn.execute("SELECT count(*) FROM tx").fetchone() == (1,)

    def test_listen_notify(self, gateway: GatewayThread, token: str) -> None:
        with (
            psycopg.connect(gateway.dsn(token), autocommit=True) as listener,
            psycopg.connect(gateway.dsn(token), autocommit=True) as sender,
        ):
            listener.execute("LISTEN jobs")
            sender.execute("NOTIFY jobs, 'job 7 done'")
            received = next(listener.notifies(timeout=5))
            assert (received.channel, received.payload) == ("jobs", "job 7 done")


class TestAsyncpg:
    def test_prepared_statements_binary_protocol(
        self, gateway: GatewayThread, pg: ThrowawayPostgres, token: str
    ) -> None:
        async def fetch(dsn: str) -> list[asyncpg.Record]:
            conn = await asyncpg.connect(dsn, ssl="require")
            try:
                stmt = await conn.prepare("SELECT * FROM items WHERE id <= $1 ORDER BY id")
                rows = await stmt.fetch(1500)
                async with conn.transaction():
                    cursor_rows = [r async for r in conn.cursor(QUERY, prefetch=100)]
                assert len(cursor_rows) == 2000
                return list(rows)
            finally:
                await conn.close()

        via = asyncio.run(fetch(gateway.url(token)))
        direct = asyncio.run(fetch(f"postgresql://app:{APP_PASSWORD}@127.0.0.1:{pg.port}/app"))
        assert [tuple(r) for r in via] == [tuple(r) for r in direct]
        assert len(via) == 1500


class TestSqlAlchemy:
    def test_orm_core_roundtrip(self, gateway: GatewayThread, token: str) -> None:
        engine = sa.create_engine(gateway.url(token, driver="postgresql+psycopg"))
        try:
            meta = sa.MetaData()
            items = sa.Table("items", meta, autoload_with=engine)
            with engine.connect() as conn:
                count = conn.execute(sa.select(sa.func.count()).select_from(items)).scalar()
                cheap = (
                    conn.execute(
                        sa.select(items.c.name).where(items.c.price < 3).order_by(items.c.id)
                    )
                    .scalars()
                    .all()
                )
            assert count == 2000
            assert cheap == ["item 1"]
        finally:
            engine.dispose()


def _env_for(token: str) -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": token, "PGSSLMODE": "require"}


def test_pgbench_through_the_gateway(gateway: GatewayThread, token: str) -> None:
    env = _env_for(token)
    base = ["-h", "127.0.0.1", "-p", str(gateway.port), "-U", "alice"]
    init = subprocess.run(
        ["pgbench", "-i", "-s", "1", "-q", *base, "app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    for mode in ("simple", "extended", "prepared"):
        run = subprocess.run(
            ["pgbench", "-n", "-S", "-c", "4", "-t", "200", "-M", mode, *base, "app"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        assert "number of failed transactions: 0" in run.stdout


def test_pg_dump_through_the_gateway_equals_direct(
    gateway: GatewayThread, pg: ThrowawayPostgres, token: str
) -> None:
    args = ["pg_dump", "--no-owner", "-t", "items"]
    through = subprocess.run(
        [*args, gateway.dsn(token)], capture_output=True, text=True, timeout=120, check=False
    )
    direct = subprocess.run(
        [*args, direct_dsn(pg)], capture_output=True, text=True, timeout=120, check=False
    )
    assert through.returncode == 0, through.stderr
    assert _stable(through.stdout) == _stable(direct.stdout)
    assert "COPY public.items" in through.stdout


def _stable(dump: str) -> str:
    """pg_dump writes a random key on its \\restrict lines; the rest must match."""
    return "\n".join(
        line for line in dump.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def test_session_is_written_to_the_store(gateway: GatewayThread, token: str) -> None:
    result = psql(
        gateway.dsn(token, application_name="store-check"), "-c", "SELECT 1", "-c", "SELECT 2"
    )
    assert result.returncode == 0
    assert gateway.gateway is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sessions = gateway.gateway.store.list_sessions(limit=1)
        if sessions and sessions[0].ended_at is not None:
            break
        time.sleep(0.05)
    latest = sessions[0]
    assert latest.user == "alice"
    assert latest.groups == ("dev",)
    assert latest.connection == "app"
    assert latest.client_addr.startswith("127.0.0.1:")
    assert latest.statements == 2
    assert latest.bytes_from_client > 0
    assert latest.bytes_to_client > 0
    assert latest.end_reason == "client_terminated"


def test_fast_path_function_calls_large_objects(
    gateway: GatewayThread, tmp_path: Path, token: str
) -> None:
    """psql's \\lo_import and \\lo_export use the protocol's FunctionCall message."""
    source = tmp_path / "blob.bin"
    source.write_bytes(bytes(range(256)) * 64)
    target = tmp_path / "copy.bin"
    script = (
        f"BEGIN;\n\\lo_import '{source}'\n\\lo_export :LASTOID '{target}'\n"
        "SELECT lo_unlink(:LASTOID);\nCOMMIT;\n"
    )
    result = psql(gateway.dsn(token), "-v", "ON_ERROR_STOP=1", stdin=script)
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == source.read_bytes()


def test_verify_full_with_the_wrong_server_name_is_refused(
    pg: ThrowawayPostgres, tmp_path: Path
) -> None:
    from tests.conftest import base_config

    config = base_config(pg, tmp_path)
    raw = config.model_dump(mode="json")
    raw["connections"][0]["tls"]["server_name"] = "db.example.com"
    thread = GatewayThread(type(config).model_validate(raw)).start()
    try:
        result = psql(thread.dsn(thread.token()), "-c", "SELECT 1")
        assert result.returncode != 0
        assert "TLS to the backend of connection 'app' failed" in result.stderr
        assert "certificate verify failed" in result.stderr
    finally:
        thread.stop()


def test_a_pass_through_connection_takes_any_startup_options(
    gateway: GatewayThread, token: str
) -> None:
    """Without a policy or masking nothing depends on them: `-e` (European
    dates) is one the gateway would not judge."""
    with psycopg.connect(gateway.dsn(token) + " options='-e -c statement_timeout=7000'") as conn:
        assert conn.execute("SHOW DateStyle").fetchone() == ("ISO, DMY",)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("7s",)
