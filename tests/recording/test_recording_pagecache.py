"""Session logs do not pile up in the page cache (sluice.recording.pagecache)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sluice.protocols.postgres.messages import encode_data_row
from sluice.recording import verify
from sluice.recording.finisher import FINISHER
from sluice.recording.pagecache import (
    RELEASE_CHUNK_BYTES,
    RELEASER,
    PageCacheReleaser,
)
from tests.helpers import handles_on

from .recording_helpers import context, store

pytestmark = pytest.mark.skipif(
    not hasattr(os, "posix_fadvise"), reason="page-cache release needs Linux"
)


def _resident(path: Path) -> int:
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip())


def _on_page_cache_fs(path: Path) -> bool:
    """tmpfs keeps files in memory: there is no cache to drop."""
    out = subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True
    )
    return out.stdout.strip() not in ("tmpfs", "ramfs")


def test_a_large_log_is_dropped_from_the_cache_as_it_grows_and_once_sealed(
    tmp_path: Path,
) -> None:
    if shutil.which("fincore") is None:
        pytest.skip("needs util-linux fincore to see the page cache")
    if not _on_page_cache_fs(tmp_path):
        pytest.skip("the test directory is on tmpfs")
    st = store(tmp_path, max_bytes_per_session=1 << 30)
    rec = st.open(context())
    path = st.path_for("sess-1")
    batch = b"".join(encode_data_row([b"%08d" % i, b"x" * 200]) for i in range(2000))
    for _ in range(32 * 1024 * 1024 // len(batch)):  # a log of many chunks
        rec.wire_rows(["id", "note"], [0, 0], batch, 2000)
    assert not rec.capped
    assert RELEASER.drain()
    os.sync()  # the disk has caught up: every page written so far is clean
    for _ in range(2):  # more log: the next release lets the clean part go
        rec.wire_rows(["id", "note"], [0, 0], batch, 2000)
    assert RELEASER.drain()
    written = os.path.getsize(path)
    assert _resident(path) < 0.25 * written
    rec.complete("SELECT 1")
    rec.end(reason="client_terminated")
    assert FINISHER.drain()  # fsynced, then handed to the releaser
    assert RELEASER.drain()
    assert _resident(path) < 0.05 * os.path.getsize(path)
    assert verify(path).ok  # read back from disk, whole and in order


def test_a_small_log_takes_no_descriptor_and_no_thread(tmp_path: Path) -> None:
    releaser = PageCacheReleaser()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    before = len(os.listdir("/proc/self/fd"))
    log = releaser.track(tmp_path / "f")
    assert log is not None
    log.wrote(RELEASE_CHUNK_BYTES - 1)
    assert not log.large
    assert len(os.listdir("/proc/self/fd")) == before
    os.close(fd)
    log.close()  # nothing for the thread: the finisher drops a small log's pages
    assert releaser._worker is None
    assert releaser.drain()


def test_a_large_log_holds_no_descriptor_between_jobs(tmp_path: Path) -> None:
    """The session caps count three descriptors a session (client, backend,
    log): the thread opens a large log only while a job runs."""
    releaser = PageCacheReleaser()
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"x" * RELEASE_CHUNK_BYTES)
    log = releaser.track(path)
    assert log is not None
    log.wrote(RELEASE_CHUNK_BYTES)
    assert log.large
    assert releaser.drain()
    assert handles_on(path) == [str(fd)]  # the writer's own, nothing more
    os.close(fd)  # the writer is done before the last job runs
    log.close()
    assert releaser.drain()
    assert handles_on(path) == []


def test_a_small_sealed_log_leaves_the_page_cache_after_its_fsync(tmp_path: Path) -> None:
    if shutil.which("fincore") is None:
        pytest.skip("needs util-linux fincore to see the page cache")
    if not _on_page_cache_fs(tmp_path):
        pytest.skip("the test directory is on tmpfs")
    st = store(tmp_path)
    rec = st.open(context())
    path = st.path_for("sess-1")
    rec.statement("SELECT 1", origin="query")
    rec.complete("SELECT 1")
    rec.end(reason="client_terminated")
    assert FINISHER.drain()
    assert os.path.getsize(path) > 0
    assert _resident(path) == 0
    assert verify(path).ok


def test_the_thread_outlives_a_failing_job(tmp_path: Path) -> None:
    releaser = PageCacheReleaser()
    gone = tmp_path / "deleted-by-retention"  # every job on it fails to open the file
    releaser.submit(gone, 0, RELEASE_CHUNK_BYTES, False)
    releaser.submit(gone, 0, RELEASE_CHUNK_BYTES, True)
    assert releaser.drain()
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    log = releaser.track(path)
    assert log is not None
    log.wrote(2 * RELEASE_CHUNK_BYTES)
    os.close(fd)
    log.close()
    assert releaser.drain()
    assert releaser._worker is not None
    assert releaser._worker.is_alive()
