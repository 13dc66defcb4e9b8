"""What every CLI command shares: loading config and store, printing, errors."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from sluice.config import Config, load_config
from sluice.errors import SluiceError
from sluice.policy.config import parse_duration as policy_duration
from sluice.store.db import Store

console = Console()
err_console = Console(stderr=True)

CONFIG_ENV = "SLUICE_CONFIG"


@dataclass(slots=True)
class CliState:
    config_path: Path | None = None
    store_url: str | None = None
    _config: Config | None = None
    _store: Store | None = None

    @property
    def resolved_config_path(self) -> Path | None:
        path = self.config_path
        if path is None and (env := os.environ.get(CONFIG_ENV)):
            path = Path(env)
        if path is None and Path("sluice.yaml").exists():
            path = Path("sluice.yaml")
        return path

    @property
    def config(self) -> Config:
        if self._config is None:
            config = load_config(self.resolved_config_path)
            if self.store_url:
                config = config.model_copy(update={"store": self.store_url})
            self._config = config
        return self._config

    @property
    def store(self) -> Store:
        if self._store is None:
            store = Store(self.config.store_url)
            store.migrate()
            self._store = store
        return self._store


def fail(message: str, *, hint: str | None = None, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    if hint:
        err_console.print(f"[yellow]hint:[/] {hint}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn Sluice errors into a clear message and exit status, not a traceback."""
    try:
        yield
    except SluiceError as exc:
        fail(exc.message, hint=exc.hint)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def parse_duration(text: str) -> dt.timedelta:
    """A duration option (30m, 12h, 7d, 2w, 1h30m), as policies spell them."""
    try:
        return policy_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not a duration like 30m, 12h, 7d or 2w") from exc


def ago(moment: dt.datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
