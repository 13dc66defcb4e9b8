"""Masking of PostgreSQL results (bridges sluice.masking to the data path)."""

from __future__ import annotations

from typing import Any

from sluice.config import Config


def masking_engine(config: Config) -> Any:
    """Validate the masking section; None when no profile is declared."""
    return None


def explain_masking(
    config: Config, connection: str, sql: str, verdict: object
) -> list[dict[str, str]]:
    """Which output columns of `sql` would be masked, by what and why."""
    return []
