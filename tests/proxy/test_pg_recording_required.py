"""Recording is required by default: no unrecorded statement reaches the backend."""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sluice.devservers.postgres import ThrowawayPostgres
from tests.conftest import APP_PASSWORD, base_config
from tests.helpers import GatewayThread, disk_full_for, fsync_of, latest_session


@pytest.fixture
def recorded(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    thread = GatewayThread(base_config(pg, tmp_path_factory.mktemp("recorded"))).start()
    yield thread
    thread.stop()


def test_a_statement_that_cannot_be_recorded_is_refused(
    recorded: GatewayThread, pg: ThrowawayPostgres
) -> None:
    token = recorded.token()
    with psycopg.connect(recorded.dsn(token), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with (
            disk_full_for(".slog"),  # session logs hit a full disk
            pytest.raises(psycopg.errors.InsufficientPrivilege) as info,
        ):
            conn.execute("CREATE TABLE unrecorded_probe (a int)")
    assert "could not be recorded" in str(info.value)
    direct = pg.dsn(user="app", password=APP_PASSWORD, dbname="app")
    with psycopg.connect(direct) as check:
        assert check.execute("SELECT to_regclass('unrecorded_probe')").fetchone() == (None,)
    with psycopg.connect(recorded.dsn(token)) as fresh:  # other sessions keep working
        assert fresh.execute("SELECT 2").fetchone() == (2,)


def test_a_session_ending_does_not_stall_the_others_on_its_fsync(
    recorded: GatewayThread,
) -> None:
    token = recorded.token()
    in_fsync, release, synced = threading.Event(), threading.Event(), threading.Event()

    def slow(fd: int) -> None:  # a busy or networked disk
        in_fsync.set()
        release.wait(5)
        synced.set()

    with (
        fsync_of(".slog", slow),
        psycopg.connect(recorded.dsn(token), autocommit=True) as other,
    ):
        try:
            with psycopg.connect(recorded.dsn(token), autocommit=True) as ending:
                ending.execute("SELECT 1")
            assert in_fsync.wait(5)  # the ended session's log is being fsynced ...
            assert other.execute("SELECT 2").fetchone() == (2,)
            assert not synced.is_set()  # ... and the gateway served meanwhile
        finally:
            release.set()


def test_a_failed_fsync_of_a_session_log_is_audited(recorded: GatewayThread) -> None:
    token = recorded.token()

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with fsync_of(".slog", failing):
        with psycopg.connect(recorded.dsn(token), autocommit=True) as conn:
            conn.execute("SELECT 1")
        session_id = latest_session(recorded, user="alice")
        recorded.stop()  # waits for the logs being finished, then closes audit
    audit = Path(recorded.config.data_dir) / "audit.jsonl"
    failures = [
        event
        for event in map(json.loads, audit.read_text().splitlines())
        if event["type"] == "recording.failed"
    ]
    assert len(failures) == 1
    assert failures[0]["path"].endswith(f"{session_id}.slog")
    assert "cannot fsync session log" in failures[0]["error"]
