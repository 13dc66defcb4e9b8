"""Pure policy: SQL classification, rules, and the decision function.

`PolicyEngine.compile(specs)` once, then `engine.decide(event, policy_name=...,
prepared=...)` per query. See `sluice.policy.engine` for the semantics.
"""

from sluice.policy.config import (
    ConditionSpec,
    PolicySpec,
    RuleSpec,
    SubjectsSpec,
    builtin_presets,
    load_policy_yaml,
    parse_duration,
)
from sluice.policy.engine import (
    CompiledPolicy,
    Explanation,
    PolicyEngine,
    RecordedQuery,
    StatementDecision,
)
from sluice.policy.errors import PolicyError
from sluice.policy.prepared import PreparedStatements
from sluice.policy.sql import Category, SqlAnalysis, StatementInfo, TableRef, classify
from sluice.policy.verdict import Allow, Block, MaskPlan, RequireApproval, Verdict

__all__ = [
    "Allow",
    "Block",
    "Category",
    "CompiledPolicy",
    "ConditionSpec",
    "Explanation",
    "MaskPlan",
    "PolicyEngine",
    "PolicyError",
    "PolicySpec",
    "PreparedStatements",
    "RecordedQuery",
    "RequireApproval",
    "RuleSpec",
    "SqlAnalysis",
    "StatementDecision",
    "StatementInfo",
    "SubjectsSpec",
    "TableRef",
    "Verdict",
    "builtin_presets",
    "classify",
    "load_policy_yaml",
    "parse_duration",
]
