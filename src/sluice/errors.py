"""The root of Sluice's error tree.

Each package derives its own errors from these. An error carries the code it
becomes on the wire (SQLSTATE for SQL protocols), so the I/O layer can answer
the client in its own protocol without guessing.
"""

from __future__ import annotations


class SluiceError(Exception):
    """Base of every error Sluice raises on purpose."""

    sqlstate: str = "XX000"

    def __init__(self, message: str, *, sqlstate: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        if sqlstate is not None:
            self.sqlstate = sqlstate
        self.hint = hint


class ConfigError(SluiceError):
    """The configuration is invalid; the message names the file, the line and the fix."""

    sqlstate = "F0000"


class StoreError(SluiceError):
    """The store could not be read or written."""

    sqlstate = "58000"


class AuthenticationError(SluiceError):
    """A client could not be authenticated (bad, expired or revoked token)."""

    sqlstate = "28P01"


class CredentialError(SluiceError):
    """A backend credential reference could not be resolved or decrypted."""

    sqlstate = "08001"
