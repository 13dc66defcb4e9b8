"""The watchdog stops what a dead process left running, and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sluice.devservers.watchdog import Watchdog
from tests.helpers import process_running

GONE_TIMEOUT = 30.0


def _eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + GONE_TIMEOUT
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def _owner(script: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Run `script` in a child Python; return it and the lines it printed
    before printing `ready`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        if line.strip() == "ready":
            return proc, lines
        lines.append(line.strip())
    raise AssertionError(f"the owner exited ({proc.wait()}) before it was ready: {lines}")


def test_a_killed_test_run_leaves_no_postgres_behind() -> None:
    owner, (root, postmaster) = _owner(
        "import time\n"
        "from sluice.devservers.postgres import ThrowawayPostgres\n"
        "pg = ThrowawayPostgres(tls=False).start()\n"
        "print(pg.root)\n"
        "print((pg.data_dir / 'postmaster.pid').read_text().split()[0])\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    assert process_running(int(postmaster))
    owner.kill()  # SIGKILL: no finalizer, no atexit
    owner.wait()
    assert _eventually(lambda: not process_running(int(postmaster))), "postgres outlived its owner"
    assert _eventually(lambda: not Path(root).exists()), "its directory was left behind"


def test_a_killed_owner_takes_its_process_group_down(tmp_path: Path) -> None:
    owner, (server,) = _owner(
        "import subprocess, time\n"
        "from pathlib import Path\n"
        "from sluice.devservers.watchdog import Watchdog\n"
        "server = subprocess.Popen(['sleep', '600'], start_new_session=True)\n"
        f"Watchdog.start(kill_group=server.pid, remove=Path({str(tmp_path)!r}))\n"
        "print(server.pid)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    owner.send_signal(signal.SIGTERM)  # Python's default: exit without finalizers
    owner.wait()
    assert _eventually(lambda: not process_running(int(server)))
    assert _eventually(lambda: not tmp_path.exists())


def test_a_released_watchdog_leaves_everything_as_it_was(tmp_path: Path) -> None:
    keep = tmp_path / "kept"
    keep.mkdir()
    server = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        watchdog = Watchdog.start(kill_group=server.pid, remove=keep)
        watchdog.release()
        assert not process_running(watchdog.pid)
        assert process_running(server.pid)
        assert keep.is_dir()
    finally:
        server.kill()
        server.wait()


def test_the_watchdog_refuses_to_run_without_an_owner() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sluice.devservers.watchdog", "--", "true"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "SLUICE_WATCHDOG_OWNER_FD"},
        check=False,
    )
    assert proc.returncode == 2
    assert "SLUICE_WATCHDOG_OWNER_FD" in proc.stderr
