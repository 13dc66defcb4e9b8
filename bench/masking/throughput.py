"""Masking throughput on one core: PII-dense vs PII-free rows (not a test).

Measures `RowMasker.mask_rows` (content detectors on every column, batches of
DataRow values, the proxy's hot path) in MB/s of value bytes, and, when
installed, Presidio's analyzer on the same values (one call per value, on a
subset: it is orders of magnitude slower).

Data sets: `dense` (every value but the id is PII: ~7 items per ~176 B row),
`mixed` (CRM rows: ~2.5 items per ~330 B row), `clean` (orders, no PII).
Goals (one core): >= 10 MB/s PII-dense, >= 200 MB/s PII-free.

Usage: python -m bench.masking.throughput --rows 20000 --batch 500 --cpu 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faker import Faker

from bench.masking.corpus import Generator
from sluice.masking import pgtypes
from sluice.masking.config import MaskingSpec
from sluice.masking.masker import MaskingEngine
from sluice.masking.model import ColumnLineage, ResultColumn
from sluice.proxy.runner import tune_gc

RESULTS = Path(__file__).resolve().parent.parent / "results"
Rows = list[list[bytes | None]]


def clean_rows(n: int, seed: int) -> Rows:
    """Orders-like rows with no PII: ids, timestamps, SKUs, prices, prose."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    words = [fake.catch_phrase() for _ in range(500)]
    texts = [fake.text(max_nb_chars=rng.randrange(60, 240)).replace("\n", " ") for _ in range(500)]
    stamps = [fake.date_time().isoformat(sep=" ") + "+00" for _ in range(500)]
    rows: Rows = []
    for i in range(n):
        rows.append(
            [
                str(i + 1).encode(),
                rng.choice(stamps).encode(),
                rng.choice([b"pending", b"shipped", b"delivered", b"returned"]),
                f"SKU-{rng.randrange(10**6):06d}".encode(),
                rng.choice(words).encode(),
                f"{rng.randrange(1, 10**5) / 100:.2f}".encode(),
                str(rng.randrange(1, 50)).encode(),
                rng.choice(texts).encode(),
                str(fake.uuid4()).encode(),
            ]
        )
    return rows


def dense_rows(n: int, seed: int) -> Rows:
    """Customers-like rows where most columns are PII, plus notes quoting PII."""
    gen = Generator(seed)
    fake = gen.fake
    rows: Rows = []
    for i in range(n):
        rows.append(
            [
                str(i + 1).encode(),
                fake.name().encode(),
                gen.email().encode(),
                gen.phone().encode(),
                gen.ssn().encode(),
                gen.credit_card().encode(),
                gen.ip_address().encode(),
                f"Called from {gen.phone()}, asked to send the invoice to {gen.email()}.".encode(),
            ]
        )
    return rows


def mixed_rows(n: int, seed: int) -> Rows:
    """A CRM-like table: some PII columns, timestamps, and prose notes that
    sometimes quote an email or phone (about 2.5 PII items per ~330 B row)."""
    gen = Generator(seed)
    fake, rng = gen.fake, gen.rng
    texts = [fake.text(max_nb_chars=rng.randrange(80, 260)).replace("\n", " ") for _ in range(500)]
    rows: Rows = []
    for i in range(n):
        note = rng.choice(texts)
        r = rng.random()
        if r < 0.2:
            note = f"{note} Reach me at {gen.email()}."
        elif r < 0.35:
            note = f"{note} Cell {gen.phone()}."
        rows.append(
            [
                str(i + 1).encode(),
                fake.name().encode(),
                fake.street_address().encode(),
                fake.city().encode(),
                gen.email().encode(),
                gen.phone().encode(),
                (fake.date_time().isoformat(sep=" ") + "+00").encode(),
                note.encode(),
            ]
        )
    return rows


COLUMN_TYPES = {
    "mixed": [pgtypes.INT4] + [pgtypes.TEXT] * 5 + [pgtypes.TIMESTAMPTZ, pgtypes.TEXT],
    "clean": [pgtypes.INT4, pgtypes.TIMESTAMPTZ] + [pgtypes.TEXT] * 7,
    "dense": [pgtypes.INT4] + [pgtypes.TEXT] * 7,
}


def value_bytes(rows: Rows) -> int:
    return sum(len(v) for row in rows for v in row if v is not None)


def best_of(fn: Callable[[], Any], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bench_sluice(rows: Rows, oids: list[int], batch: int, repeat: int) -> dict[str, Any]:
    spec = MaskingSpec.model_validate({"profiles": [{"name": "all", "content": True}]})
    masker = MaskingEngine(spec).masker(["all"])
    cols = [
        ResultColumn(name=f"c{i}", type_oid=o, lineage=ColumnLineage()) for i, o in enumerate(oids)
    ]
    plan = masker.prepare(cols)
    assert plan is not None
    batches = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    masked = [0]

    def run() -> None:
        n = 0
        for b in batches:
            _, stats = plan.mask_rows(b)
            n += stats.values
        masked[0] = n

    times = best_of(run, repeat)
    size = value_bytes(rows)
    return {
        "backend": masker.scanner.backend,
        "bytes": size,
        "values_masked": masked[0],
        "mb_per_s_best": size / min(times) / 1e6,
        "mb_per_s_median": size / statistics.median(times) / 1e6,
    }


def bench_presidio(rows: Rows, model: str, limit: int) -> dict[str, Any] | None:
    try:
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError:
        return None
    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": model}],
        }
    )
    engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    sample = rows[:limit]
    values = [v.decode() for row in sample for v in row if v]
    engine.analyze(text="warm up a@b.com", language="en")
    t0 = time.perf_counter()
    for v in values:
        engine.analyze(text=v, language="en")
    elapsed = time.perf_counter() - t0
    size = value_bytes(sample)
    return {"rows": len(sample), "bytes": size, "mb_per_s": size / elapsed / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20000, help="rows per data set")
    parser.add_argument("--batch", type=int, default=500, help="rows per mask_rows call")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions (best and median)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (one core)")
    parser.add_argument("--presidio-rows", type=int, default=300, help="rows Presidio analyzes")
    parser.add_argument("--spacy-model", default="en_core_web_sm")
    parser.add_argument("--no-presidio", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "masking_throughput.json"))
    args = parser.parse_args(argv)
    tune_gc()  # as `sluice serve` runs
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    data = {
        "dense": dense_rows(args.rows, args.seed),
        "mixed": mixed_rows(args.rows, args.seed),
        "clean": clean_rows(args.rows, args.seed),
    }
    report: dict[str, Any] = {"rows": args.rows, "batch": args.batch, "cpu": args.cpu, "sets": {}}
    for name, rows in data.items():
        entry: dict[str, Any] = {
            "sluice": bench_sluice(rows, COLUMN_TYPES[name], args.batch, args.repeat)
        }
        if not args.no_presidio:
            presidio = bench_presidio(rows, args.spacy_model, args.presidio_rows)
            if presidio is not None:
                entry["presidio"] = presidio
        report["sets"][name] = entry

    print("| data | bytes | Sluice MB/s (best) | Sluice MB/s (median) | values masked ", end="")
    print("| Presidio MB/s |")
    print("|---|---|---|---|---|---|")
    for name, entry in report["sets"].items():
        s = entry["sluice"]
        p = entry.get("presidio")
        presidio_cell = "-" if p is None else f"{p['mb_per_s']:.3f}"
        print(
            f"| {name} | {s['bytes']} | {s['mb_per_s_best']:.1f} | {s['mb_per_s_median']:.1f} | "
            f"{s['values_masked']} | {presidio_cell} |"
        )
    print(f"\nscanner backend: {report['sets']['dense']['sluice']['backend']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
