"""Optional named-entity detection (names, addresses) through Presidio.

Off by default and never required: Presidio is imported only when a profile
enables `ner`, and a clear error says how to install it if it is missing.
NER is slow (a spaCy pipeline per value); enable it only where needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sluice.masking.config import NerSpec
from sluice.masking.errors import MaskingConfigError
from sluice.masking.hits import Finding

INSTALL_HINT = (
    "pip install 'sluice[ner]' (presidio-analyzer and a spaCy English model such as en-core-web-sm)"
)


def _build_analyzer(language: str, spacy_model: str) -> Any:
    try:
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError as exc:
        raise MaskingConfigError(
            f"masking profile enables ner, but Presidio is not installed: {INSTALL_HINT}"
        ) from exc
    try:
        provider = NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": language, "model_name": spacy_model}],
            }
        )
        return AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=[language])
    except (OSError, ValueError) as exc:
        raise MaskingConfigError(
            f"masking ner: spaCy model {spacy_model!r} could not be loaded ({exc}); {INSTALL_HINT}"
        ) from exc


class NerAnalyzer:
    """Finds entity spans in UTF-8 values; labels are lower-case entity names."""

    def __init__(self, analyzer: Any, *, entities: Sequence[str], threshold: float, language: str):
        self._analyzer = analyzer
        self._entities = list(entities)
        self._threshold = threshold
        self._language = language
        self.labels = tuple(e.lower() for e in entities)

    @classmethod
    def from_specs(cls, specs: Sequence[NerSpec]) -> NerAnalyzer:
        first = specs[0]
        entities = sorted({e for s in specs for e in s.entities})
        threshold = min(s.score_threshold for s in specs)
        analyzer = _build_analyzer(first.language, first.spacy_model)
        return cls(analyzer, entities=entities, threshold=threshold, language=first.language)

    def find(self, value: bytes) -> list[Finding]:
        text = value.decode("utf-8", "replace")
        results = self._analyzer.analyze(
            text=text,
            entities=self._entities,
            language=self._language,
            score_threshold=self._threshold,
        )
        if not results:
            return []
        # Presidio gives character offsets; map them to byte offsets.
        offsets = [0]
        for ch in text:
            offsets.append(offsets[-1] + len(ch.encode("utf-8", "surrogatepass")))
        found = [
            Finding(offsets[r.start], offsets[r.end], str(r.entity_type).lower()) for r in results
        ]
        found.sort()
        merged: list[Finding] = []
        for f in found:
            if merged and f.start < merged[-1].end:
                last = merged[-1]
                merged[-1] = Finding(last.start, max(last.end, f.end), last.detector)
            else:
                merged.append(f)
        return merged
