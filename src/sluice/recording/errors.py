"""Errors of the session recorder.

A recording failure is a server-side I/O error: the proxy answers the client
with SQLSTATE 58030 (io_error) and refuses the statement (fail closed).
"""

from __future__ import annotations

from sluice.errors import SluiceError


class RecordingError(SluiceError):
    """The session log could not be written; the statement must be refused."""

    sqlstate = "58030"


class RecordingFormatError(RecordingError):
    """A session log could not be parsed (replay of a damaged or foreign file)."""

    sqlstate = "XX001"
