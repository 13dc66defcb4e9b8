"""COPY through the gateway is in the session log: both directions, masked, fail closed."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sluice.devservers.postgres import ThrowawayPostgres
from sluice.proxy.governance_setup import recording_store
from sluice.recording import replay, verify
from sluice.recording.records import CopyRecord, EndRecord
from tests.conftest import APP_PASSWORD, base_config
from tests.helpers import GatewayThread, disk_full_for, latest_session

USER = "copier"
# What the masked gateway must keep out of its logs (it goes to PostgreSQL as it is).
EMAIL = "rosa.diaz@example.org"
SSN = "219-09-9999"


def _direct(pg: ThrowawayPostgres) -> str:
    return pg.dsn(user="app", password=APP_PASSWORD, dbname="app")


@pytest.fixture(scope="module", autouse=True)
def tables(pg: ThrowawayPostgres) -> None:
    with psycopg.connect(_direct(pg), autocommit=True) as conn:
        conn.execute(
            "DROP TABLE IF EXISTS copy_rec, copy_pii; "
            "CREATE TABLE copy_rec (id int, name text); "
            "CREATE TABLE copy_pii (id int, name text, email text, ssn text)"
        )


@pytest.fixture(scope="module")
def recorded(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    thread = GatewayThread(base_config(pg, tmp_path_factory.mktemp("copy-rec"))).start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def masked(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    config = base_config(
        pg,
        tmp_path_factory.mktemp("copy-masked"),
        masking=("pii",),
        masking_profiles=[{"name": "pii", "detectors": ["all"], "content": True}],
    )
    thread = GatewayThread(config).start()
    yield thread
    thread.stop()


def _psql(gateway: GatewayThread, *args: str, stdin: str | None = None) -> str:
    token = gateway.token(user=USER)
    result = subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", gateway.dsn(token, user=USER), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _log(gateway: GatewayThread) -> Path:
    path = recording_store(gateway.config).path_for(latest_session(gateway, USER))
    report = verify(path)
    assert report.ok, report
    assert report.sealed, report
    return path


def _data(path: Path, direction: str) -> bytes:
    return b"".join(
        r.data for r in replay(path) if isinstance(r, CopyRecord) and r.direction == direction
    )


def test_copy_both_ways_is_recorded_byte_for_byte(recorded: GatewayThread, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("".join(f'{i},"name, {i}"\n' for i in range(30_000)))  # about 600 KB
    out = tmp_path / "out.csv"
    stdout = _psql(
        recorded,
        "-c",
        "TRUNCATE copy_rec",
        "-c",
        f"\\copy copy_rec FROM '{src}' WITH (FORMAT csv)",
        "-c",
        f"\\copy (SELECT * FROM copy_rec ORDER BY id) TO '{out}' WITH (FORMAT csv)",
    )
    assert "COPY 30000" in stdout
    path = _log(recorded)
    assert _data(path, "in") == src.read_bytes()
    assert _data(path, "out") == out.read_bytes() == src.read_bytes()
    end = next(r for r in replay(path) if isinstance(r, EndRecord))
    assert end.copy_bytes_recorded == 2 * src.stat().st_size
    assert end.copy_bytes_dropped == 0


def test_copy_is_recorded_masked_while_the_database_gets_the_data(
    masked: GatewayThread, pg: ThrowawayPostgres
) -> None:
    rows = f"1\tRosa Diaz\t{EMAIL}\t{SSN}\n2\tJake Peralta\tnone\tnone\n"
    stdout = _psql(
        masked,
        "-c",
        "TRUNCATE copy_pii",
        "-c",
        "COPY copy_pii FROM STDIN",
        "-c",
        "COPY (SELECT * FROM copy_pii ORDER BY id) TO STDOUT",
        stdin=rows,
    )
    assert EMAIL not in stdout
    assert SSN not in stdout
    assert "Rosa Diaz" in stdout
    with psycopg.connect(_direct(pg)) as conn:  # what the client sent is what was stored
        stored = conn.execute("SELECT email, ssn FROM copy_pii WHERE id = 1").fetchone()
    assert stored == (EMAIL, SSN)

    path = _log(masked)
    inbound, outbound = _data(path, "in"), _data(path, "out")
    assert inbound.count(b"\n") == 2
    assert b"Rosa Diaz" in inbound
    assert b"Jake Peralta" in inbound
    assert outbound.count(b"\n") == 2
    assert b"Rosa Diaz" in outbound
    for data in (inbound, outbound):
        assert EMAIL.encode() not in data
        assert SSN.encode() not in data
    # Nowhere in the log either, base64 or not.
    raw = path.read_bytes()
    assert EMAIL.encode() not in raw
    assert SSN.encode() not in raw
    for line in raw.splitlines():
        record = json.loads(line)
        if "data" in record:
            assert EMAIL.encode() not in base64.b64decode(record["data"])


def test_binary_copy_in_is_noted_not_kept_when_masking(
    masked: GatewayThread, pg: ThrowawayPostgres
) -> None:
    token = masked.token(user=USER)
    with psycopg.connect(masked.dsn(token, user=USER), autocommit=True) as conn:
        conn.execute("TRUNCATE copy_pii")
        with conn.cursor() as cur, cur.copy("COPY copy_pii FROM STDIN (FORMAT binary)") as copy:
            copy.set_types(["int4", "text", "text", "text"])
            copy.write_row((3, "Amy Santiago", EMAIL, SSN))
    with psycopg.connect(_direct(pg)) as direct:
        assert direct.execute("SELECT email FROM copy_pii WHERE id = 3").fetchone() == (EMAIL,)
    path = _log(masked)
    (copy_record,) = [r for r in replay(path) if isinstance(r, CopyRecord)]
    assert copy_record.direction == "in"
    assert copy_record.data == b""
    assert copy_record.size > 0
    assert copy_record.omitted is not None
    assert "binary" in copy_record.omitted
    assert EMAIL.encode() not in path.read_bytes()


def _copy_with_the_log_failing_before_copy_done(conn: psycopg.Connection[Any]) -> None:
    """A row goes in while the log works; the CopyDone sent as the block ends does not."""
    with (
        contextlib.ExitStack() as stack,
        conn.cursor() as cur,
        cur.copy("COPY copy_rec FROM STDIN") as copy,
    ):
        copy.write(b"1\tbefore the disk filled\n")
        stack.enter_context(disk_full_for(".slog"))


def test_copy_data_that_cannot_be_recorded_never_commits(
    recorded: GatewayThread, pg: ThrowawayPostgres
) -> None:
    token = recorded.token(user=USER)
    with psycopg.connect(_direct(pg), autocommit=True) as direct:
        direct.execute("TRUNCATE copy_rec")
    with (
        psycopg.connect(recorded.dsn(token, user=USER), autocommit=True) as conn,
        pytest.raises(psycopg.Error) as info,
    ):
        _copy_with_the_log_failing_before_copy_done(conn)
    assert "could not be recorded" in str(info.value)
    with psycopg.connect(_direct(pg)) as direct:
        assert direct.execute("SELECT count(*) FROM copy_rec").fetchone() == (0,)
    with psycopg.connect(recorded.dsn(token, user=USER)) as fresh:  # the gateway serves on
        assert fresh.execute("SELECT 1").fetchone() == (1,)
