"""`python -m bench.profile`: where a live gateway's CPU goes under one workload.

Starts a throwaway PostgreSQL (TLS, SCRAM) and one Sluice target configured as
in `bench.run` (pass-through, governed or column masking), drives one
workload at it (10,000-row SELECTs, `pgbench -S`, or `pgbench -S -C`) and
samples the gateway process with Linux `perf` meanwhile. Prints the gateway's
CPU per row, transaction or session (from /proc) and the share of its samples
by shared object (hyperscan, the kernel, libcrypto, the interpreter, the
compiled modules...) and by symbol; keeps `perf.data` and a JSON summary in
`--out`.

Not a benchmark: sampling costs the gateway a few percent, and the figures are
for finding what dominates, not for ratios (`bench.run` measures those).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.run import COLUMN_MASKING, PII_MASKING
from bench.targets import BenchSetupError, Endpoint, Lab, gateway_cpu
from bench.workloads import WorkloadError, large_results, pgbench, setup_data

TARGETS = ("pass", "governed", "colmask")
WORKLOADS = ("large", "pgbench", "churn")
# A `perf report --stdio` line: "    26.06%  _hs_ext.cpython-311...so   [.] symbol".
_REPORT_LINE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(.+?)\s*$")
# perf's own columns after the name, with --sort dso,symbol: "[.] name  -  -".
_SYMBOL_TAIL = re.compile(r"\s+-\s+-\s*$")
# A symbol perf could not name (a stripped library): "lib.so [.] 0x000000000022c724".
_UNNAMED = re.compile(r"^(?P<dso>.*?)\s+\[\.\]\s+0x[0-9a-f]+$")

console = Console(stderr=True)


@dataclass(frozen=True, slots=True)
class Share:
    """One row of a perf report: percent of the samples and what they were in."""

    percent: float
    name: str


def parse_report(text: str) -> list[Share]:
    """The rows of `perf report --stdio --no-children` output, largest first."""
    shares = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = _REPORT_LINE.match(line)
        if match is None:
            continue
        name = " ".join(_SYMBOL_TAIL.sub("", match.group(2)).split())
        shares.append(Share(percent=float(match.group(1)), name=name))
    return sorted(shares, key=lambda s: -s.percent)


def merge_unnamed(shares: list[Share]) -> list[Share]:
    """One row per stripped library instead of one per address in it."""
    merged: dict[str, float] = {}
    for share in shares:
        match = _UNNAMED.match(share.name)
        name = f"{match.group('dso')} (unnamed symbols)" if match else share.name
        merged[name] = merged.get(name, 0.0) + share.percent
    return sorted((Share(percent=p, name=n) for n, p in merged.items()), key=lambda s: -s.percent)


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """What one profiling run measured."""

    target: str
    workload: str
    clients: int
    seconds: float
    metrics: dict[str, float]
    unit: str  # "row", "transaction" or "session"
    gateway_user_us: float  # per unit
    gateway_sys_us: float
    by_dso: list[Share]
    by_symbol: list[Share]
    perf_data: str

    @property
    def rate(self) -> float:
        return _rate(self.metrics)


def _rate(metrics: dict[str, float]) -> float:
    """Rows/s of large results, transactions (or sessions) per second of pgbench."""
    return metrics.get("rows_per_s", metrics.get("tps", 0.0))


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Needs Linux perf (Debian: apt-get install linux-perf) and root or "
        "kernel.perf_event_paranoid <= 1. Example: python -m bench.profile "
        "--target governed --workload large --clients 8",
    )
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default="governed",
        help="pass: no rules, recording off; governed: ai-agent policy, content masking, "
        "recording on; colmask: column masking (default governed)",
    )
    parser.add_argument(
        "--workload",
        choices=WORKLOADS,
        default="large",
        help="large: 10,000-row SELECTs; pgbench: pgbench -S; churn: pgbench -S -C, a new "
        "session per transaction (default large)",
    )
    parser.add_argument(
        "--table",
        choices=("clean", "pii"),
        default="clean",
        help="large results: the customers table without or with PII (default clean)",
    )
    parser.add_argument(
        "--mode",
        choices=("simple", "extended", "prepared"),
        default="simple",
        help="pgbench: the query protocol (default simple)",
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--seconds", type=float, default=8.0, help="sampled seconds (default 8)")
    parser.add_argument("--top", type=int, default=25, help="symbols to list (default 25)")
    parser.add_argument(
        "--call-graph",
        action="store_true",
        help="also record call stacks (perf --call-graph dwarf, 8x larger perf.data): "
        "then `perf report -i OUT/perf.data --no-children -G` shows who called what",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results/profile"),
        help="where perf.data and profile.json go (default bench/results/profile)",
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.top < 1:
        parser.error("--clients, --seconds and --top must be positive")
    return args


def _start_target(lab: Lab, target: str) -> Endpoint:
    if target == "pass":
        endpoint, _ = lab.start_sluice("sluice-pass", recording=False)
    elif target == "governed":
        endpoint, _ = lab.start_sluice("sluice-governed", policy=True, masking=PII_MASKING)
    else:
        endpoint, _ = lab.start_sluice("sluice-colmask", policy=True, masking=COLUMN_MASKING)
    return endpoint


def _report(data: Path, sort: str) -> list[Share]:
    proc = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", sort, "--stdio"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise WorkloadError(f"perf report failed: {proc.stderr.strip()[-500:]}")
    return parse_report(proc.stdout)


def _table(title: str, shares: list[Share], top: int) -> Table:
    table = Table(title=title)
    table.add_column("share", justify="right")
    table.add_column("in")
    for share in shares[:top]:
        table.add_row(f"{share.percent:.1f}%", Text(share.name))  # names hold [brackets]
    return table


def profile(args: argparse.Namespace) -> Profile:
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "perf.data"
    with Lab() as lab, ProcessPoolExecutor(args.clients) as pool:
        console.print("Starting PostgreSQL (TLS, SCRAM) and loading data ...")
        direct = lab.start_postgres()
        row_bytes = setup_data(direct)
        console.print(f"Starting Sluice ({args.target}) ...")
        endpoint = _start_target(lab, args.target)
        assert endpoint.pid is not None
        table = f"customers_{args.table}"

        def drive(seconds: float) -> dict[str, float]:
            if args.workload == "large":
                return large_results(
                    endpoint,
                    pool=pool,
                    table=table,
                    clients=args.clients,
                    seconds=seconds,
                    row_bytes=row_bytes[table],
                )
            return pgbench(
                endpoint,
                clients=args.clients,
                mode=args.mode,
                seconds=seconds,
                connect=args.workload == "churn",
            )

        console.print("Warming up ...")
        drive(2.0)
        stacks = ["--call-graph", "dwarf,16384"] if args.call_graph else []
        perf = subprocess.Popen(
            ["perf", "record", "-F", "999", *stacks, "-p", str(endpoint.pid), "-o", str(data)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.5)
        if perf.poll() is not None:
            err = perf.stderr.read().decode(errors="replace") if perf.stderr else ""
            raise WorkloadError(f"perf record exited {perf.returncode}: {err.strip()[-500:]}")
        console.print(f"Sampling the gateway for {args.seconds:g} s ...")
        user0, sys0 = gateway_cpu(endpoint.pid)
        begin = time.perf_counter()
        metrics = drive(args.seconds)
        elapsed = time.perf_counter() - begin
        user1, sys1 = gateway_cpu(endpoint.pid)
        perf.send_signal(signal.SIGINT)
        perf.wait(60)
    unit = {"large": "row", "pgbench": "transaction", "churn": "session"}[args.workload]
    units = _rate(metrics) * elapsed
    if units <= 0:
        raise WorkloadError(f"the workload completed no {unit} in {elapsed:.1f} s")
    return Profile(
        target=args.target,
        workload=args.workload
        + (f" ({table})" if args.workload == "large" else f" (-M {args.mode})"),
        clients=args.clients,
        seconds=elapsed,
        metrics=metrics,
        unit=unit,
        gateway_user_us=(user1 - user0) / units * 1e6,
        gateway_sys_us=(sys1 - sys0) / units * 1e6,
        by_dso=_report(data, "dso"),
        by_symbol=merge_unnamed(_report(data, "dso,symbol"))[: args.top],
        perf_data=str(data),
    )


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if shutil.which("perf") is None:
        console.print(
            "[bold red]perf was not found.[/] Install it (Debian: apt-get install linux-perf) "
            "and run again."
        )
        return 2
    if os.geteuid() != 0 and _paranoid() > 1:
        console.print(
            "[bold red]perf may not sample another process here.[/] Run as root, or "
            "set kernel.perf_event_paranoid to 1 or less."
        )
        return 2
    try:
        result = profile(args)
    except (BenchSetupError, WorkloadError) as exc:
        console.print(f"[bold red]Profiling failed:[/] {exc}")
        return 1
    (args.out / "profile.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    out = Console()
    out.print(
        f"{result.target}, {result.workload}, {result.clients} client(s): "
        f"{result.rate:,.0f} {result.unit}s/s; gateway CPU per {result.unit}: "
        f"{result.gateway_user_us:.2f} µs user + {result.gateway_sys_us:.2f} µs kernel"
    )
    out.print(_table("Gateway samples by shared object", result.by_dso, 15))
    out.print(_table("Top symbols", result.by_symbol, args.top))
    out.print(f"perf data: {result.perf_data} (perf report -i ... for more)")
    return 0


def _paranoid() -> int:
    try:
        return int(Path("/proc/sys/kernel/perf_event_paranoid").read_text().strip())
    except (OSError, ValueError):
        return 2


if __name__ == "__main__":
    sys.exit(main())
