"""Value types shared by lineage, the masker and its callers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class ColumnOrigin:
    """A base-table column a result column is derived from (names as in the catalog)."""

    schema: str
    table: str
    column: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}.{self.column}"


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class TableRef:
    """A table whose columns could not be listed (`SELECT *` without a catalog)."""

    schema: str | None
    table: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ColumnLineage:
    """Where one output column comes from.

    `origins`: base columns it is computed from, through any expression.
    `unresolved`: tables some unknown column of which may flow into it.
    `opaque`: lineage could not be determined at all (treat as anything).
    """

    origins: frozenset[ColumnOrigin] = frozenset()
    unresolved: frozenset[TableRef] = frozenset()
    opaque: bool = False

    def __or__(self, other: ColumnLineage) -> ColumnLineage:
        return ColumnLineage(
            origins=self.origins | other.origins,
            unresolved=self.unresolved | other.unresolved,
            opaque=self.opaque or other.opaque,
        )


OPAQUE = ColumnLineage(opaque=True)
NO_LINEAGE = ColumnLineage()


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultColumn:
    """One column of a result as the proxy sees it.

    `origin` is the RowDescription hint (table OID + attnum resolved by the
    caller); `lineage` comes from `sluice.masking.lineage`. With neither, the
    column is of unknown origin and column rules apply to it (fail closed).
    """

    name: str
    type_oid: int
    format: int = 0  # 0 text, 1 binary
    origin: ColumnOrigin | None = None
    lineage: ColumnLineage | None = None

    def effective_lineage(self) -> ColumnLineage:
        if self.lineage is None:
            if self.origin is None:
                return OPAQUE
            return ColumnLineage(origins=frozenset({self.origin}))
        if self.origin is None:
            return self.lineage
        return self.lineage | ColumnLineage(origins=frozenset({self.origin}))


def _frozen(counts: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(counts))


@dataclass(frozen=True, slots=True, kw_only=True)
class MaskStats:
    """What was masked, for audit. Counts only: never values."""

    values: int = 0
    by_detector: Mapping[str, int] = field(default_factory=lambda: _frozen({}))
    by_column: Mapping[str, int] = field(default_factory=lambda: _frozen({}))

    @classmethod
    def of(cls, values: int, by_detector: Counter[str], by_column: Counter[str]) -> MaskStats:
        return cls(values=values, by_detector=_frozen(by_detector), by_column=_frozen(by_column))

    def __add__(self, other: MaskStats) -> MaskStats:
        d = Counter(self.by_detector)
        d.update(other.by_detector)
        c = Counter(self.by_column)
        c.update(other.by_column)
        return MaskStats.of(self.values + other.values, d, c)

    def __bool__(self) -> bool:
        return self.values > 0


EMPTY_STATS = MaskStats()
