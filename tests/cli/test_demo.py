"""`sluice demo` as a newcomer runs it: psql-style clients against the printed
address, then Ctrl-C, SIGTERM or a kill, and nothing left behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sluice.devservers.postgres import free_port
from tests.helpers import process_running

STARTUP_TIMEOUT = 90.0
GONE_TIMEOUT = 30.0
AGENT_DSN = re.compile(
    r"host=127\.0\.0\.1 port=\d+ dbname=shop user=agent password=\S+ sslmode=require"
)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """The demo's TMPDIR: its own, so what it leaves behind can be seen; open
    to the `postgres` user, who runs the throwaway server."""
    path = Path(tempfile.mkdtemp(prefix="sluice-demo-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _start_demo(scratch: Path) -> tuple[subprocess.Popen[str], str, int]:
    """The running demo, the agent's DSN it printed, and its PostgreSQL's pid."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice", "demo", "--port", str(free_port()), "--rows", "50"],
        env={**os.environ, "TMPDIR": str(scratch), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    said: list[str] = []
    dsn = None
    for line in proc.stdout:
        said.append(line)
        found = AGENT_DSN.search(line)
        if found:
            dsn = found.group(0)
        if "Press Ctrl-C to stop" in line or time.monotonic() > deadline:
            break
    assert dsn is not None, "".join(said)
    postmaster = next(scratch.glob("sluice-pg-*/data/postmaster.pid"))
    return proc, dsn, int(postmaster.read_text().split()[0])


def _wait_until_up(dsn: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_the_demo_masks_blocks_and_leaves_nothing_behind(
    scratch: Path, stop: signal.Signals
) -> None:
    proc, dsn, postmaster = _start_demo(scratch)
    try:
        _wait_until_up(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT email, ssn FROM customers LIMIT 1").fetchone()
            assert row == ("[REDACTED:email]", "[REDACTED:ssn]")
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no-unbounded-writes"):
                conn.execute("DELETE FROM orders")
        proc.send_signal(stop)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if stop == signal.SIGTERM:
        assert proc.returncode == 0
    deadline = time.monotonic() + GONE_TIMEOUT
    while (process_running(postmaster) or any(scratch.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not process_running(postmaster), "the demo's PostgreSQL outlived it"
    assert not any(scratch.iterdir()), sorted(p.name for p in scratch.iterdir())
