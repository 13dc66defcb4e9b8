"""Session recording: append-only, hash-chained, replayable logs (one per session)."""

from sluice.recording.errors import RecordingError, RecordingFormatError
from sluice.recording.reader import replay
from sluice.recording.records import Record, RecordKind
from sluice.recording.render import render_replay
from sluice.recording.spec import RecordingSpec, resolve_key_ref
from sluice.recording.store import RecordingStore, prune
from sluice.recording.verify import Problem, VerifyReport, verify
from sluice.recording.writer import Recorder

__all__ = [
    "Problem",
    "Record",
    "RecordKind",
    "Recorder",
    "RecordingError",
    "RecordingFormatError",
    "RecordingSpec",
    "RecordingStore",
    "VerifyReport",
    "prune",
    "render_replay",
    "replay",
    "resolve_key_ref",
    "verify",
]
