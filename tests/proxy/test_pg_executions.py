"""Every execution of a prepared statement is audited and recorded, with its parameters.

A client that prepares a statement once and executes it many times (psycopg's
`prepare=True`, pgbench -M prepared, asyncpg, JDBC) sends its text only in the
Parse; each execution is a Bind carrying the parameters. The audit log gets a
`statement.allowed` line of origin `execute` for each, and the session log a
`bind` record, masked when masking is on, written before the Bind goes on.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.numeric import Int4, Int8
from rich.console import Console

from sluice.config import Config, ConnectionRecording
from sluice.devservers.postgres import ThrowawayPostgres
from sluice.proxy.governance_setup import recording_store
from sluice.recording import render_replay
from sluice.recording.records import BindRecord, CompleteRecord, OmittedValue, StatementRecord
from tests.conftest import APP_PASSWORD, base_config
from tests.helpers import GatewayThread, disk_full_for, latest_session

USER = "executor"
EMAIL = "rosa.diaz@example.org"
SELECT = "SELECT %t::text AS note, %t::int AS n"  # text-format parameters


def _direct(pg: ThrowawayPostgres) -> str:
    return pg.dsn(user="app", password=APP_PASSWORD, dbname="app")


@pytest.fixture(scope="module", autouse=True)
def table(pg: ThrowawayPostgres) -> None:
    with psycopg.connect(_direct(pg), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS executed; CREATE TABLE executed (id int, note text)")


def _gateway(config: Config) -> Iterator[GatewayThread]:
    thread = GatewayThread(config).start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def recorded(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    yield from _gateway(base_config(pg, tmp_path_factory.mktemp("exec-rec")))


@pytest.fixture(scope="module")
def masked(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    config = base_config(
        pg,
        tmp_path_factory.mktemp("exec-masked"),
        masking=("pii",),
        masking_profiles=[{"name": "pii", "detectors": ["all"], "content": True}],
    )
    yield from _gateway(config)


@pytest.fixture(scope="module")
def unrecorded(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    """No policy, no masking, no recording: the light path still audits executions."""
    config = base_config(pg, tmp_path_factory.mktemp("exec-light"))
    first, *rest = config.connections
    light = first.model_copy(update={"recording": ConnectionRecording(enabled=False)})
    yield from _gateway(config.model_copy(update={"connections": (light, *rest)}))


def _connect(gateway: GatewayThread, **kwargs: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(gateway.dsn(gateway.token(user=USER), user=USER), **kwargs)


def _audited(gateway: GatewayThread, statement: str) -> list[str]:
    """Origins of the `statement.allowed` lines of `statement`, in order."""
    text = (Path(gateway.config.data_dir) / "audit.jsonl").read_text()
    events = [json.loads(line) for line in text.splitlines()]
    return [
        e["origin"]
        for e in events
        if e["type"] == "statement.allowed" and e["statement"] == statement
    ]


def _records(gateway: GatewayThread) -> list[Any]:
    session = latest_session(gateway, user=USER)
    store = recording_store(gateway.config)
    assert store.verify(session).ok
    return list(store.replay(session))


def _log_text(gateway: GatewayThread) -> str:
    session = latest_session(gateway, user=USER)
    return recording_store(gateway.config).path_for(session).read_text()


def test_each_execution_is_audited_and_recorded_with_its_parameters(
    recorded: GatewayThread,
) -> None:
    values = [("first", 1), ("second", 2), ("it's third", 3)]
    with _connect(recorded) as conn:
        for note, n in values:
            assert conn.execute(SELECT, (note, n), prepare=True).fetchone() == (note, n)
    sql = "SELECT $1::text AS note, $2::int AS n"
    # Parsed once, executed three times: one line for the Parse, one per execution.
    assert _audited(recorded, sql) == ["parse", "execute", "execute", "execute"]
    records = _records(recorded)
    parses = [r for r in records if isinstance(r, StatementRecord) and r.sql == sql]
    binds = [r for r in records if isinstance(r, BindRecord)]
    assert len(parses) == 1
    assert [b.params for b in binds] == [(note, str(n)) for note, n in values]
    assert {b.statement_name for b in binds} == {parses[0].statement_name}
    # Each execution's record comes before the result it produced.
    after = records[records.index(parses[0]) :]
    steps = [type(r).__name__ for r in after if isinstance(r, BindRecord | CompleteRecord)]
    assert steps[:6] == ["BindRecord", "CompleteRecord"] * 3  # then the COMMIT's
    out = io.StringIO()
    render_replay(Console(file=out, width=200, color_system=None), records)
    assert "$1='it''s third', $2='3'" in out.getvalue()


def test_binary_parameters_are_kept_exactly(recorded: GatewayThread) -> None:
    with _connect(recorded) as conn:
        row = conn.execute("SELECT %b::text, %b::int4, %b::text", ("bin", Int4(5), None)).fetchone()
        assert row == ("bin", 5, None)
    (bind,) = [r for r in _records(recorded) if isinstance(r, BindRecord)]
    # The unnamed statement: recorded, but audited by its Parse alone.
    assert bind.statement_name is None
    assert bind.params == (b"bin", (5).to_bytes(4, "big"), None)
    assert _audited(recorded, "SELECT $1::text, $2::int4, $3::text") == ["parse"]


# libpq's blocking calls hold the interpreter: run them in a process of their own.
_REBIND_UNNAMED = """
import sys
import psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    pgconn = conn.pgconn
    pgconn.send_prepare(b"", b"SELECT $1::int + 1")
    assert pgconn.get_result().status == 1  # COMMAND_OK
    assert pgconn.get_result() is None
    for value in (b"1", b"41"):
        pgconn.send_query_prepared(b"", [value])
        print(pgconn.get_result().get_value(0, 0).decode())
        assert pgconn.get_result() is None
"""


def test_a_second_execution_of_the_unnamed_statement_is_audited(
    recorded: GatewayThread,
) -> None:
    """A client may bind the unnamed statement again without a new Parse."""
    dsn = recorded.dsn(recorded.token(user=USER), user=USER)
    result = subprocess.run(
        [sys.executable, "-c", _REBIND_UNNAMED, dsn],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "42"]
    assert _audited(recorded, "SELECT $1::int + 1") == ["parse", "execute"]
    binds = [r for r in _records(recorded) if isinstance(r, BindRecord)]
    assert [b.params for b in binds] == [("1",), ("41",)]


def test_masked_parameters_reach_the_database_but_not_the_logs(
    masked: GatewayThread, pg: ThrowawayPostgres
) -> None:
    with psycopg.connect(_direct(pg), autocommit=True) as direct:
        direct.execute("TRUNCATE executed")
    with _connect(masked, autocommit=True) as conn:
        insert = "INSERT INTO executed VALUES (%t, %t)"
        conn.execute(insert, (1, f"mail {EMAIL}"), prepare=True)
        conn.execute(insert, (2, f"again {EMAIL}"), prepare=True)
        conn.execute("SELECT %b::text, %b::int8", (EMAIL, Int8(7)))
    with psycopg.connect(_direct(pg)) as direct:
        notes = direct.execute("SELECT note FROM executed ORDER BY id").fetchall()
    assert notes == [(f"mail {EMAIL}",), (f"again {EMAIL}",)]
    binds = [r for r in _records(masked) if isinstance(r, BindRecord)]
    assert len(binds) == 3
    assert binds[0].params[0] == "1"
    assert binds[1].params[0] == "2"
    for bind in binds[:2]:
        note = bind.params[1]
        assert isinstance(note, str)
        assert EMAIL not in note
        assert "@" not in note
    text, number = binds[2].params
    assert isinstance(text, str)
    assert EMAIL not in text
    assert number == OmittedValue(size=8, reason="a binary value that is not text cannot be masked")
    assert EMAIL not in _log_text(masked)
    assert EMAIL not in (Path(masked.config.data_dir) / "audit.jsonl").read_text()


def test_the_light_path_audits_every_execution(unrecorded: GatewayThread) -> None:
    with _connect(unrecorded) as conn:
        for n in range(4):
            assert conn.execute("SELECT %t::int * 2", (n,), prepare=True).fetchone() == (2 * n,)
    assert _audited(unrecorded, "SELECT $1::int * 2") == ["parse"] + ["execute"] * 4


def test_pgbench_prepared_executions_are_all_audited(recorded: GatewayThread) -> None:
    token = recorded.token(user=USER)
    script = Path(recorded.config.data_dir) / "select.sql"
    script.write_text("SELECT :n::int AS n;\n")
    env = {"PGPASSWORD": token, "PGSSLMODE": "require", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [
            "pgbench",
            "-n",
            "-M",
            "prepared",
            "-t",
            "25",
            "-D",
            "n=7",
            "-f",
            str(script),
            "-h",
            "127.0.0.1",
            "-p",
            str(recorded.port),
            "-U",
            USER,
            "app",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _audited(recorded, "SELECT $1::int AS n;") == ["parse"] + ["execute"] * 25


def test_an_execution_that_cannot_be_recorded_is_not_sent(
    recorded: GatewayThread, pg: ThrowawayPostgres
) -> None:
    with psycopg.connect(_direct(pg), autocommit=True) as direct:
        direct.execute("TRUNCATE executed")
    insert = "INSERT INTO executed VALUES (%s, 'x')"
    with _connect(recorded, autocommit=True) as conn:
        conn.execute(insert, (1,), prepare=True)
        with disk_full_for(".slog"), pytest.raises(psycopg.Error) as info:
            conn.execute(insert, (2,), prepare=True)
    assert "could not be recorded" in str(info.value)
    with psycopg.connect(_direct(pg)) as direct:
        assert direct.execute("SELECT id FROM executed").fetchall() == [(1,)]
    with _connect(recorded) as fresh:  # the gateway serves on
        assert fresh.execute("SELECT 1").fetchone() == (1,)
