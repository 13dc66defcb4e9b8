"""Policy configuration models and YAML loading."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from sluice.policy import Block, PolicyError, PolicySpec, RuleSpec, load_policy_yaml
from sluice.policy.config import ConditionSpec, parse_duration
from sluice.policy.sql import Category

from .conftest import compile_policies, query

EXAMPLE = """
name: agents
extends: ai-agent
approvers: [data-leads]
rules:
  - name: analysts-read-billing
    subjects: {groups: [analysts]}
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
  - name: ddl-needs-leads
    when: {category: ddl}
    action: require_approval
    approvers: [leads]
    timeout: 1h30m
"""


def test_example_policy_loads() -> None:
    spec = load_policy_yaml(EXAMPLE)
    assert spec.extends == "ai-agent"
    assert spec.default is None
    first = spec.rules[0]
    assert first.subjects.groups == ["analysts"]
    assert first.when.category == [Category.READ]
    assert first.when.tables == ["billing.*"]
    assert spec.rules[3].timeout == dt.timedelta(hours=1, minutes=30)
    assert spec.rules[1].timeout == dt.timedelta(minutes=10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", dt.timedelta(minutes=10)),
        ("45s", dt.timedelta(seconds=45)),
        ("1h30m", dt.timedelta(hours=1, minutes=30)),
        ("2d", dt.timedelta(days=2)),
        ("500ms", dt.timedelta(milliseconds=500)),
    ],
)
def test_durations(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "ten minutes", "0m", "5x", "m10", -1])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "doc",
    [
        {"name": "p", "colour": "red"},
        {"name": "p", "default": "maybe"},
        {"name": "p", "rules": [{"name": "r", "action": "allow", "extra": 1}]},
        {"name": "p", "rules": [{"name": "r", "action": "explode"}]},
        {"name": "p", "rules": [{"name": "r", "action": "allow", "when": {"kind": "delet"}}]},
        {"name": "p", "rules": [{"name": "r", "action": "allow", "when": {"category": "x"}}]},
        {"name": "p", "rules": [{"name": "r", "action": "allow", "when": {"text_regex": "("}}]},
        {"name": "p", "rules": [{"name": "r", "action": "allow", "when": {"tables": [" "]}}]},
        {"name": "p", "rules": [{"name": "r", "action": "mask"}]},
        {"name": "p", "rules": [{"name": "r", "action": "allow", "mask_profiles": ["pii"]}]},
        {"name": "p", "rules": [{"name": "r", "action": "block", "approvers": ["dba"]}]},
        {
            "name": "p",
            "rules": [{"name": "r", "action": "allow"}, {"name": "r", "action": "block"}],
        },
        {"name": "bad name!"},
        {"name": "p", "rules": [{"name": "r", "action": "require_approval", "timeout": "soon"}]},
    ],
)
def test_invalid_policies_are_rejected(doc: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PolicySpec.model_validate(doc)


def test_yaml_errors_become_policy_errors() -> None:
    with pytest.raises(PolicyError, match=r"my\.yaml: invalid policy"):
        load_policy_yaml("name: [unclosed", source="my.yaml")
    with pytest.raises(PolicyError, match="invalid policy"):
        load_policy_yaml("name: p\nbogus: 1\n")


def test_single_values_become_lists() -> None:
    rule = RuleSpec.model_validate(
        {"name": "r", "action": "block", "when": {"kind": "delete", "tables": "t"}}
    )
    assert rule.when.kind == ["delete"]
    assert rule.when.tables == ["t"]


def test_kind_globs_are_checked_against_known_kinds() -> None:
    assert ConditionSpec.model_validate({"kind": ["DROP_*"]}).kind == ["drop_*"]


def test_models_are_frozen() -> None:
    spec = PolicySpec.model_validate({"name": "p"})
    with pytest.raises(ValidationError):
        spec.name = "q"  # type: ignore[misc]


def test_text_regex_is_a_last_resort_condition() -> None:
    engine = compile_policies(
        {
            "name": "p",
            "default": "allow",
            "rules": [
                {
                    "name": "no-sleep",
                    "when": {"text_regex": "(?i)pg_sleep\\s*\\("},
                    "action": "block",
                }
            ],
        }
    )
    result = engine.decide(query("select PG_SLEEP (100)"), policy_name="p")
    assert isinstance(result, Block)
    assert result.rule == "no-sleep"
