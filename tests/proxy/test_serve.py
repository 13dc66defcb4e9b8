"""`sluice serve` as users run it: the CLI process, SIGHUP and file-change reloads, workers."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from sluice.devservers.postgres import ThrowawayPostgres, free_port
from sluice.proxy.pg_listener import FILES_PER_SESSION, FILES_RESERVED
from tests.conftest import APP_PASSWORD


def write_config(
    path: Path,
    pg: ThrowawayPostgres,
    port: int,
    policy: str,
    limits: dict[str, int] | None = None,
) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(path.parent / "data"),
                **({"limits": limits} if limits else {}),
                "listen": {"postgres": f"127.0.0.1:{port}"},
                "connections": [
                    {
                        "name": "app",
                        "host": "127.0.0.1",
                        "port": pg.port,
                        "database": "app",
                        "user": "app",
                        "password": {"env": "SERVE_TEST_PASSWORD"},
                        "tls": {"mode": "require"},
                        "policy": "agent",
                    }
                ],
                "policies": [
                    {"name": "agent", "extends": policy}
                    if policy != "allow-all"
                    else {"name": "agent", "default": "allow"}
                ],
            }
        )
    )


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def wait_until_up(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            with psycopg.connect(
                f"host=127.0.0.1 port={port} dbname=x user=x password=x", connect_timeout=1
            ):
                pass
        except psycopg.OperationalError as exc:
            if "Connection refused" not in str(exc):
                return
        time.sleep(0.1)
    raise AssertionError("sluice serve did not come up")


def serve_with_open_files(config: Path, soft: int, hard: int) -> subprocess.Popen[str]:
    """`sluice serve` started under these limits on open files."""
    return subprocess.Popen(
        [sys.executable, "-m", "sluice", "-c", str(config), "serve"],
        env={**os.environ, "SERVE_TEST_PASSWORD": APP_PASSWORD},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )


@pytest.fixture
def served(
    pg: ThrowawayPostgres, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, int, subprocess.Popen[str], str]]:
    """`sluice serve` with `request.param` workers (default 1), or with
    `{"workers": N, "limits": {...}}`."""
    param = getattr(request, "param", 1)
    workers, limits = (
        (param, None) if isinstance(param, int) else (param["workers"], param["limits"])
    )
    port = free_port()
    config = tmp_path / "sluice.yaml"
    write_config(config, pg, port, "allow-all", limits)
    token = json.loads(cli(config, "tokens", "create", "--user", "agent", "--json").stdout)["token"]
    env = {**os.environ, "SERVE_TEST_PASSWORD": APP_PASSWORD}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice", "-c", str(config), "serve", "--workers", str(workers)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_up(port, proc)
        yield config, port, proc, token
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def dsn(port: int, token: str) -> str:
    return f"host=127.0.0.1 port={port} dbname=app user=agent password={token} sslmode=require"


PROBE = "CREATE TEMP TABLE IF NOT EXISTS probe (a int)"


def test_sighup_and_file_change_reload_the_policy(
    served: tuple[Path, int, subprocess.Popen[str], str], pg: ThrowawayPostgres
) -> None:
    config, port, proc, token = served
    with psycopg.connect(dsn(port, token), autocommit=True) as conn:
        conn.execute(PROBE)  # allowed by the first policy
        write_config(config, pg, port, "read-only")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                conn.execute(PROBE)
            except psycopg.errors.InsufficientPrivilege:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the reloaded policy was not applied to the open session")
        # An invalid file is rejected and the policy in force stays.
        config.write_text(config.read_text().replace("read-only", "no-such-preset"))
        time.sleep(2.5)  # the file watch polls every second
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(PROBE)
        assert conn.execute("SELECT 2").fetchone() == (2,)
        # A valid change is picked up from the file alone, without a signal.
        write_config(config, pg, port, "allow-all")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                conn.execute(PROBE)
                break
            except psycopg.errors.InsufficientPrivilege:
                time.sleep(0.2)
        else:
            raise AssertionError("the changed file was not reloaded")
    assert proc.poll() is None


@pytest.mark.parametrize("served", [2], indirect=True)
def test_two_workers_share_the_listener(
    served: tuple[Path, int, subprocess.Popen[str], str],
) -> None:
    _, port, proc, token = served
    pids = set()
    for _ in range(12):
        with psycopg.connect(dsn(port, token)) as conn:
            pids.add(conn.execute("SELECT 1").fetchone())
    assert pids == {(1,)}
    assert proc.poll() is None


@pytest.mark.parametrize(
    "served",
    [{"workers": 2, "limits": {"max_sessions": 3, "max_sessions_per_user": 2}}],
    indirect=True,
)
def test_session_caps_count_the_sessions_of_every_worker(
    served: tuple[Path, int, subprocess.Popen[str], str],
) -> None:
    """The caps are the gateway's: a user capped at 2 gets 2 sessions, not 2
    per worker. Six tries land on either worker at random; counted per
    process, more than 2 would get in unless all six landed on one (1 in 32)."""
    config, port, proc, token = served
    other_token = json.loads(cli(config, "tokens", "create", "--user", "other", "--json").stdout)[
        "token"
    ]
    other_dsn = dsn(port, other_token).replace("user=agent", "user=other")
    held: list[psycopg.Connection[tuple[object, ...]]] = []
    refusals: list[str] = []
    try:
        for _ in range(6):
            try:
                held.append(psycopg.connect(dsn(port, token)))
            except psycopg.OperationalError as exc:
                refusals.append(str(exc))
        assert len(held) == 2
        assert len(refusals) == 4
        assert all("'agent' already has 2 sessions" in text for text in refusals)
        held.append(psycopg.connect(other_dsn))  # the gateway's third session
        with pytest.raises(psycopg.OperationalError, match="maximum of 3 sessions"):
            psycopg.connect(other_dsn)
        held.pop(0).close()
        deadline = time.monotonic() + 10
        while True:  # the closed session's slot comes back, whichever worker had it
            try:
                held.append(psycopg.connect(other_dsn))
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for conn in held:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        for conn in held:
            conn.close()
    assert proc.poll() is None


@pytest.mark.parametrize(
    ("soft", "hard"),
    [(512, 8192), (1024, 1024)],
    ids=["soft-below-hard", "hard-limit-low"],
)
def test_serve_lifts_the_open_file_limit_to_the_hard_one(
    pg: ThrowawayPostgres, tmp_path: Path, soft: int, hard: int
) -> None:
    _, machine_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if machine_hard != resource.RLIM_INFINITY and machine_hard < hard:
        pytest.skip(f"the machine's hard limit on open files is {machine_hard}")
    port = free_port()
    config = tmp_path / "sluice.yaml"
    write_config(config, pg, port, "allow-all")
    token = json.loads(cli(config, "tokens", "create", "--user", "agent", "--json").stdout)["token"]
    proc = serve_with_open_files(config, soft, hard)
    try:
        wait_until_up(port, proc)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert row.split()[3:5] == [str(hard), str(hard)]
        with psycopg.connect(dsn(port, token)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    said = " ".join(stderr.split())
    assert (f"at most {hard} open files" in said) == (hard < 4096), stderr
    cap = (hard - FILES_RESERVED) // FILES_PER_SESSION
    assert f"up to {cap} sessions at once (the open-file limit)" in said, stderr


def test_a_process_takes_no_more_sessions_than_its_descriptors_allow(
    pg: ThrowawayPostgres, tmp_path: Path
) -> None:
    """A configured gateway cap above what the open-file limit leaves room for
    does not lift the process's own: past it, clients are refused cleanly,
    not failed for want of a descriptor."""
    files = 100
    cap = (files - FILES_RESERVED) // FILES_PER_SESSION
    port = free_port()
    config = tmp_path / "sluice.yaml"
    write_config(config, pg, port, "allow-all", {"max_sessions": 1000})
    token = json.loads(cli(config, "tokens", "create", "--user", "agent", "--json").stdout)["token"]
    proc = serve_with_open_files(config, files, files)
    held: list[psycopg.Connection[tuple[object, ...]]] = []
    try:
        wait_until_up(port, proc)
        time.sleep(0.5)  # the probe connections of wait_until_up have ended
        refusals: list[str] = []
        for _ in range(cap + 3):
            try:
                held.append(psycopg.connect(dsn(port, token)))
            except psycopg.OperationalError as exc:
                refusals.append(str(exc))
        assert len(held) == cap
        assert len(refusals) == 3
        assert all(f"maximum of {cap} sessions" in text for text in refusals), refusals
        for conn in held:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        for conn in held:
            conn.close()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    said = " ".join(stderr.split())
    assert "up to 1000 sessions at once (limits.max_sessions)" in said, stderr
    assert f"up to {cap} sessions at once (the open-file limit)" in said, stderr
