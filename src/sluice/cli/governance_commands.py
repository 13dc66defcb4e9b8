"""CLI commands of the governance core: policy, approvals, exec, session replay."""

from __future__ import annotations

import typer


def register(app: typer.Typer, sessions_app: typer.Typer) -> None:
    """Attach the governance commands to the main app."""
