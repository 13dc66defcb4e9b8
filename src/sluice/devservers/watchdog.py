"""Stop a throwaway server when the process that started it is gone.

A test run killed with SIGTERM runs no pytest finalizers, and nothing runs
on SIGKILL, so a throwaway server started by it (PostgreSQL detaches
through `pg_ctl`, benchmark servers run in their own sessions) would keep
its port, its memory and its temporary directory until the machine
reboots. `Watchdog.start` spawns a small process, in a session of its own,
that waits on a pidfd of its owner; when the owner exits without
`release()`, the watchdog runs the stop command, kills the process group
and removes the directory it was given. `release()` ends it once the
owner has stopped the server itself.

Run as `python -m sluice.devservers.watchdog --help` for its arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

STOP_TIMEOUT = 30.0


class Watchdog:
    """A running watchdog process; `release()` it after a clean stop."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    @classmethod
    def start(
        cls,
        *,
        stop: Sequence[str] = (),
        kill_group: int | None = None,
        remove: Path | None = None,
    ) -> Watchdog:
        """Guard what this process started: on its exit, run `stop`, then
        SIGKILL the process group `kill_group`, then delete `remove`."""
        argv = [sys.executable, "-m", "sluice.devservers.watchdog"]
        if kill_group is not None:
            argv += ["--kill-group", str(kill_group)]
        if remove is not None:
            argv += ["--remove", str(remove)]
        if stop:
            argv += ["--", *stop]
        # The owner's own pidfd, handed down: no window in which its pid
        # could be reused before the watchdog looks it up.
        owner = os.pidfd_open(os.getpid())
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(owner,),
                env={**os.environ, "SLUICE_WATCHDOG_OWNER_FD": str(owner)},
                # Out of the owner's process group and terminal: a signal
                # to the group that kills the owner must not kill the guard.
                start_new_session=True,
            )
        finally:
            os.close(owner)
        return cls(proc)

    def release(self) -> None:
        """The owner stopped the server itself: end the watchdog, doing nothing."""
        if self._proc.poll() is None:
            self._proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(5)

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _wait_for_exit(pidfd: int) -> None:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    while not poller.poll():
        pass


def _clean_up(stop: Sequence[str], kill_group: int | None, remove: Path | None) -> None:
    if stop:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(list(stop), capture_output=True, timeout=STOP_TIMEOUT, check=False)
    if kill_group is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(kill_group, signal.SIGKILL)
    if remove is not None:
        shutil.rmtree(remove, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sluice.devservers.watchdog",
        description=(
            "Wait until the process whose pidfd is descriptor "
            "$SLUICE_WATCHDOG_OWNER_FD exits, then run COMMAND, kill a process "
            "group and remove a directory. Started by Watchdog.start, not by hand."
        ),
    )
    parser.add_argument("--kill-group", type=int, help="process group to SIGKILL")
    parser.add_argument("--remove", type=Path, help="directory to delete")
    parser.add_argument("stop", nargs="*", metavar="COMMAND", help="stop command, after --")
    args = parser.parse_args(argv)
    owner_fd = os.environ.get("SLUICE_WATCHDOG_OWNER_FD")
    if owner_fd is None or not owner_fd.isdigit():
        parser.error("SLUICE_WATCHDOG_OWNER_FD must name the owner's pidfd")
    # SIGTERM is `release()`: the default action ends the process, cleanly.
    _wait_for_exit(int(owner_fd))
    _clean_up(args.stop, args.kill_group, args.remove)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
