"""Masking configuration (the `masking:` section of sluice.yaml).

```yaml
masking:
  hmac_key: env:SLUICE_MASKING_KEY      # reference, resolved by the config loader
  profiles:
    - name: pii
      content: true                     # run detectors on every text-bearing value
      columns:
        - {match: "public.customers.email", strategy: hash}
        - {match: "*ssn*", strategy: partial, keep_last: 4}
        - {match: "billing.*.card_*", strategy: null}
        - {match: "support.tickets.body", strategy: detect}
      detectors:
        - all                           # every built-in, redacted
        - {name: email, strategy: fake}
      custom_detectors:
        - {name: employee_id, regex: "EMP-[0-9]{6}", strategy: hash}
        - {name: codename, words: [bluebird, nightjar]}
      ner: {enabled: false}
```

`match` is a glob over `schema.table.column` (3 parts), `table.column` (2
parts, any schema) or a column name (1 part, any table; also tested against
the result column's own name).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

StrategyName = Literal["redact", "partial", "hash", "fake", "null"]
ColumnStrategyName = Literal["redact", "partial", "hash", "fake", "null", "detect"]
_NAME = r"^[a-z][a-z0-9_]*$"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _WithStrategy(_Spec):
    @field_validator("strategy", mode="before", check_fields=False)
    @classmethod
    def _yaml_null(cls, value: object) -> object:
        # YAML reads a bare `strategy: null` as None: it means the NULL strategy.
        return "null" if value is None else value


class ColumnRuleSpec(_WithStrategy):
    match: str = Field(min_length=1)
    strategy: ColumnStrategyName = "redact"
    keep_last: int = Field(default=4, ge=0, le=64)


class DetectorSpec(_WithStrategy):
    name: str
    strategy: StrategyName = "redact"
    keep_last: int = Field(default=4, ge=0, le=64)


class CustomDetectorSpec(_WithStrategy):
    name: str = Field(pattern=_NAME)
    regex: str | None = None
    words: list[str] | None = None
    validator: str | None = None
    case_sensitive: bool = False
    strategy: StrategyName = "redact"
    keep_last: int = Field(default=4, ge=0, le=64)

    @model_validator(mode="after")
    def _one_kind(self) -> CustomDetectorSpec:
        if (self.regex is None) == (self.words is None):
            raise ValueError(f"custom detector {self.name!r}: give exactly one of regex, words")
        if self.words is not None and self.validator is not None:
            raise ValueError(f"custom detector {self.name!r}: a word list takes no validator")
        return self


class NerSpec(_WithStrategy):
    """Names and addresses via Presidio (optional extra; off by default)."""

    enabled: bool = False
    entities: list[str] = Field(default_factory=lambda: ["PERSON", "LOCATION"])
    score_threshold: float = Field(default=0.6, ge=0.0, le=1.0)
    language: str = "en"
    spacy_model: str = "en_core_web_sm"
    strategy: StrategyName = "redact"


class MaskingProfileSpec(_Spec):
    name: str = Field(min_length=1)
    columns: list[ColumnRuleSpec] = Field(default_factory=list)
    detectors: list[str | DetectorSpec] = Field(
        default_factory=lambda: list[str | DetectorSpec](["all"])
    )
    custom_detectors: list[CustomDetectorSpec] = Field(default_factory=list)
    content: bool = False
    ner: NerSpec = Field(default_factory=NerSpec)


class MaskingSpec(_Spec):
    hmac_key: str | None = None
    profiles: list[MaskingProfileSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> MaskingSpec:
        seen: set[str] = set()
        for p in self.profiles:
            if p.name in seen:
                raise ValueError(f"masking profile {p.name!r} is declared twice")
            seen.add(p.name)
        return self
