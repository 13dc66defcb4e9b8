from __future__ import annotations

from collections import Counter

from sluice.masking.model import (
    EMPTY_STATS,
    OPAQUE,
    ColumnLineage,
    ColumnOrigin,
    MaskStats,
    ResultColumn,
)

ORIGIN = ColumnOrigin(schema="s", table="t", column="c")


def test_effective_lineage() -> None:
    assert ResultColumn(name="x", type_oid=25).effective_lineage() == OPAQUE
    hinted = ResultColumn(name="x", type_oid=25, origin=ORIGIN)
    assert hinted.effective_lineage().origins == {ORIGIN}
    both = ResultColumn(name="x", type_oid=25, origin=ORIGIN, lineage=ColumnLineage())
    assert both.effective_lineage().origins == {ORIGIN}
    assert str(ORIGIN) == "s.t.c"


def test_stats_add_and_bool() -> None:
    a = MaskStats.of(1, Counter({"email": 1}), Counter({"c": 1}))
    b = MaskStats.of(2, Counter({"email": 1, "ssn": 1}), Counter({"c": 2}))
    total = a + b
    assert total.values == 3
    assert dict(total.by_detector) == {"email": 2, "ssn": 1}
    assert not EMPTY_STATS
    assert total
