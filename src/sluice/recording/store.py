"""Where session logs live: open recorders, find, verify, replay and prune logs."""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sluice.errors import ConfigError
from sluice.events import SessionContext
from sluice.recording.errors import RecordingError
from sluice.recording.format import LOG_SUFFIX, MIN_KEY_BYTES, SESSION_ID_RE
from sluice.recording.reader import replay
from sluice.recording.records import Record
from sluice.recording.spec import RecordingSpec, resolve_key_ref
from sluice.recording.verify import VerifyReport, verify
from sluice.recording.writer import FailureHook, Recorder

log = logging.getLogger(__name__)


def prune(directory: Path, older_than: dt.timedelta, *, now: float | None = None) -> list[Path]:
    """Remove session logs last modified more than `older_than` ago; return them.

    Only regular files named `<session_id>.slog` are considered (symlinks and
    other files are left alone). An open session's log keeps a fresh mtime.
    """
    cutoff = (time.time() if now is None else now) - older_than.total_seconds()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not entry.name.endswith(LOG_SUFFIX):
            continue
        if not SESSION_ID_RE.fullmatch(entry.name[: -len(LOG_SUFFIX)]):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_mtime >= cutoff:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed.append(Path(entry.path))
    return sorted(removed)


class RecordingStore:
    """Recorder factory and log directory, configured from a RecordingSpec."""

    def __init__(
        self,
        spec: RecordingSpec,
        *,
        base_dir: Path | None = None,
        hmac_key: bytes | None = None,
        on_failure: FailureHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.dir = spec.dir if base_dir is None or spec.dir.is_absolute() else base_dir / spec.dir
        if hmac_key is None and spec.hmac_key is not None:
            hmac_key = resolve_key_ref(spec.hmac_key)
        if hmac_key is not None and len(hmac_key) < MIN_KEY_BYTES:
            raise ConfigError(f"recording key must be at least {MIN_KEY_BYTES} bytes")
        self._key = hmac_key
        self._on_failure = on_failure
        self._clock = clock
        self._dir_ready = False

    @property
    def keyed(self) -> bool:
        return self._key is not None

    def path_for(self, session_id: str) -> Path:
        if not SESSION_ID_RE.fullmatch(session_id):
            raise RecordingError(
                f"invalid session id {session_id!r}",
                hint="letters, digits, '.', '_' and '-', at most 128, not starting with '.'",
            )
        return self.dir / f"{session_id}{LOG_SUFFIX}"

    def open(self, context: SessionContext, *, required: bool | None = None) -> Recorder:
        """Start the log of a new session (see Recorder.open for failure handling).

        `required` overrides the spec's default (e.g. per connection)."""
        path = self.path_for(context.session_id)
        if not self._dir_ready:
            try:
                self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._dir_ready = True
            except OSError as exc:
                log.error("cannot create recording directory %s: %s", self.dir, exc)
        return Recorder.open(
            path,
            context,
            key=self._key,
            hash=self.spec.hash,
            max_bytes=self.spec.max_bytes_per_session,
            required=self.spec.required if required is None else required,
            fsync_on_end=self.spec.fsync_on_end,
            on_failure=self._on_failure,
            clock=self._clock,
        )

    def sessions(self) -> list[str]:
        """Session ids with a log, oldest first (by modification time)."""
        try:
            entries = [
                e for e in os.scandir(self.dir) if e.name.endswith(LOG_SUFFIX) and e.is_file()
            ]
        except FileNotFoundError:
            return []
        entries.sort(key=lambda e: (e.stat().st_mtime, e.name))
        ids = [e.name[: -len(LOG_SUFFIX)] for e in entries]
        return [i for i in ids if SESSION_ID_RE.fullmatch(i)]

    def verify(self, session_id: str) -> VerifyReport:
        return verify(self.path_for(session_id), key=self._key)

    def replay(self, session_id: str) -> Iterator[Record]:
        return replay(self.path_for(session_id))

    def prune(self, *, now: float | None = None) -> list[Path]:
        """Apply `retention_days`; returns the removed logs."""
        if self.spec.retention_days is None:
            return []
        return prune(self.dir, dt.timedelta(days=self.spec.retention_days), now=now)
