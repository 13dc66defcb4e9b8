"""The masking config: YAML shape, defaults, validation."""

from __future__ import annotations

import pydantic
import pytest
import yaml

from sluice.masking.config import MaskingSpec
from sluice.masking.masker import MaskingEngine

YAML = """
hmac_key: env:SLUICE_MASKING_KEY
profiles:
  - name: pii
    content: true
    columns:
      - {match: "public.customers.email", strategy: hash}
      - {match: "*ssn*", strategy: partial, keep_last: 4}
      - {match: "billing.*.card_*", strategy: null}
      - {match: "support.tickets.body", strategy: detect}
    detectors:
      - all
      - {name: email, strategy: fake}
    custom_detectors:
      - {name: employee_id, regex: "EMP-[0-9]{6}", strategy: hash}
      - {name: codename, words: [bluebird, nightjar]}
  - name: secrets_only
    detectors: [aws_access_key, aws_secret_key, private_key, password]
"""


def test_yaml_example_parses_and_compiles() -> None:
    spec = MaskingSpec.model_validate(yaml.safe_load(YAML))
    assert spec.hmac_key == "env:SLUICE_MASKING_KEY"
    assert spec.profiles[0].columns[2].strategy == "null"  # YAML null is the NULL strategy
    engine = MaskingEngine(spec, hmac_key=b"k" * 32)
    engine.validate()
    assert engine.masker(["pii"]).content


def test_defaults() -> None:
    spec = MaskingSpec.model_validate({"profiles": [{"name": "p"}]})
    p = spec.profiles[0]
    assert p.detectors == ["all"]
    assert not p.content
    assert not p.ner.enabled
    assert p.columns == []


@pytest.mark.parametrize(
    "bad",
    [
        {"profiles": [{"name": "a"}, {"name": "a"}]},
        {"profiles": [{"name": "a", "columns": [{"match": "x", "strategy": "shred"}]}]},
        {"profiles": [{"name": "a", "custom_detectors": [{"name": "c"}]}]},
        {
            "profiles": [
                {"name": "a", "custom_detectors": [{"name": "c", "regex": "x", "words": ["y"]}]}
            ]
        },
        {"profiles": [{"name": "a", "custom_detectors": [{"name": "Bad Name", "regex": "x"}]}]},
        {"profiles": [{"name": "a", "unknown_key": 1}]},
        {"profiles": [{"name": "a", "columns": [{"match": "x", "keep_last": -1}]}]},
    ],
)
def test_invalid(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        MaskingSpec.model_validate(bad)
