"""`sluice serve`: start the gateway from configuration, in one or N processes."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import resource
import signal
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console

from sluice.config import Config
from sluice.credentials.vault import Vault
from sluice.proxy.pg_listener import session_capacity
from sluice.proxy.server import build_gateway, run
from sluice.proxy.slots import SessionSlots
from sluice.tls import gateway_cert

if TYPE_CHECKING:
    from sluice.cli.common import CliState

log = logging.getLogger(__name__)

# Results allocate many short-lived containers (rows, findings) that stay alive
# for a batch. With CPython's default first-generation threshold (700) they are
# collected mid-batch, survive, get promoted, and make older generations'
# collections frequent. A larger threshold lets them die young: PII-dense
# results are masked about a third faster (bench/hotpath.py --rows --pii).
GC_GEN0_THRESHOLD = 10_000


NOFILE_WITHOUT_HARD_LIMIT = 1 << 20
"""The soft limit asked for when the hard one is unlimited (Linux's default
fs.nr_open: a soft limit above it is refused)."""


def raise_open_file_limit() -> tuple[int, int]:
    """Lift the soft limit on open files to the hard one, as nginx
    (worker_rlimit_nofile) and Go's runtime do. Each session holds its
    client's socket, its backend's and its log; the usual soft limit of 1024
    would cap the gateway at a few hundred sessions. Returns (before, after);
    a refused change leaves the limit as it was, with a warning."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE_WITHOUT_HARD_LIMIT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, wanted, exc)
            return soft, soft
        log.info("open-file limit raised from %d to %d", soft, wanted)
        return soft, wanted
    return soft, soft


def tune_gc() -> None:
    """What is alive once the gateway is built (configuration, compiled policy
    and patterns) lives as long as the process: no collection walks it again."""
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def _worker(state: CliState, reuse_port: bool, session_slots: SessionSlots) -> None:
    state.store.after_fork()
    gateway = build_gateway(state.config, store=state.store, session_slots=session_slots)
    tune_gc()
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
    # Create what workers share once, before they start, so they never race
    # on the schema, the self-signed certificate or the master key.
    state.store.migrate()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    gateway_cert(config.data_dir, config.tls.cert_file, config.tls.key_file)
    Vault.open(config.data_dir)
    _, open_files = raise_open_file_limit()
    if open_files != resource.RLIM_INFINITY and open_files < 4096:
        console.print(
            f"[yellow]warning:[/] at most {open_files} open files (ulimit -n): each session "
            "holds about three; raise the hard limit (LimitNOFILE= in a systemd unit)",
            highlight=False,
        )
    if config.limits.max_sessions is not None:
        console.print(
            f"  up to {config.limits.max_sessions} sessions at once (limits.max_sessions)",
            highlight=False,
        )
    per_process = session_capacity()
    if per_process is not None:
        per = " per worker" if workers > 1 else ""
        console.print(
            f"  up to {per_process} sessions at once{per} (the open-file limit)", highlight=False
        )
    # The caps count the gateway's sessions, whichever worker serves them.
    session_slots = SessionSlots()
    if workers == 1:
        _worker(state, False, session_slots)
        return
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_worker, args=(state, True, session_slots), daemon=False)
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    # A worker that dies on its own takes the gateway down loudly: a gateway
    # silently serving at a fraction of its capacity is worse.
    while any(proc.is_alive() for proc in procs):
        for proc in procs:
            proc.join(0.5)
            if not proc.is_alive() and proc.exitcode not in (0, None) and not stopping:
                console.print(
                    f"[bold red]error:[/] worker {proc.pid} exited with status {proc.exitcode}; "
                    "stopping the gateway",
                    highlight=False,
                )
                forward(signal.SIGTERM, None)
    if any(proc.exitcode for proc in procs):
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
