"""`python -m bench.instructions`: user-space instructions per round trip, in process.

Timings on a shared VM swing by more than most changes to the hot path are
worth (5-10% between runs of `bench.hotpath` a minute apart here). Valgrind's
callgrind counts instructions instead: the same build and inputs give the same
count whatever else the machine does. This runs `bench.hotpath` under
callgrind twice, with a short and a long run, and divides the difference by
the extra round trips, so that start-up (imports, compiling the policy and
the scanners) cancels out. Kernel work (system calls, sockets) is not counted:
compare builds with this, and the whole gateway with `bench.run`.

Both runs use the same string-hash seed (`PYTHONHASHSEED`, 0 unless it is
set): with a random one per process, dict and set probes differ from run to
run, and the count per round trip moved by up to 10% (40-44.5k on one build).
Compare builds under the same seed.

To compare two builds, run it once from each checkout (each with its own
compiled modules), e.g. `PYTHONPATH=/other/src:/other python -m
bench.instructions` for the other one.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from typing import Final

from bench.hotpath import LITERALS, TARGETS

SHORT_RUN: Final = 1000
"""Round trips of the short run; the long run adds `--extra` to it."""

HASH_SEED: Final = "0"
"""The string-hash seed of both runs unless PYTHONHASHSEED is set."""

_COLLECTED: Final = re.compile(r"Collected : (\d+)")


class InstructionsError(RuntimeError):
    pass


def collected(stderr: str) -> int | None:
    """The instruction count in callgrind's summary on stderr, if there is one."""
    found = _COLLECTED.search(stderr)
    return int(found.group(1)) if found else None


def hotpath_env() -> dict[str, str]:
    """The environment of the measured runs: this one, with a fixed hash seed."""
    return {**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", HASH_SEED)}


def _instructions(round_trips: int, hotpath_args: list[str], module: str) -> int:
    """Instructions callgrind counted over a whole run of `module` (`bench.hotpath`)."""
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        module,
        "--n",
        str(round_trips),
        *hotpath_args,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=hotpath_env())
    count = collected(proc.stderr)
    if proc.returncode != 0 or count is None:
        raise InstructionsError(
            f"valgrind exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-800:]}"
        )
    return count


def per_round_trip(hotpath_args: list[str], extra: int, module: str = "bench.hotpath") -> float:
    short = _instructions(SHORT_RUN, hotpath_args, module)
    long = _instructions(SHORT_RUN + extra, hotpath_args, module)
    return (long - short) / extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Needs valgrind (Debian: apt-get install valgrind); about a minute per "
        "target. Example: python -m bench.instructions --target governed --prepared",
    )
    parser.add_argument("--target", choices=TARGETS, default="governed", help="default governed")
    parser.add_argument(
        "--prepared", action="store_true", help="pgbench -M prepared messages instead"
    )
    parser.add_argument(
        "--literals", choices=LITERALS, default="same", help="as bench.hotpath --literals"
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="count bench.tlsping instead: a TLS round trip over loopback on uvloop "
        "(two reads and two writes), which the hot path runs without",
    )
    parser.add_argument(
        "--standard",
        action="store_true",
        help="with --tls: the standard library's ssl.SSLObject instead of the gateway's",
    )
    parser.add_argument(
        "--extra",
        type=int,
        default=2000,
        help="round trips the long run adds to the short one's 1000 (default 2000)",
    )
    args = parser.parse_args(argv)
    if args.extra < 100:
        parser.error("--extra must be at least 100")
    if args.standard and not args.tls:
        parser.error("--standard goes with --tls")
    if shutil.which("valgrind") is None:
        print("valgrind was not found; install it with `apt-get install valgrind`", file=sys.stderr)
        return 2
    if args.tls:
        module, hotpath_args = "bench.tlsping", ["--standard"] if args.standard else []
        label = f"TLS, {'standard' if args.standard else 'gateway'} SSL objects"
    else:
        module = "bench.hotpath"
        hotpath_args = ["--target", args.target, "--literals", args.literals]
        if args.prepared:
            hotpath_args.append("--prepared")
        label = f"{args.target}{' prepared' if args.prepared else ''}"
    try:
        count = per_round_trip(hotpath_args, args.extra, module)
    except InstructionsError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{label}: {count:,.0f} instructions per round trip")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
