"""`python -m bench.run`: Sluice against PostgreSQL direct and pgbouncer, in one run.

Starts a throwaway PostgreSQL (TLS, SCRAM), pgbouncer (session mode, TLS both
ways) and Sluice as subprocesses (pass-through, governed, column masking), then
runs every workload against every target round-robin within each repetition,
so that drift (other jobs on the machine, thermal) affects all targets alike.
With `--slices N` each pgbench measurement is cut into N shorter ones that
alternate between the targets, for hosts whose speed changes within seconds.
Writes bench/results/run-<timestamp>.json, latest.md and PNG plots.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import hostspeed, report
from bench.targets import BenchSetupError, Endpoint, Lab
from bench.workloads import (
    IDLE_LARGE_ROWS,
    IDLE_SESSIONS,
    LITERALS_SCRIPT,
    Sample,
    WorkloadError,
    approval_roundtrip,
    idle_sessions,
    large_results,
    masked_cells,
    now_stamp,
    pgbench,
    setup_data,
    stream,
)

WORKLOADS = ("pgbench", "large", "churn", "stream", "approval", "workers", "idle")
DEFAULT_OUT = Path(__file__).parent / "results"
PII_MASKING = {"profiles": [{"name": "pii", "detectors": ["all"], "content": True}]}
COLUMN_MASKING = {
    "profiles": [
        {
            "name": "cols",
            "columns": [{"match": "*email*", "strategy": "redact"}],
            "content": False,
        }
    ]
}
# The most client processes any workload uses at once.
POOL_SIZE = 8

console = Console(stderr=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    quick: bool
    repeat: int
    seconds: float  # per pgbench run
    slices: int  # pgbench runs per measurement, alternating between targets
    fetch_seconds: float  # per large-results run
    stream_rows: int
    approval_rounds: int
    only: tuple[str, ...]
    out: Path


Result = dict[str, float] | tuple[dict[str, float], list[tuple[float, float]]]
Measure = Callable[[Endpoint], Result]


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    workload: str
    case: str
    target: Endpoint
    run: Callable[[], Result]
    slice: int = 0


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark Sluice against PostgreSQL direct and pgbouncer (ratios in one run).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short smoke run (~2 min): 3 s runs, 1M-row stream"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="WORKLOAD",
        help=f"run only these workloads (repeat or comma-separate): {', '.join(WORKLOADS)}",
    )
    parser.add_argument(
        "--repeat", type=int, help="repetitions per measurement (default 3, 1 with --quick)"
    )
    parser.add_argument(
        "--seconds", type=float, help="seconds per pgbench run (default 10, 3 with --quick)"
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=1,
        help="cut each pgbench measurement into N runs of seconds/N (at least 1 s each) that "
        "alternate between the targets; each is paired with its reference's (default 1)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"results directory (default {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    only: list[str] = []
    for item in args.only or []:
        only += [w.strip() for w in item.split(",") if w.strip()]
    unknown = sorted(set(only) - set(WORKLOADS))
    if unknown:
        parser.error(
            f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}"
        )
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    if args.slices < 1 or seconds / args.slices < 1:
        parser.error(f"--slices must be between 1 and {int(seconds)}: a slice runs at least 1 s")
    return Settings(
        quick=args.quick,
        repeat=repeat,
        seconds=seconds,
        slices=args.slices,
        fetch_seconds=1.0 if args.quick else 5.0,
        stream_rows=1_000_000 if args.quick else 10_000_000,
        approval_rounds=20 if args.quick else 50,
        only=tuple(only) or WORKLOADS,
        out=args.out,
    )


def _warm(_: int) -> None:
    """Imports the workload module in a pool process before anything is timed."""
    time.sleep(0.2)


class Runner:
    def __init__(self, settings: Settings, lab: Lab):
        self.s = settings
        self.lab = lab
        self.notes: list[str] = lab.notes
        self.endpoints: dict[str, Endpoint] = {}
        self.config_files: dict[str, Path] = {}
        self.row_bytes: dict[str, float] = {}
        self.checks: dict[str, int] = {}
        self.masking_inactive: set[str] = set()

    def wants(self, workload: str) -> bool:
        return workload in self.s.only

    def start(self) -> None:
        console.print("Starting PostgreSQL (TLS, SCRAM) and loading data ...")
        direct = self.lab.start_postgres()
        self.endpoints["direct"] = direct
        self.row_bytes = setup_data(direct)
        if any(self.wants(w) for w in ("pgbench", "churn", "large", "idle")):
            console.print("Starting pgbouncer (session mode, TLS both ways, SCRAM) ...")
            self.endpoints["pgbouncer"] = self.lab.start_pgbouncer()
        if self.wants("pgbench"):
            console.print("Starting the reference pipe (uvloop, TLS both ways, no parsing) ...")
            try:
                self.endpoints["uvloop-pipe"] = self.lab.start_pipe()
                self.notes.append(
                    "uvloop-pipe: bench/pipe.py, a minimal TLS-terminating byte pipe on "
                    "uvloop (pgbench only): the floor under any Python gateway."
                )
            except BenchSetupError as exc:
                self._setup_failed("the reference pipe", exc)
        if self.wants("pgbench"):
            self.notes.append(
                "pgbench c8-literals: `pgbench -M simple -c 8 -f` a select-only script with the "
                "key inlined as a number and in a string literal (`... WHERE aid = :aid AND "
                "filler <> 'agent :aid'`), as agents write queries: no two texts are the same."
            )
        if self.wants("idle"):
            self.notes.append(
                f"idle: {IDLE_SESSIONS} sessions opened 8 at a time and held; per session is "
                "the growth from half of them to all (RSS, descriptors). pgbouncer keeps its "
                "server connections between clients, so from the second repetition its "
                "clients reuse them: one descriptor each. In the second case each session "
                f"first reads a {IDLE_LARGE_ROWS}-row result (about 1.2 MB) of customers_clean."
            )
        console.print("Starting Sluice: pass-through ...")
        self._sluice("sluice-pass", recording=False)
        self.notes.append(
            "sluice-pass: no rules: no policy, no masking, recording off "
            "(`recording: {enabled: false}`); token auth, TLS and audit stay on."
        )
        console.print("Starting Sluice: governed (ai-agent policy, content masking) ...")
        try:
            self._sluice("sluice-governed", policy=True, masking=PII_MASKING)
            self.notes.append(
                "sluice-governed: policy extends ai-agent, recording on, masking profile "
                "`pii` (all detectors, content: true). Session logs are deleted after each "
                "measurement (disk space, and reused page cache for the next one)."
            )
        except BenchSetupError as exc:
            self._setup_failed("sluice-governed with masking", exc)
            self.notes.append(
                "sluice-governed runs WITHOUT masking: the masking config was rejected at "
                f"startup: {_first_line(exc)}"
            )
            self._sluice("sluice-governed", policy=True)
        if self.wants("large"):
            console.print("Starting Sluice: column masking ...")
            try:
                self._sluice("sluice-colmask", policy=True, masking=COLUMN_MASKING)
                self.notes.append(
                    "sluice-colmask: as governed, but the masking profile redacts the "
                    "`*email*` column of every row (content scanning off); run on customers_pii."
                )
            except BenchSetupError as exc:
                self._setup_failed("sluice-colmask", exc)
                self.notes.append(f"sluice-colmask skipped, startup failed: {_first_line(exc)}")
        if self.wants("churn"):
            console.print("Starting Sluice: governed with backend pooling ...")
            try:
                self._sluice("sluice-pooled", policy=True, masking=PII_MASKING, pool=8)
                self.notes.append(
                    "sluice-pooled: as governed, with `pool: {size: 8}` (backend sessions "
                    "reset with DISCARD ALL and reused); used for connection churn."
                )
            except BenchSetupError as exc:
                self._setup_failed("sluice-pooled", exc)
        if self.wants("workers"):
            console.print("Starting Sluice: pass-through with --workers 2 ...")
            try:
                self._sluice("sluice-pass-w2", workers=2, recording=False)
            except BenchSetupError as exc:
                self._setup_failed("sluice serve --workers 2", exc)
                self.notes.append(
                    "GATEWAY BUG: the first `sluice serve --workers 2` on a fresh data_dir "
                    f"failed ({_first_line(exc)}): the workers race to generate the self-signed "
                    "TLS cert/key and master.key. Retried with both created beforehand."
                )
                try:
                    self._sluice("sluice-pass-w2", workers=2, provision=True, recording=False)
                except BenchSetupError as again:
                    self._setup_failed("sluice serve --workers 2 (retry)", again)
                    self.notes.append(
                        f"workers: `sluice serve --workers 2` failed again: {_first_line(again)}"
                    )
        self._check_masking()

    def _sluice(self, name: str, **kw: Any) -> None:
        endpoint, config_file = self.lab.start_sluice(name, **kw)
        self.endpoints[name] = endpoint
        self.config_files[name] = config_file

    def _setup_failed(self, what: str, exc: Exception) -> None:
        console.print(f"[bold red]{what} failed to start:[/]\n{exc}", highlight=False)

    def _check_masking(self) -> None:
        """Confirm masking actually happens (or not) where the workloads assume it."""
        direct = self.endpoints["direct"]
        for target, table in (
            ("sluice-pass", "customers_pii"),
            ("sluice-governed", "customers_pii"),
            ("sluice-governed", "customers_clean"),
            ("sluice-colmask", "customers_pii"),
        ):
            endpoint = self.endpoints.get(target)
            if endpoint is None:
                continue
            key = f"{target}/{table}"
            try:
                self.checks[key] = masked_cells(direct, endpoint, table)
            except Exception as exc:
                self.notes.append(f"masking check {key} failed: {exc}")
                continue
        if self.checks:
            self.notes.append(
                "masked cells in the first 500 rows (vs direct): "
                + ", ".join(f"{k} = {v}" for k, v in self.checks.items())
            )
        for target in ("sluice-governed", "sluice-colmask"):
            if self.checks.get(f"{target}/customers_pii") == 0:
                self.masking_inactive.add(target)
                self.notes.append(
                    f"WARNING: {target} accepted its masking profile but masked nothing on "
                    "customers_pii (emails, phones and SSNs came back verbatim): masking is "
                    "not applied on the data path, so its masking goals measure no masking."
                )
        if self.checks.get("sluice-governed/customers_clean", 0) > 0:
            self.notes.append(
                "WARNING: customers_clean had content-masking hits; the no-hits goal is not clean."
            )

    def plan(self, rep: int, pool: ProcessPoolExecutor) -> list[Job]:
        s = self.s
        names = [n for n in report.TARGET_ORDER if n in self.endpoints and n != "sluice-pass-w2"]
        shift = rep % len(names)
        order = names[shift:] + names[:shift]  # rotate so no target is always first
        ep = self.endpoints
        jobs: list[Job] = []

        def add(workload: str, case: str, targets: list[str], fn: Measure, slice_: int = 0) -> None:
            for name in targets:
                if name in ep:
                    target = ep[name]
                    jobs.append(
                        Job(
                            workload=workload,
                            case=case,
                            target=target,
                            run=partial(fn, target),
                            slice=slice_,
                        )
                    )

        def add_sliced(case: str, targets: list[str], **pgbench_args: Any) -> None:
            # Every other slice in reverse, so no target always runs right after another.
            for k in range(s.slices):
                add(
                    "pgbench-S",
                    case,
                    targets if k % 2 == 0 else targets[::-1],
                    partial(pgbench, seconds=s.seconds / s.slices, **pgbench_args),
                    k,
                )

        main = [n for n in order if n not in ("sluice-colmask", "sluice-pooled")]
        order = [n for n in order if n != "uvloop-pipe"]  # the pipe runs pgbench only
        if self.wants("pgbench"):
            for clients in (1, 8):
                for mode in ("simple", "extended", "prepared"):
                    add_sliced(f"c{clients}-{mode}", main, clients=clients, mode=mode)
            add_sliced("c8-literals", main, clients=8, mode="simple", script=LITERALS_SCRIPT)
        if self.wants("large"):
            for table in ("clean", "pii"):
                full = f"customers_{table}"
                for clients in (1, 8):
                    add(
                        "large-results",
                        f"{table}-c{clients}",
                        order,
                        partial(
                            large_results,
                            pool=pool,
                            table=full,
                            clients=clients,
                            seconds=s.fetch_seconds,
                            row_bytes=self.row_bytes[full],
                        ),
                    )
        if self.wants("churn"):
            add(
                "churn",
                "c8",
                [n for n in order if n != "sluice-colmask"],
                partial(pgbench, clients=8, mode="simple", seconds=s.seconds, connect=True),
            )
        if self.wants("stream"):
            label = f"{s.stream_rows / 1e6:g}M-rows"
            streamed = [n for n in order if n in ("sluice-pass", "sluice-governed")]
            add("stream", label, streamed, partial(stream, pool=pool, rows=s.stream_rows))
        if self.wants("idle"):
            held = [n for n in order if n in ("pgbouncer", "sluice-pass", "sluice-governed")]
            add("idle", f"{IDLE_SESSIONS}-sessions", held, idle_sessions)
            add(
                "idle",
                f"{IDLE_SESSIONS}-sessions-after-{IDLE_LARGE_ROWS}-rows",
                held,
                partial(
                    idle_sessions, query=f"SELECT * FROM customers_clean LIMIT {IDLE_LARGE_ROWS}"
                ),
            )
        if self.wants("approval") and "sluice-governed" in self.config_files:
            from sluice.config import load_config

            store_url = load_config(self.config_files["sluice-governed"]).store_url
            add(
                "approval",
                "update",
                ["sluice-governed"],
                partial(approval_roundtrip, store_url=store_url, rounds=s.approval_rounds),
            )
        if self.wants("workers") and "sluice-pass-w2" in ep:
            pair = ["sluice-pass", "sluice-pass-w2"]
            add(
                "workers",
                "c8-simple",
                pair if rep % 2 == 0 else pair[::-1],
                partial(pgbench, clients=8, mode="simple", seconds=s.seconds),
            )
        return jobs

    def run_job(self, job: Job, rep: int) -> Sample:
        series = None
        error = None
        metrics: dict[str, float] = {}
        try:
            result = job.run()
            if isinstance(result, tuple):
                metrics, series = result
            else:
                metrics = result
        except (WorkloadError, OSError, TimeoutError) as exc:
            error = str(exc)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._drop_recordings(job.target)
        if error is not None:
            error += self._gateway_state(job.target)
            console.print(
                f"[red]{job.workload} {job.case} {job.target.name}:[/] {error}", highlight=False
            )
        return Sample(
            workload=job.workload,
            case=job.case,
            target=job.target.name,
            rep=rep,
            slice=job.slice,
            metrics=metrics,
            error=error,
            series=series,
        )

    def _drop_recordings(self, target: Endpoint) -> None:
        """Delete the session logs a measurement wrote (sealed or about to be).

        A governed large-result run writes up to 64 MB per session. Left in
        place, the logs of a whole run fill gigabytes of disk, and the page
        cache they occupy makes every later write land on memory never used
        before, which on a VM costs several times a reused page (measured
        here: 0.6M rows/s governed with the logs deleted, 0.38M with 1.5 GB
        of them kept). The gateway's own cost is what is measured.
        """
        config_file = self.config_files.get(target.name)
        if config_file is None:
            return
        for log_file in (config_file.parent / "recordings").glob("*.slog"):
            log_file.unlink(missing_ok=True)

    def _gateway_state(self, target: Endpoint) -> str:
        import psutil

        if target.pid is not None and not psutil.pid_exists(target.pid):
            note = f"{target.name} (pid {target.pid}) is no longer running"
            if note not in self.notes:
                self.notes.append(note)
            return f" [{note}]"
        return ""


def _first_line(exc: Exception) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    # The startup error of `sluice serve` is usually the last lines of its log.
    return " / ".join(lines[-3:]) if lines else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    # SIGTERM unwinds like Ctrl-C, so every server is stopped and temp dirs removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = dt.datetime.now(dt.UTC)
    stamp = now_stamp()
    machine = report.machine_info()
    machine["host_speed_at_start"] = hostspeed.probe()
    ticks_at_start = report.cpu_ticks()
    samples: list[Sample] = []
    with Lab(keep_logs=out / f"logs-{stamp}") as lab:
        runner = Runner(settings, lab)
        try:
            runner.start()
        except BenchSetupError as exc:
            console.print(f"[bold red]setup failed:[/] {exc}", highlight=False)
            return 2
        versions = lab.versions()
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=POOL_SIZE, mp_context=ctx) as pool:
            list(pool.map(_warm, range(POOL_SIZE)))
            plans = [runner.plan(rep, pool) for rep in range(settings.repeat)]
            total = sum(len(p) for p in plans)
            columns = (
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=console) as progress:
                task = progress.add_task("benchmark", total=total)
                for rep, jobs in enumerate(plans):
                    for job in jobs:
                        progress.update(
                            task,
                            description=f"rep {rep + 1}/{settings.repeat} {job.workload} "
                            f"{job.case} -> {job.target.name}",
                        )
                        samples.append(runner.run_job(job, rep))
                        progress.advance(task)
    finished = dt.datetime.now(dt.UTC)
    machine["steal_percent"] = report.steal_percent(ticks_at_start, report.cpu_ticks())
    machine["host_speed_at_end"] = hostspeed.probe()
    run = {
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "args": {
            "quick": settings.quick,
            "repeat": settings.repeat,
            "seconds": settings.seconds,
            "slices": settings.slices,
            "fetch_seconds": settings.fetch_seconds,
            "stream_rows": settings.stream_rows,
            "approval_rounds": settings.approval_rounds,
            "only": list(settings.only),
        },
        "machine": machine,
        "versions": versions,
        "notes": runner.notes,
        "row_bytes": runner.row_bytes,
        "masking_checks": runner.checks,
    }
    summaries = report.summarize(samples)
    goal_list = report.goal_rows(
        report.goals(stream_rows=settings.stream_rows),
        summaries,
        masking_inactive=runner.masking_inactive,
        samples=samples,
    )
    json_path = out / f"run-{stamp}.json"
    report.write_json(json_path, run, samples, summaries, goal_list)
    md = report.markdown(run, summaries, goal_list)
    (out / "latest.md").write_text(md + "\n")
    series = {
        s.target: s.series for s in samples if s.workload == "stream" and s.series is not None
    }
    pngs = report.plots(out, summaries, series)
    console.print(md, highlight=False, markup=False, soft_wrap=True)
    console.print(f"\nWrote {json_path}, {out / 'latest.md'}, " + ", ".join(p.name for p in pngs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
