"""Results: medians and ratios, the goals with PASS/MISS, JSON, Markdown and plots."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import hostspeed
from bench.workloads import Sample

# Column order of every table and plot.
TARGET_ORDER = (
    "direct",
    "pgbouncer",
    "uvloop-pipe",
    "sluice-pass",
    "sluice-governed",
    "sluice-colmask",
    "sluice-pass-w2",
    "sluice-pooled",
)
# The metric each workload is judged by, and its unit in tables.
MAIN_METRIC = {
    "pgbench-S": ("tps", "TPS"),
    "large-results": ("rows_per_s", "rows/s"),
    "churn": ("tps", "sessions/s"),
    "stream": ("rows_per_s", "rows/s"),
    "approval": ("p99_ms", "ms (p99)"),
    "workers": ("tps", "TPS"),
    "idle": ("kb_per_session", "KiB per session"),
}
WORKLOAD_TITLES = {
    "pgbench-S": "pgbench -S (select-only), TPS",
    "large-results": "Large results: 10,000-row SELECTs, rows/s (MB/s)",
    "churn": "Connection churn: pgbench -C -S, sessions/s",
    "stream": "Big stream through the gateway: rows/s, peak gateway RSS",
    "approval": "Approval round-trip: decision committed -> first row at the client",
    "workers": "sluice-pass --workers 1 vs 2: pgbench -S -c 8 -M simple, TPS",
    "idle": "Idle sessions held open: the gateway's memory and descriptors per session",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    workload: str
    case: str
    target: str
    medians: dict[str, float]
    n: int
    errors: list[str]
    ratio_direct: float | None = None
    ratio_pgbouncer: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Goal:
    text: str
    workload: str
    case: str
    target: str
    metric: str
    reference: str | None  # a target name, or None for an absolute bound
    bound: float
    at_least: bool  # value >= bound, else value < bound


def goals(*, stream_rows: int) -> list[Goal]:
    """The product issue's goals; ratios are taken within the same run."""
    out: list[Goal] = []
    for mode in ("simple", "prepared"):
        out.append(
            Goal(
                text=f"governed, pgbench -S -c 8 -M {mode} >= 0.6x pgbouncer",
                workload="pgbench-S",
                case=f"c8-{mode}",
                target="sluice-governed",
                metric="tps",
                reference="pgbouncer",
                bound=0.6,
                at_least=True,
            )
        )
    for mode in ("simple", "prepared"):
        out.append(
            Goal(
                text=f"pass-through, pgbench -S -c 8 -M {mode} >= 0.75x pgbouncer",
                workload="pgbench-S",
                case=f"c8-{mode}",
                target="sluice-pass",
                metric="tps",
                reference="pgbouncer",
                bound=0.75,
                at_least=True,
            )
        )
    for clients in (1, 8):
        out.append(
            Goal(
                text=f"large results, content masking, no hits, {clients} client(s) >= 0.6x direct",
                workload="large-results",
                case=f"clean-c{clients}",
                target="sluice-governed",
                metric="rows_per_s",
                reference="direct",
                bound=0.6,
                at_least=True,
            )
        )
    for clients in (1, 8):
        out.append(
            Goal(
                text=f"large results, column masking on every row, {clients} client(s) "
                ">= 0.4x direct",
                workload="large-results",
                case=f"pii-c{clients}",
                target="sluice-colmask",
                metric="rows_per_s",
                reference="direct",
                bound=0.4,
                at_least=True,
            )
        )
    out.append(
        Goal(
            text="connection churn, governed >= 0.8x direct",
            workload="churn",
            case="c8",
            target="sluice-governed",
            metric="tps",
            reference="direct",
            bound=0.8,
            at_least=True,
        )
    )
    out.append(
        Goal(
            text="connection churn, governed with backend pooling >= 1.0x pgbouncer",
            workload="churn",
            case="c8",
            target="sluice-pooled",
            metric="tps",
            reference="pgbouncer",
            bound=1.0,
            at_least=True,
        )
    )
    label = f"{stream_rows / 1e6:g}M"
    for target in ("sluice-pass", "sluice-governed"):
        out.append(
            Goal(
                text=f"{label}-row stream, {target} peak RSS < 150 MB",
                workload="stream",
                case=f"{label}-rows",
                target=target,
                metric="peak_rss_mb",
                reference=None,
                bound=150.0,
                at_least=False,
            )
        )
    out.append(
        Goal(
            text="approval round-trip p99 < 50 ms",
            workload="approval",
            case="update",
            target="sluice-governed",
            metric="p99_ms",
            reference=None,
            bound=50.0,
            at_least=False,
        )
    )
    return out


def summarize(samples: list[Sample]) -> list[Summary]:
    groups: dict[tuple[str, str, str], list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[(sample.workload, sample.case, sample.target)].append(sample)
    medians: dict[tuple[str, str, str], dict[str, float]] = {}
    for key, items in groups.items():
        by_metric: dict[str, list[float]] = defaultdict(list)
        for item in items:
            if item.error is None:
                for name, value in item.metrics.items():
                    by_metric[name].append(value)
        medians[key] = {name: statistics.median(vals) for name, vals in by_metric.items()}
    out = []
    for (workload, case, target), items in groups.items():
        metric = MAIN_METRIC.get(workload, ("tps", ""))[0]
        mine = medians[(workload, case, target)]
        out.append(
            Summary(
                workload=workload,
                case=case,
                target=target,
                medians=mine,
                n=sum(1 for i in items if i.error is None),
                errors=[i.error for i in items if i.error is not None],
                ratio_direct=None
                if target == "direct"
                else _ratio_of(
                    mine.get(metric), medians.get((workload, case, "direct"), {}).get(metric)
                ),
                ratio_pgbouncer=None
                if target == "pgbouncer"
                else _ratio_of(
                    mine.get(metric), medians.get((workload, case, "pgbouncer"), {}).get(metric)
                ),
            )
        )
    return out


def _ratio_of(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return value / base


def judge(goal: Goal, summaries: list[Summary]) -> tuple[str, float | None]:
    """PASS, MISS or N/A (no data), and the measured ratio or value."""
    index = {(s.workload, s.case, s.target): s for s in summaries}
    mine = index.get((goal.workload, goal.case, goal.target))
    value = mine.medians.get(goal.metric) if mine else None
    if value is None:
        return "N/A", None
    if goal.reference is not None:
        ref = index.get((goal.workload, goal.case, goal.reference))
        base = ref.medians.get(goal.metric) if ref else None
        if not base:
            return "N/A", None
        value = value / base
    ok = value >= goal.bound if goal.at_least else value < goal.bound
    return ("PASS" if ok else "MISS"), value


def machine_info() -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs so far, from /proc/stat; None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu" or len(fields) < 9:
        return None
    values = [int(x) for x in fields[1:9]]  # user .. steal (guest time is inside user)
    return values[7], sum(values)


def steal_percent(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """Share of CPU time the hypervisor gave to others between two readings."""
    if start is None or end is None or end[1] <= start[1]:
        return None
    return round(100 * (end[0] - start[0]) / (end[1] - start[1]), 1)


def write_json(
    path: Path,
    run: dict[str, Any],
    samples: list[Sample],
    summaries: list[Summary],
    goal_rows: list[dict[str, Any]],
) -> None:
    payload = {
        **run,
        "samples": [asdict(s) for s in samples],
        "summary": [asdict(s) for s in summaries],
        "goals": goal_rows,
    }
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def paired_ratios(goal: Goal, samples: list[Sample]) -> list[float]:
    """A ratio goal's ratio in each repetition (each slice of one, with
    `bench.run --slices`): the target against its reference measured in
    the same one, minutes or seconds apart, so a slow spell of the host
    that spans both cancels out. Empty for absolute goals."""
    if goal.reference is None:
        return []
    by_rep: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)
    for sample in samples:
        if (
            sample.error is None
            and sample.workload == goal.workload
            and sample.case == goal.case
            and sample.target in (goal.target, goal.reference)
            and goal.metric in sample.metrics
        ):
            by_rep[(sample.rep, sample.slice)][sample.target] = sample.metrics[goal.metric]
    ratios = []
    for rep in sorted(by_rep):
        mine, base = by_rep[rep].get(goal.target), by_rep[rep].get(goal.reference)
        if mine is not None and base:
            ratios.append(mine / base)
    return ratios


def goal_rows(
    goal_list: list[Goal],
    summaries: list[Summary],
    *,
    masking_inactive: set[str],
    samples: list[Sample] | None = None,
) -> list[dict[str, Any]]:
    """Each goal judged (on the medians), with its ratio per repetition when
    `samples` are given; goals about masking on a target that masked
    nothing get a caveat."""
    rows = []
    for goal in goal_list:
        status, value = judge(goal, summaries)
        caveat = None
        if goal.workload == "large-results" and goal.target in masking_inactive:
            caveat = "masking not applied by the gateway"
        per_rep = paired_ratios(goal, samples) if samples is not None else []
        rows.append(
            {
                **asdict(goal),
                "status": status,
                "value": value,
                "caveat": caveat,
                "per_repetition": per_rep,
            }
        )
    return rows


def _fmt(value: float | None, metric: str = "") -> str:
    if value is None or math.isnan(value):
        return "-"
    if metric.endswith("_ms") or metric.endswith("_mb"):
        return f"{value:,.1f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(run: dict[str, Any], summaries: list[Summary], goal_list: list[dict[str, Any]]) -> str:
    m = run["machine"]
    v = run["versions"]
    lines = [
        f"# Sluice benchmark — {run['started']}",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB RAM, "
        f"Python {m['python']}, load at start {m['load_avg_at_start']}"
        + (
            f", CPU steal during the run {m['steal_percent']}% (time the hypervisor "
            "gave to other guests: ratios swing with it)"
            if m.get("steal_percent") is not None
            else ""
        )
        + ".  ",
        *(
            [hostspeed.describe(m["host_speed_at_start"], m.get("host_speed_at_end")) + ".  "]
            if m.get("host_speed_at_start")
            else []
        ),
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".  ",
        f"Mode: {'quick' if run['args']['quick'] else 'full'}, {run['args']['repeat']} "
        f"repetition(s), {run['args']['seconds']} s per pgbench measurement"
        + (f" in {run['args']['slices']} slices" if run["args"].get("slices", 1) > 1 else "")
        + "; values are medians; "
        "targets run round-robin within each repetition.",
        "",
    ]
    if run.get("notes"):
        lines += ["**Notes**", ""] + [f"- {n}" for n in run["notes"]] + [""]
    lines += [
        "## Goals",
        "",
        "Ratios of the medians; with several repetitions (or slices), the ratio "
        "within each one (target and reference measured minutes or seconds apart) "
        "follows: their median and range.",
        "",
        "| goal | measured | status |",
        "|---|---|---|",
    ]
    for g in goal_list:
        value = g["value"]
        shown = "-" if value is None else (f"{value:.2f}x" if g["reference"] else f"{value:.1f}")
        per_rep = g.get("per_repetition") or []
        if len(per_rep) > 1:
            shown += (
                f" (paired {statistics.median(per_rep):.2f}x, "
                f"{min(per_rep):.2f}x-{max(per_rep):.2f}x over {len(per_rep)})"
            )
        status = f"**{g['status']}**" + (f" ({g['caveat']})" if g.get("caveat") else "")
        lines.append(f"| {g['text']} | {shown} | {status} |")
    lines.append("")
    by_workload: dict[str, list[Summary]] = defaultdict(list)
    for s in summaries:
        by_workload[s.workload].append(s)
    for workload in MAIN_METRIC:
        items = by_workload.get(workload)
        if not items:
            continue
        metric, unit = MAIN_METRIC[workload]
        targets = [t for t in TARGET_ORDER if any(s.target == t for s in items)]
        cases = list(dict.fromkeys(s.case for s in items))
        index = {(s.case, s.target): s for s in items}
        lines += [f"## {WORKLOAD_TITLES[workload]}", ""]
        if workload in ("pgbench-S", "large-results", "churn", "workers"):
            lines.append(
                f"Cells: median {unit} (ratio to direct / ratio to pgbouncer)."
                if workload != "workers"
                else f"Cells: median {unit}; the same pass-through config with 1 and 2 workers."
            )
            lines.append("")
            lines.append("| case | " + " | ".join(targets) + " |")
            lines.append("|---" * (len(targets) + 1) + "|")
            for case in cases:
                cells = []
                for target in targets:
                    found = index.get((case, target))
                    if found is None:
                        cells.append("")
                        continue
                    cell = _fmt(found.medians.get(metric), metric)
                    if workload == "large-results" and "mb_per_s" in found.medians:
                        cell += f" ({found.medians['mb_per_s']:.1f} MB/s)"
                    if found.ratio_direct is not None or found.ratio_pgbouncer is not None:
                        cell += f" ({_ratio(found.ratio_direct)} / {_ratio(found.ratio_pgbouncer)})"
                    if found.errors:
                        cell += f" ⚠ {len(found.errors)} error(s)"
                    cells.append(cell)
                lines.append(f"| {case} | " + " | ".join(cells) + " |")
        else:
            names = list(dict.fromkeys(k for s in items for k in s.medians))
            lines.append("| case | target | " + " | ".join(names) + " |")
            lines.append("|---" * (len(names) + 2) + "|")
            for s in items:
                cells = [_fmt(s.medians.get(n), n) for n in names]
                err = f" ⚠ {len(s.errors)} error(s)" if s.errors else ""
                lines.append(f"| {s.case} | {s.target}{err} | " + " | ".join(cells) + " |")
        if workload == "pgbench-S":
            lines += _cpu_table(items, targets, cases)
        errors = [(s.case, s.target, e) for s in items for e in s.errors]
        if errors:
            lines += ["", "Errors:", ""]
            lines += [f"- {c} / {t}: `{e[:300]}`" for c, t, e in errors]
        lines.append("")
    return "\n".join(lines)


def _cpu_table(items: list[Summary], targets: list[str], cases: list[str]) -> list[str]:
    """The gateway's CPU per transaction: what each target costs, whatever the load."""
    index = {(s.case, s.target): s for s in items}
    measured = [
        t for t in targets if any("gateway_cpu_us" in s.medians for s in items if s.target == t)
    ]
    if not measured:
        return []
    lines = [
        "",
        "Gateway CPU per transaction, µs: user + kernel (median), all of the gateway's "
        "processes, from /proc; PostgreSQL's and pgbench's own CPU is not in it.",
        "",
        "| case | " + " | ".join(measured) + " |",
        "|---" * (len(measured) + 1) + "|",
    ]
    for case in cases:
        cells = []
        for target in measured:
            found = index.get((case, target))
            medians = found.medians if found is not None else {}
            if "gateway_cpu_us" not in medians:
                cells.append("")
                continue
            cells.append(
                f"{medians['gateway_cpu_us']:.0f} ({medians['gateway_user_us']:.0f} + "
                f"{medians['gateway_sys_us']:.0f})"
            )
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return lines


def plots(
    out: Path, summaries: list[Summary], series: dict[str, list[tuple[float, float]]]
) -> list[Path]:
    """Bar charts per workload and RSS over time for the big stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    for workload, filename in (
        ("pgbench-S", "pgbench_tps.png"),
        ("churn", "churn_sessions.png"),
        ("large-results", "large_results_rows.png"),
        ("workers", "workers_tps.png"),
    ):
        items = [s for s in summaries if s.workload == workload]
        if not items:
            continue
        metric, unit = MAIN_METRIC[workload]
        targets = [t for t in TARGET_ORDER if any(s.target == t for s in items)]
        cases = list(dict.fromkeys(s.case for s in items))
        index = {(s.case, s.target): s.medians.get(metric, 0.0) for s in items}
        fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(cases) + 2), 4.5))
        width = 0.8 / len(targets)
        for i, target in enumerate(targets):
            xs = [c + (i - (len(targets) - 1) / 2) * width for c in range(len(cases))]
            ax.bar(xs, [index.get((case, target), 0.0) for case in cases], width, label=target)
        ax.set_xticks(range(len(cases)), cases)
        ax.set_ylabel(unit)
        ax.set_title(WORKLOAD_TITLES[workload])
        ax.legend(fontsize="small")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = out / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if series:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for target, points in series.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], label=target)
        ax.axhline(150, color="red", linestyle="--", linewidth=1, label="goal: 150 MB")
        ax.set_xlabel("seconds")
        ax.set_ylabel("gateway RSS (MB)")
        ax.set_title("Gateway RSS while streaming the big result")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / "stream_rss.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
