"""What the target database's catalog tells the policy about the code a
statement may run without naming it.

A SELECT is a read only if nothing it runs can write. The parser sees the
calls a statement writes out; the catalog adds what the text does not show:

- which of the database's own functions cannot write (none of their
  overloads is volatile), so that calling them stays a read;
- which built-in names have a volatile namesake outside `pg_catalog`: an
  unqualified `lower(5)` runs `public.lower(integer)` when that is the best
  match for its arguments, or when the search_path puts its schema first;
- which relations run volatile functions when read: views (through the
  views they read) and tables whose row-level security policies call one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sluice.policy.sql import StatementInfo


@dataclass(frozen=True, slots=True, eq=False)
class DatabaseCode:
    """The catalog's facts on functions (see the module). Compared and hashed
    by identity: one object stands for one reading of the catalog."""

    read_only: frozenset[str] = frozenset()
    """Functions none of whose overloads is volatile: `schema.name`, and
    `name` when so in every schema (lower case)."""
    volatile_names: frozenset[str] = frozenset()
    """Names of volatile functions outside `pg_catalog` (`name`), and of
    operators whose function is volatile (`operator(op)`). A search_path
    that puts their schema before `pg_catalog` makes calls run them."""
    shadowing_names: frozenset[str] = frozenset()
    """Those of `volatile_names` with argument types no built-in of their
    name has: PostgreSQL picks them over the built-in for such arguments
    whatever the search_path (`public.lower(integer)` for `lower(5)`). A
    namesake with a built-in's very argument types (pgcrypto's
    `gen_random_uuid()`) loses to it while `pg_catalog` comes first."""
    relation_calls: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    """Relations (`schema.name`, as in the catalog) whose reading runs
    functions that may write, and those functions (`schema.name`, or `name`
    for a built-in)."""
    bare_relation_calls: Mapping[str, frozenset[str]] = field(init=False)
    """The same by relation name alone, over every schema: for unqualified
    names when the search_path is not known."""

    def __post_init__(self) -> None:
        bare: dict[str, set[str]] = {}
        for qualified, calls in self.relation_calls.items():
            bare.setdefault(qualified.partition(".")[2], set()).update(calls)
        object.__setattr__(
            self,
            "bare_relation_calls",
            MappingProxyType({name: frozenset(calls) for name, calls in bare.items()}),
        )

    def hidden_calls(self, statement: StatementInfo, *, ambiguous: bool) -> frozenset[str]:
        """Functions `statement` may run that its text does not name as such:
        volatile namesakes of the built-ins it calls unqualified, and what the
        relations it reads run. With `ambiguous` (search_path not known) an
        unqualified name may be any schema's."""
        found: set[str] = set()
        if statement.builtin_calls:
            found.update(
                statement.builtin_calls
                & (self.volatile_names if ambiguous else self.shadowing_names)
            )
        if self.relation_calls and statement.kind != "explain":
            for ref in statement.tables_read:
                if ref.schema is not None:
                    calls = self.relation_calls.get(f"{ref.schema}.{ref.name}")
                elif ambiguous:
                    calls = self.bare_relation_calls.get(ref.name)
                else:
                    calls = self.relation_calls.get(f"public.{ref.name}")
                if calls:
                    found.update(calls)
        return frozenset(found)


NO_DATABASE_CODE = DatabaseCode()
"""Nothing read from a catalog: only built-ins are known to be read-only."""
