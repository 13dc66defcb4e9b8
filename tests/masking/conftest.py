from __future__ import annotations

import pytest

from sluice.masking.config import MaskingSpec
from sluice.masking.masker import Masker, MaskingEngine

KEY = b"k" * 32


def engine(profiles: list[dict[str, object]]) -> MaskingEngine:
    return MaskingEngine(MaskingSpec.model_validate({"profiles": profiles}), hmac_key=KEY)


@pytest.fixture
def content_masker() -> Masker:
    """All built-in detectors, redacting, on every text-bearing value."""
    return engine([{"name": "p", "content": True}]).masker(["p"])
