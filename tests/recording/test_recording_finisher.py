"""Sealed session logs are fsynced and closed off the event loop (sluice.recording.finisher)."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sluice.recording import RecordingError, verify
from sluice.recording.finisher import FINISHER, LogFinisher
from tests.helpers import fd_is_open_on, fsync_of

from .recording_helpers import context, store


def test_end_returns_while_the_fsync_is_still_running(tmp_path: Path) -> None:
    st = store(tmp_path)
    rec = st.open(context())
    path = st.path_for("sess-1")
    rec.statement("SELECT 1", origin="query")
    in_fsync, release = threading.Event(), threading.Event()

    def slow(fd: int) -> None:
        in_fsync.set()
        assert release.wait(10)

    with fsync_of(path.name, slow) as synced:
        try:
            rec.end(reason="client_terminated")  # does not wait for the fsync
            assert rec.ended
            assert in_fsync.wait(10)
            assert verify(path).ok  # every record was written before end() returned
            assert fd_is_open_on(synced[0], path)  # still syncing: not closed yet
        finally:
            release.set()
        assert FINISHER.drain()
    assert len(synced) == 1
    assert not fd_is_open_on(synced[0], path)
    assert rec.failed is None


def test_a_failed_fsync_is_reported_through_the_failure_hook(tmp_path: Path) -> None:
    reported: list[tuple[str, RecordingError]] = []
    st = store(tmp_path)
    st._on_failure = lambda session_id, err: reported.append((session_id, err))
    rec = st.open(context())
    path = st.path_for("sess-1")

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with fsync_of(path.name, failing) as synced:
        rec.end(reason="client_terminated")
        assert FINISHER.drain()
    assert len(synced) == 1
    assert not fd_is_open_on(synced[0], path)
    assert [sid for sid, _ in reported] == ["sess-1"]
    assert "cannot fsync session log" in reported[0][1].message
    assert "Input/output error" in reported[0][1].message
    assert rec.failed is reported[0][1]


def test_without_fsync_on_end_the_log_is_closed_at_once(tmp_path: Path) -> None:
    st = store(tmp_path, fsync_on_end=False)
    rec = st.open(context())
    path = st.path_for("sess-1")
    fd = rec._fd
    assert fd is not None

    def unexpected(fd: int) -> None:
        raise AssertionError("no fsync was asked for")

    with fsync_of(path.name, unexpected) as synced:
        rec.end(reason="client_terminated")
        assert not fd_is_open_on(fd, path)
        assert FINISHER.drain()
    assert synced == []
    assert verify(path).ok


def test_a_failing_callback_does_not_stop_the_other_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    finisher = LogFinisher()
    finished: list[OSError | None] = []

    def broken(error: OSError | None) -> None:
        raise RuntimeError("a bug in a callback")

    first = os.open(tmp_path / "a", os.O_WRONLY | os.O_CREAT, 0o600)
    second = os.open(tmp_path / "b", os.O_WRONLY | os.O_CREAT, 0o600)
    finisher.submit(first, broken)
    finisher.submit(second, finished.append)
    assert finisher.drain()
    assert finished == [None]
    assert not fd_is_open_on(first, tmp_path / "a")
    assert not fd_is_open_on(second, tmp_path / "b")
    assert "finishing a session log failed" in caplog.text


def test_drain_without_a_log_needs_no_thread() -> None:
    finisher = LogFinisher()
    assert finisher.drain()
    assert not finisher.started


def test_one_slow_fsync_does_not_hold_up_the_next_logs(tmp_path: Path) -> None:
    finisher = LogFinisher()
    slow_path = tmp_path / "slow"
    in_fsync, release = threading.Event(), threading.Event()

    def slow(fd: int) -> None:
        in_fsync.set()
        release.wait(10)

    finished: list[int] = []

    def on_finished(index: int) -> Callable[[OSError | None], None]:
        return lambda error: finished.append(index)

    with fsync_of(slow_path.name, slow):
        try:
            finisher.submit(os.open(slow_path, os.O_WRONLY | os.O_CREAT, 0o600), on_finished(-1))
            assert in_fsync.wait(10)
            for index in range(20):
                fd = os.open(tmp_path / f"log-{index}", os.O_WRONLY | os.O_CREAT, 0o600)
                finisher.submit(fd, on_finished(index))
            deadline = time.monotonic() + 10
            while len(finished) < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert sorted(finished) == list(range(20))  # all done while one still waits
            assert not finisher.drain(timeout=0.05)
        finally:
            release.set()
        assert finisher.drain()
    assert sorted(finished) == [-1, *range(20)]


def test_a_log_sealed_while_the_threads_stop_is_finished_at_once(tmp_path: Path) -> None:
    finisher = LogFinisher()
    finisher.submit(os.open(tmp_path / "first", os.O_WRONLY | os.O_CREAT, 0o600), print)
    assert finisher.drain()
    assert finisher._pool is not None
    finisher._pool.shutdown()  # as at interpreter exit: no new work is taken
    finished: list[OSError | None] = []
    last = os.open(tmp_path / "last", os.O_WRONLY | os.O_CREAT, 0o600)
    finisher.submit(last, finished.append)
    assert finished == [None]  # fsynced and closed before submit returned
    assert not fd_is_open_on(last, tmp_path / "last")


def test_past_the_queue_bound_a_log_is_finished_by_its_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    finisher = LogFinisher(threads=1, max_queued=2)
    slow_path = tmp_path / "slow"
    in_fsync, release = threading.Event(), threading.Event()

    def slow(fd: int) -> None:
        in_fsync.set()
        release.wait(10)

    finished_on: dict[str, int] = {}

    def on_finished(name: str) -> Callable[[OSError | None], None]:
        def finished(error: OSError | None) -> None:
            finished_on[name] = threading.get_ident()

        return finished

    def open_log(name: str) -> int:
        return os.open(tmp_path / name, os.O_WRONLY | os.O_CREAT, 0o600)

    with fsync_of(slow_path.name, slow):
        try:
            finisher.submit(open_log("slow"), on_finished("slow"))
            assert in_fsync.wait(10)
            queued = open_log("queued")
            finisher.submit(queued, on_finished("queued"))  # the only thread is busy
            assert fd_is_open_on(queued, tmp_path / "queued")
            overflow = open_log("overflow")
            finisher.submit(overflow, on_finished("overflow"))
            # the queue was full: fsynced and closed here, before submit returned
            assert finished_on == {"overflow": threading.get_ident()}
            assert not fd_is_open_on(overflow, tmp_path / "overflow")
            assert finisher.finished_inline == 1
            assert "finishing this one inline" in caplog.text
        finally:
            release.set()
        assert finisher.drain()
    assert set(finished_on) == {"slow", "queued", "overflow"}
    assert finished_on["queued"] != threading.get_ident()  # the thread took it
    later = open_log("later")
    finisher.submit(later, on_finished("later"))  # the queue drained: threads again
    assert finisher.drain()
    assert finished_on["later"] != threading.get_ident()
    assert finisher.finished_inline == 1
