"""Errors of the PostgreSQL codec.

`RemoteProtocolError`: the peer broke the protocol (bad input); the gateway
answers 08P01 where it can and closes the session. `LocalProtocolError`: we
tried to do something the protocol does not allow; that is a bug.
"""

from __future__ import annotations

from sluice.errors import SluiceError


class PgProtocolError(SluiceError):
    sqlstate = "08P01"


class RemoteProtocolError(PgProtocolError):
    """The peer sent bytes that are not valid PostgreSQL protocol."""


class FrameTooLarge(RemoteProtocolError):
    """A message declared a length beyond the configured limit."""

    sqlstate = "54000"


class LocalProtocolError(PgProtocolError):
    """We were asked to produce something the protocol does not allow."""

    sqlstate = "XX000"


class TooManyPendingRequests(RemoteProtocolError, OverflowError):
    """The client pipelined more requests than the gateway tracks.

    Also an `OverflowError`, which is what the tracker raised before; being a
    `RemoteProtocolError` lets the I/O layer answer it like any other bad input.
    """

    sqlstate = "54000"
