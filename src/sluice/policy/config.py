"""Policy configuration models (pydantic v2) and the built-in presets.

A policy in YAML::

    name: agents
    extends: ai-agent          # a preset or another policy; its rules run after ours
    default: block             # optional when extending: inherited
    approvers: [data-leads]    # default approver groups for every inherited
                               # require_approval rule without its own `approvers`
    rules:
      - name: analysts-read-billing
        subjects: {groups: [analysts]}     # empty: everyone
        when: {category: read, tables: ["billing.*"]}
        action: allow
      - name: mask-customers
        when: {tables: [public.customers]}
        action: mask
        mask_profiles: [pii]
      - name: no-unbounded-deletes
        when: {kind: [delete, update], without_where: true}
        action: block
        reason: bulk changes go through a migration

Condition fields (all ANDed; list values ORed; shell-style globs for kind,
tables, schemas, functions): `kind`, `category`, `tables`, `schemas`,
`functions`, `without_where`, `text_regex` (RE2 syntax: linear time on
attacker-controlled text). Block and mask rules match statements that touch
anything they name; allow and require_approval rules must cover everything the
statement does (see `sluice.policy.rules`).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import re
from collections.abc import Mapping
from importlib import resources
from typing import Annotated, Any, Literal

import re2
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from sluice.policy.errors import PolicyError
from sluice.policy.sql import KNOWN_KINDS, Category

DEFAULT_APPROVAL_TIMEOUT = dt.timedelta(minutes=10)

_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_DURATION_UNITS = {
    "ms": "milliseconds",
    "s": "seconds",
    "m": "minutes",
    "h": "hours",
    "d": "days",
    "w": "weeks",
}

PRESET_NAMES = ("read-only", "ai-agent")


def parse_duration(value: object) -> dt.timedelta:
    """``"90s"``, ``"10m"``, ``"1h30m"``, ``"2d"`` (or a timedelta) -> timedelta."""
    if isinstance(value, dt.timedelta):
        duration = value
    elif isinstance(value, str) and value and _DURATION_PART.sub("", value.strip()) == "":
        duration = dt.timedelta()
        for amount, unit in _DURATION_PART.findall(value):
            duration += dt.timedelta(**{_DURATION_UNITS[unit]: int(amount)})
    else:
        raise ValueError(f"expected a duration like '10m' or '1h30m', got {value!r}")
    if duration <= dt.timedelta():
        raise ValueError("duration must be positive")
    return duration


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


StrList = Annotated[list[str], BeforeValidator(_as_list)]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:@-]+$")]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubjectsSpec(_Spec):
    """Who a rule applies to: any listed user (glob) or member of any listed
    group. Both empty: everyone."""

    users: StrList = []
    groups: StrList = []


class ConditionSpec(_Spec):
    """When a rule matches one statement. Empty: every statement."""

    kind: StrList = []
    category: Annotated[list[Category], BeforeValidator(_as_list)] = []
    tables: StrList = []
    """``schema.table`` globs; a pattern without a dot matches the table in
    any schema. Unqualified names in SQL are taken as ``public``."""
    schemas: StrList = []
    functions: StrList = []
    without_where: bool | None = None
    text_regex: str | None = None

    @field_validator("kind")
    @classmethod
    def _known_kinds(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(kind, pattern.lower()) for kind in KNOWN_KINDS):
                raise ValueError(f"kind {pattern!r} matches no statement kind Sluice knows")
        return [p.lower() for p in patterns]

    @field_validator("tables", "schemas", "functions")
    @classmethod
    def _non_empty(cls, patterns: list[str]) -> list[str]:
        if any(not p.strip() for p in patterns):
            raise ValueError("patterns must not be empty")
        return [p.strip().lower() for p in patterns]

    @field_validator("text_regex")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re2.compile(pattern)
            except Exception as exc:
                raise ValueError(f"text_regex {pattern!r} is not valid RE2: {exc}") from exc
        return pattern


Action = Literal["allow", "block", "require_approval", "mask"]


class RuleSpec(_Spec):
    name: Name
    subjects: SubjectsSpec = SubjectsSpec()
    when: ConditionSpec = ConditionSpec()
    action: Action
    approvers: StrList = []
    """Approver groups (require_approval); if empty, the policy's `approvers`."""
    timeout: Duration = DEFAULT_APPROVAL_TIMEOUT
    mask_profiles: StrList = []
    reason: str | None = None

    @model_validator(mode="after")
    def _action_fields(self) -> RuleSpec:
        if self.action == "mask" and not self.mask_profiles:
            raise ValueError(f"rule {self.name!r}: action mask needs mask_profiles")
        if self.action != "mask" and self.mask_profiles:
            raise ValueError(f"rule {self.name!r}: mask_profiles only apply to action mask")
        if self.action != "require_approval" and self.approvers:
            raise ValueError(f"rule {self.name!r}: approvers only apply to require_approval")
        return self


class PolicySpec(_Spec):
    name: Name
    extends: Name | None = None
    default: Literal["allow", "block"] | None = None
    """What a statement no rule matches gets; inherited, else block."""
    approvers: StrList | None = None
    """Default approver groups for require_approval rules of this policy and
    every policy it extends; the most derived policy's value wins."""
    read_only_functions: StrList = []
    """Functions (globs, `name` or `schema.name`) that leave the database as it
    is. A call of any other function that is not a read-only PostgreSQL
    built-in makes its statement procedural. Added up along `extends`."""
    rules: list[RuleSpec] = []

    @field_validator("rules")
    @classmethod
    def _unique_rule_names(cls, rules: list[RuleSpec]) -> list[RuleSpec]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice")
            seen.add(rule.name)
        return rules


def load_policy_yaml(text: str, *, source: str = "<policy>") -> PolicySpec:
    """Parse one policy document; errors name `source`."""
    try:
        data: Any = yaml.safe_load(text)
        return PolicySpec.model_validate(data)
    except (yaml.YAMLError, ValueError) as exc:
        raise PolicyError(f"{source}: invalid policy: {exc}") from exc


@functools.cache
def builtin_presets() -> Mapping[str, PolicySpec]:
    """The presets shipped in ``sluice/policy/presets/*.yaml``, by name."""
    presets: dict[str, PolicySpec] = {}
    folder = resources.files("sluice.policy").joinpath("presets")
    for name in PRESET_NAMES:
        text = folder.joinpath(f"{name}.yaml").read_text(encoding="utf-8")
        spec = load_policy_yaml(text, source=f"preset {name}")
        if spec.name != name:
            raise PolicyError(f"preset file {name}.yaml names itself {spec.name!r}")
        presets[name] = spec
    return presets
