"""Compiled rules: conditions and subjects ready to match statements.

Matching mode depends on what a rule grants (fail closed):

- ``block`` and ``mask`` rules match a statement that *touches* anything they
  name: any of its kinds, tables, schemas or functions.
- ``allow`` and ``require_approval`` rules must *cover* the statement: every
  kind, table, schema and function it has must match one of the patterns (and
  it must have at least one). A statement that does more than a permissive
  rule names falls through to later, stricter rules or the default.

`category` always matches the statement's single, most severe category, so
``allow when category: read`` never admits ``SELECT pg_terminate_backend(..)``.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import re2

from sluice.events import Identity
from sluice.policy.config import ConditionSpec, SubjectsSpec
from sluice.policy.sql import Category, StatementInfo

DEFAULT_SCHEMA = "public"
"""Schema assumed for unqualified table names (PostgreSQL's default search_path)."""


class RuleAction(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"
    REQUIRE_APPROVAL = "require_approval"
    MASK = "mask"


@dataclass(frozen=True, slots=True)
class Globs:
    """Shell-style patterns compiled into one regular expression."""

    patterns: tuple[str, ...]
    regex: re.Pattern[str]

    @classmethod
    def of(cls, patterns: Iterable[str]) -> Globs | None:
        cleaned = tuple(p.lower() for p in patterns)
        if not cleaned:
            return None
        return cls(cleaned, re.compile("|".join(fnmatch.translate(p) for p in cleaned)))

    def any(self, values: Iterable[str]) -> bool:
        return any(self.regex.match(v) for v in values)

    def all(self, values: Iterable[str]) -> bool:
        seen = False
        for value in values:
            if not self.regex.match(value):
                return False
            seen = True
        return seen


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    kinds: Globs | None = None
    categories: frozenset[Category] = frozenset()
    tables: Globs | None = None
    schemas: Globs | None = None
    functions: Globs | None = None
    without_where: bool | None = None
    text_regex: Any = None
    """A compiled RE2 pattern (untyped library) or None."""

    @classmethod
    def compile(cls, spec: ConditionSpec) -> Condition:
        tables = [p if "." in p else f"*.{p}" for p in spec.tables]
        return cls(
            kinds=Globs.of(spec.kind),
            categories=frozenset(spec.category),
            tables=Globs.of(tables),
            schemas=Globs.of(spec.schemas),
            functions=Globs.of(spec.functions),
            without_where=spec.without_where,
            text_regex=re2.compile(spec.text_regex) if spec.text_regex is not None else None,
        )

    def matches(self, statement: StatementInfo, *, covering: bool) -> bool:
        if self.categories and statement.category not in self.categories:
            return False
        checks = (
            (self.kinds, lambda: statement.kinds),
            (self.tables, lambda: table_names(statement)),
            (self.schemas, lambda: schema_names(statement)),
            (self.functions, lambda: statement.functions),
        )
        for globs, values in checks:
            if globs is not None and not (globs.all if covering else globs.any)(values()):
                return False
        if self.without_where is not None:
            unrestricted = statement.has_restricting_where is False
            if unrestricted != self.without_where:
                return False
        return self.text_regex is None or self.text_regex.search(statement.text) is not None


def table_names(statement: StatementInfo) -> set[str]:
    return {ref.qualified(DEFAULT_SCHEMA).lower() for ref in statement.tables}


def schema_names(statement: StatementInfo) -> set[str]:
    return {(ref.schema or DEFAULT_SCHEMA).lower() for ref in statement.tables}


@dataclass(frozen=True, slots=True, kw_only=True)
class Subjects:
    users: Globs | None = None
    groups: frozenset[str] = frozenset()

    @classmethod
    def compile(cls, spec: SubjectsSpec) -> Subjects:
        return cls(users=Globs.of(spec.users), groups=frozenset(spec.groups))

    def include(self, identity: Identity) -> bool:
        if self.users is None and not self.groups:
            return True
        if self.users is not None and self.users.any((identity.user.lower(),)):
            return True
        return not self.groups.isdisjoint(identity.groups)


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledRule:
    name: str
    policy: str
    """The policy that declares the rule (a preset, for inherited rules)."""
    action: RuleAction
    condition: Condition
    subjects: Subjects
    approvers: tuple[str, ...] = ()
    timeout: dt.timedelta = dt.timedelta(minutes=10)
    mask_profiles: tuple[str, ...] = ()
    reason: str | None = None

    def matches(self, statement: StatementInfo) -> bool:
        covering = self.action in {RuleAction.ALLOW, RuleAction.REQUIRE_APPROVAL}
        return self.condition.matches(statement, covering=covering)
