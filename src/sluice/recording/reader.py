"""Read a session log back as typed records (no verification: see `verify`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from sluice.recording.errors import RecordingFormatError
from sluice.recording.format import MAX_RECORD_BYTES
from sluice.recording.records import Record, parse_records


def replay(path: Path) -> Iterator[Record]:
    """Yield the records of a log in file order, streaming.

    A partial last line (a crash mid-write) is skipped; any other damage
    raises RecordingFormatError naming the line. Run `verify` first to know
    whether the log can be trusted.
    """
    try:
        f = path.open("rb")
    except OSError as exc:
        raise RecordingFormatError(f"cannot open {path}: {exc.strerror or exc}") from None
    with f:
        line_no = 0
        while True:
            raw = f.readline(MAX_RECORD_BYTES + 1)
            if not raw:
                return
            line_no += 1
            if not raw.endswith(b"\n"):
                if len(raw) > MAX_RECORD_BYTES:
                    raise RecordingFormatError(f"{path}:{line_no}: line too long")
                return  # partial last line
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise RecordingFormatError(f"{path}:{line_no}: not JSON: {exc}") from None
            try:
                yield from parse_records(obj)
            except RecordingFormatError as exc:
                raise RecordingFormatError(f"{path}:{line_no}: {exc.message}") from None
