"""Configuration of session recording (the `recording:` section)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sluice.errors import ConfigError
from sluice.recording.format import MIN_KEY_BYTES, ChainHash

DEFAULT_MAX_BYTES_PER_SESSION: Final = 64 * 1024 * 1024
"""Enough for tens of thousands of typical rows; bounds disk use per session."""

MIN_MAX_BYTES_PER_SESSION: Final = 64 * 1024
"""Below this even the statements of a short session would not fit."""


class RecordingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: Path = Path("recordings")
    """Where `<session_id>.slog` files go; relative paths are resolved by the
    caller against the data directory."""

    required: bool = True
    """Fail closed: if the log cannot be written, refuse the statement."""

    max_bytes_per_session: int = Field(
        default=DEFAULT_MAX_BYTES_PER_SESSION, ge=MIN_MAX_BYTES_PER_SESSION
    )
    """Past this size rows are no longer recorded (statements and verdicts are)."""

    retention_days: int | None = Field(default=90, ge=1)
    """`prune` removes logs older than this; None keeps them forever."""

    hmac_key: str | None = None
    """Key reference, `env:NAME` or `file:/path`; makes the hash chain unforgeable."""

    hash: ChainHash = ChainHash.SHA256_BLAKE3
    """The chain's hash for new logs: `sha256+blake3` (SHA-256 for records
    under 4 KiB, BLAKE3 for larger ones: each where it is the faster), `sha256`
    or `blake3`; keyed with a key (HMAC-SHA256, BLAKE3's keyed mode). On
    10,000-row SELECTs BLAKE3 takes 10-13% off the gateway's CPU per row
    here; on a statement's small records SHA-256 is the cheaper. Logs name
    their hash, so any of them verifies whatever this is set to."""

    fsync_on_end: bool = True
    """fsync the log once when the session ends (statements are always os.write-n)."""

    @field_validator("hmac_key")
    @classmethod
    def _check_ref(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("env:", "file:")):
            raise ValueError("hmac_key must be a reference: 'env:NAME' or 'file:/path'")
        return value


def resolve_key_ref(ref: str, *, setting: str = "recording.hmac_key") -> bytes:
    """Resolve `env:NAME` or `file:/path` to key bytes (at least 16 bytes).

    `setting` names the configuration key in error messages.
    """
    scheme, _, target = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(target)
        if value is None:
            raise ConfigError(
                f"{setting}: environment variable {target} is not set",
                hint=f"export {target}=$(openssl rand -hex 32)",
            )
        key = value.strip().encode()
    elif scheme == "file":
        try:
            key = Path(target).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"{setting}: cannot read {target}: {exc.strerror}") from None
    else:
        raise ConfigError(f"{setting}: unknown reference {ref!r}")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{setting}: key is {len(key)} bytes, at least {MIN_KEY_BYTES} required")
    return key
