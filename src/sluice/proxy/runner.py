"""`sluice serve`: start the gateway from configuration, in one or N processes."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console

from sluice.config import Config
from sluice.proxy.server import build_gateway, run

if TYPE_CHECKING:
    from sluice.cli.common import CliState

log = logging.getLogger(__name__)


def _worker(state: CliState, reuse_port: bool) -> None:
    gateway = build_gateway(state.config, store=state.store)
    run(gateway, reuse_port=reuse_port, config_path=state.resolved_config_path)


def run_gateway(state: CliState, *, workers: int = 1) -> None:
    config = state.config
    console = Console(stderr=True)
    console.print(
        f"[bold]sluice[/] gateway: PostgreSQL on [bold]{config.listen.postgres}[/], "
        f"{len(config.connections)} connection(s), store {_safe(config.store_url)}",
        highlight=False,
    )
    for conn in config.connections:
        console.print(
            f"  - {conn.name}: {conn.host}:{conn.port}/{conn.database} "
            f"as {conn.user} (tls {conn.tls.mode})",
            highlight=False,
        )
    # Migrate once, before workers start, so they never race on the schema.
    state.store.migrate()
    if workers == 1:
        _worker(state, reuse_port=False)
        return
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(state, True), daemon=False) for _ in range(workers)]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.pid is not None:
                os.kill(proc.pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    codes = []
    for proc in procs:
        proc.join()
        codes.append(proc.exitcode)
    if any(codes):
        sys.exit(1)


def _safe(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def emit_admin_audit(config: Config, kind: str, **fields: Any) -> None:
    """Audit an administrative action taken from the CLI (tokens, approvals)."""
    from sluice.proxy.governance_setup import admin_audit

    admin_audit(config, kind, **fields)
