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

Unqualified table names are taken to be in ``public`` until the session
changes its search_path. After that their schema is unknown, and `match`
says MAYBE where a table or schema pattern matches under some schema but
not under every one; the engine then judges the statement by the strictest
rule it may fall under (see `sluice.policy.engine`).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

import re2

from sluice.events import Identity
from sluice.policy.config import ConditionSpec, SubjectsSpec
from sluice.policy.sql import Category, StatementInfo, TableRef

DEFAULT_SCHEMA = "public"
"""Schema assumed for unqualified table names (PostgreSQL's default search_path)."""


class RuleAction(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"
    REQUIRE_APPROVAL = "require_approval"
    MASK = "mask"


class Match(IntEnum):
    """Whether a rule applies to a statement, when a table's schema may be unknown."""

    NO = 0
    MAYBE = 1
    YES = 2


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
    tables_in_any_schema: Globs | None = None
    """The table part of the table patterns whose schema part is `*`."""
    tables_in_some_schema: Globs | None = None
    """The table part of every table pattern."""

    @classmethod
    def compile(cls, spec: ConditionSpec) -> Condition:
        tables = [p if "." in p else f"*.{p}" for p in spec.tables]
        split = [p.split(".", 1) for p in tables]
        return cls(
            kinds=Globs.of(spec.kind),
            categories=frozenset(spec.category),
            tables=Globs.of(tables),
            schemas=Globs.of(spec.schemas),
            functions=Globs.of(spec.functions),
            without_where=spec.without_where,
            text_regex=re2.compile(spec.text_regex) if spec.text_regex is not None else None,
            tables_in_any_schema=Globs.of(table for schema, table in split if schema == "*"),
            tables_in_some_schema=Globs.of(table for _, table in split),
        )

    def match(self, statement: StatementInfo, *, covering: bool, ambiguous: bool) -> Match:
        """`matches`, three-valued: with `ambiguous` (the session changed its
        search_path) an unqualified table may be in any schema."""
        refs = statement.tables
        if (
            not ambiguous
            or (self.tables is None and self.schemas is None)
            or all(ref.schema is not None for ref in refs)
        ):
            return Match.YES if self.matches(statement, covering=covering) else Match.NO
        if not self._matches_besides_tables(statement, covering=covering):
            return Match.NO
        result = Match.YES
        if self.tables is not None:
            result = min(result, _combined([self._table(ref) for ref in refs], covering))
        if self.schemas is not None:
            result = min(result, _combined([self._schema(ref) for ref in refs], covering))
        return result

    def _table(self, ref: TableRef) -> Match:
        assert self.tables is not None
        if ref.schema is not None:
            return Match.YES if self.tables.regex.match(ref.qualified().lower()) else Match.NO
        name = ref.name.lower()
        if self.tables_in_any_schema is not None and self.tables_in_any_schema.regex.match(name):
            return Match.YES
        some = self.tables_in_some_schema
        return Match.MAYBE if some is not None and some.regex.match(name) else Match.NO

    def _schema(self, ref: TableRef) -> Match:
        assert self.schemas is not None
        if ref.schema is not None:
            return Match.YES if self.schemas.regex.match(ref.schema.lower()) else Match.NO
        return Match.YES if "*" in self.schemas.patterns else Match.MAYBE

    def matches(self, statement: StatementInfo, *, covering: bool) -> bool:
        if not self._matches_besides_tables(statement, covering=covering):
            return False
        tables, schemas = self.tables, self.schemas
        if tables is not None and not (tables.all if covering else tables.any)(
            table_names(statement)
        ):
            return False
        return schemas is None or (schemas.all if covering else schemas.any)(
            schema_names(statement)
        )

    def _matches_besides_tables(self, statement: StatementInfo, *, covering: bool) -> bool:
        """Category, kinds, functions, WHERE and text: everything but tables and schemas."""
        if self.categories and statement.category not in self.categories:
            return False
        for globs, values in ((self.kinds, statement.kinds), (self.functions, statement.functions)):
            if globs is not None and not (globs.all if covering else globs.any)(values):
                return False
        if self.without_where is not None:
            unrestricted = statement.has_restricting_where is False
            if unrestricted != self.without_where:
                return False
        return self.text_regex is None or self.text_regex.search(statement.text) is not None


def _combined(matches: list[Match], covering: bool) -> Match:
    """Every value must match (`covering`, and there must be one) or any may."""
    if not matches:
        return Match.NO
    return min(matches) if covering else max(matches)


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

    def match(self, statement: StatementInfo, *, ambiguous: bool) -> Match:
        covering = self.action in {RuleAction.ALLOW, RuleAction.REQUIRE_APPROVAL}
        return self.condition.match(statement, covering=covering, ambiguous=ambiguous)
