"""Precision and recall per detector on the labeled corpus (not a test).

Runs Sluice's detectors and, when `presidio_analyzer` is importable, Presidio's
analyzer on the same samples; prints a markdown table and writes JSON.

- precision: predicted spans of a label that overlap a gold span of that label;
- recall: gold spans overlapped by a prediction of their label;
- covered: gold spans whose every character is inside some prediction of any
  label (what matters for leaks: was the value hidden at all?).
IP labels are also compared as one family `ip` (Presidio has one IP type).

Usage: python -m bench.masking.evaluate --size 3000 --seed 7
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.masking.corpus import LABELS, Sample, generate
from sluice.masking.config import MaskingSpec
from sluice.masking.masker import MaskingEngine

Span = tuple[int, int, str]

PRESIDIO_LABELS = {
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "US_SSN": "ssn",
    "CREDIT_CARD": "credit_card",
    "IBAN_CODE": "iban",
    "IP_ADDRESS": "ip",
}
FAMILY = {"ip_address": "ip", "ip_private": "ip"}
# PII types both tools detect: the fair overall comparison.
COMMON = ("email", "phone", "ssn", "credit_card", "iban", "ip")
RESULTS = Path(__file__).resolve().parent.parent / "results"


def sluice_predictor() -> Callable[[str], list[Span]]:
    spec = MaskingSpec.model_validate({"profiles": [{"name": "all"}]})
    masker = MaskingEngine(spec).masker(["all"])

    def predict(text: str) -> list[Span]:
        raw = text.encode("utf-8")
        # byte offset -> char offset
        index = [0] * (len(raw) + 1)
        pos = 0
        for ci, ch in enumerate(text):
            n = len(ch.encode("utf-8"))
            for k in range(n):
                index[pos + k] = ci
            pos += n
        index[len(raw)] = len(text)
        return [(index[f.start], index[f.end], f.detector) for f in masker.find(raw)]

    return predict


def presidio_predictor(
    threshold: float, model: str
) -> tuple[Callable[[str], list[Span]], str] | None:
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

    def predict(text: str) -> list[Span]:
        out: list[Span] = []
        for r in engine.analyze(text=text, language="en", score_threshold=threshold):
            label = PRESIDIO_LABELS.get(r.entity_type)
            if label is not None:
                out.append((r.start, r.end, label))
        return out

    from importlib.metadata import version

    spacy_version = version("spacy")
    return predict, (
        f"presidio-analyzer {version('presidio-analyzer')}, spaCy {spacy_version}, model {model}, "
        f"score_threshold {threshold}"
    )


def _family(label: str) -> str:
    return FAMILY.get(label, label)


def score(
    samples: Sequence[Sample], predictions: Sequence[list[Span]], *, family: bool
) -> dict[str, Any]:
    norm = _family if family else (lambda x: x)
    gold_n: Counter[str] = Counter()
    recall_hit: Counter[str] = Counter()
    covered: Counter[str] = Counter()
    pred_n: Counter[str] = Counter()
    pred_ok: Counter[str] = Counter()
    lookalike_fp = 0
    for sample, preds in zip(samples, predictions, strict=True):
        gold = [(s, e, norm(lab)) for s, e, lab in sample.spans]
        preds = [(s, e, norm(lab)) for s, e, lab in preds]
        for s, e, lab in gold:
            gold_n[lab] += 1
            if any(ps < e and s < pe and pl == lab for ps, pe, pl in preds):
                recall_hit[lab] += 1
            if all(any(ps <= i < pe for ps, pe, _ in preds) for i in range(s, e)):
                covered[lab] += 1
        for ps, pe, pl in preds:
            pred_n[pl] += 1
            if any(ps < e and s < pe and lab == pl for s, e, lab in gold):
                pred_ok[pl] += 1
        if sample.kind == "lookalike":
            lookalike_fp += len(preds)
    labels = sorted(set(gold_n) | set(pred_n))
    table = {
        lab: {
            "gold": gold_n[lab],
            "predicted": pred_n[lab],
            "precision": pred_ok[lab] / pred_n[lab] if pred_n[lab] else None,
            "recall": recall_hit[lab] / gold_n[lab] if gold_n[lab] else None,
            "covered": covered[lab] / gold_n[lab] if gold_n[lab] else None,
        }
        for lab in labels
    }
    if family:
        common_pred = sum(pred_n[lab] for lab in COMMON)
        common_gold = sum(gold_n[lab] for lab in COMMON)
        table["COMMON"] = {
            "gold": common_gold,
            "predicted": common_pred,
            "precision": sum(pred_ok[lab] for lab in COMMON) / common_pred if common_pred else None,
            "recall": sum(recall_hit[lab] for lab in COMMON) / common_gold if common_gold else None,
            "covered": sum(covered[lab] for lab in COMMON) / common_gold if common_gold else None,
        }
    total_pred = sum(pred_n.values())
    total_gold = sum(gold_n.values())
    table["ALL"] = {
        "gold": total_gold,
        "predicted": total_pred,
        "precision": sum(pred_ok.values()) / total_pred if total_pred else None,
        "recall": sum(recall_hit.values()) / total_gold if total_gold else None,
        "covered": sum(covered.values()) / total_gold if total_gold else None,
    }
    return {"labels": table, "lookalike_false_positives": lookalike_fp}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=3000, help="corpus samples")
    parser.add_argument("--seed", type=int, default=7, help="corpus seed")
    parser.add_argument(
        "--presidio-threshold", type=float, default=0.0, help="Presidio score_threshold"
    )
    parser.add_argument("--spacy-model", default="en_core_web_sm", help="spaCy model for Presidio")
    parser.add_argument(
        "--no-presidio", action="store_true", help="skip Presidio even if installed"
    )
    parser.add_argument(
        "--out", default=str(RESULTS / "masking_eval.json"), help="JSON output path"
    )
    args = parser.parse_args(argv)

    samples = generate(args.size, args.seed)
    tools: dict[str, tuple[Callable[[str], list[Span]], str]] = {
        "sluice": (sluice_predictor(), "sluice")
    }
    if not args.no_presidio:
        presidio = presidio_predictor(args.presidio_threshold, args.spacy_model)
        if presidio is not None:
            tools["presidio"] = presidio
    report: dict[str, Any] = {"size": args.size, "seed": args.seed, "tools": {}}
    for name, (predict, desc) in tools.items():
        t0 = time.perf_counter()
        preds = [predict(s.text) for s in samples]
        elapsed = time.perf_counter() - t0
        report["tools"][name] = {
            "description": desc,
            "seconds": elapsed,
            "exact": score(samples, preds, family=False),
            "family": score(samples, preds, family=True),
        }

    names = list(report["tools"])
    header = "| label | gold | " + " | ".join(f"{n} P | {n} R | {n} covered" for n in names) + " |"
    print(f"Corpus: {args.size} samples, seed {args.seed}. P/R/covered in %.\n")
    print(header)
    print("|" + "---|" * (2 + 3 * len(names)))
    sluice_rows = report["tools"]["sluice"]["exact"]["labels"]
    rows = [lab for lab in LABELS if lab in sluice_rows] + ["ip", "COMMON", "ALL"]
    for lab in rows:
        cells = []
        gold = None
        for n in names:
            use_family = lab in ("ip", "COMMON") or n != "sluice"
            view = report["tools"][n]["family" if use_family else "exact"]["labels"]
            if n == "presidio" and lab in FAMILY:
                view = {}
            m = view.get(lab, {})
            gold = gold if gold is not None else m.get("gold")
            cells += [_pct(m.get("precision")), _pct(m.get("recall")), _pct(m.get("covered"))]
        if gold is None:
            gold = report["tools"]["sluice"]["family"]["labels"].get(lab, {}).get("gold", 0)
        print(f"| {lab} | {gold} | " + " | ".join(cells) + " |")
    print()
    for n in names:
        t = report["tools"][n]
        print(
            f"- {n} ({t['description']}): {t['seconds']:.2f} s, "
            f"{t['exact']['lookalike_false_positives']} predictions on look-alike samples"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
