"""The scanner's per-hit loops: what PII-dense data spends its time in.

Three steps turn the automaton's hits into findings per value:

- a `Collector` is the automaton's match handler: it keeps each hit as one
  integer key, `start * n + pattern index`;
- `validate` runs each distinct hit's exact regex and validators and appends
  `(start, end, detector)` to a list;
- `place` merges the sorted findings of a joined buffer into clusters and
  places each cluster in the value it falls in.

`rows_holding` serves the whole-region pre-check: which rows hold the end of
a prefilter match (a `Collector` keyed on match ends).

Sans-IO and pure. A compiled version of each (`_hits`, built from C when
a compiler is present at install) runs instead when importable; these Python
versions are the reference the tests hold it to, and the fallback.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from sluice.masking.validators import Validator

SEPARATOR = b"\x00"


class Finding(NamedTuple):
    """A validated span [start, end) of one detector in a buffer or value."""

    start: int
    end: int
    detector: str


RawFinding = tuple[int, int, str]
# Per pattern index: exact match, value groups, needs context, checks, the
# pattern's entry when its anchor may start after the hit (searched by
# `window`), and the run table (`run_table`) when the finding begins with a
# run of a class of bytes that ends at the hit (the hit's start moves back
# over it, at most RUN_LIMIT bytes).
Fast = tuple[
    Callable[[bytes, int], "re.Match[bytes] | None"],
    tuple[str, ...],
    bool,
    tuple[tuple[str, Validator], ...],
    Any,
    bytes | None,
]
RUN_LIMIT = 256


def run_table(chars: bytes) -> bytes:
    """A 256-byte table, nonzero for each byte in `chars`."""
    table = bytearray(256)
    for c in chars:
        table[c] = 1
    return bytes(table)


Window = Callable[[Any, bytes, int, list[RawFinding]], None]
Across = Callable[[Sequence[bytes], dict[int, list[Finding]], int, int, int, int, int, str], None]


class PyCollector:
    """Match handler: keeps `offset * n + index` of every hit, the offset being
    the match's start, or its end with `use_end`."""

    __slots__ = ("keys", "n", "use_end")

    def __init__(self, n: int, use_end: bool = False):
        self.n = n
        self.use_end = use_end
        self.keys: list[int] = []

    def __call__(self, idx: int, start: int, end: int, flags: int, ctx: object) -> None:
        self.keys.append((end if self.use_end else start) * self.n + idx)

    def __len__(self) -> int:
        return len(self.keys)


def py_validate(
    hits: PyCollector,
    buf: bytes,
    fast: Sequence[Fast],
    window: Window,
    out: list[RawFinding],
    context_bytes: int,
) -> None:
    """Exact regex and validators at each distinct (start, pattern) hit."""
    n = hits.n
    for key in sorted(set(hits.keys)):
        start, idx = divmod(key, n)
        if start > len(buf):
            continue  # not a hit of this buffer
        match, groups, context, checks, entry, run = fast[idx]
        if run is not None:
            lowest = max(0, start - RUN_LIMIT)
            while start > lowest and run[buf[start - 1]]:
                start -= 1
        if entry is not None:
            window(entry, buf, start, out)
            continue
        m = match(buf, start)
        if m is None:
            continue
        if groups:
            for g in groups:
                s, e = m.span(g)
                if s >= 0:
                    break
            else:
                continue
            if e <= s:
                continue
        else:
            s = start
            e = m.end()
        if e < s or e > len(buf):
            raise ValueError("a match's span lies outside the buffer")
        run_checks(checks, buf, s, e, context_bytes if context else 0, out)


def run_checks(
    checks: Sequence[tuple[str, Validator]],
    buf: bytes,
    s: int,
    e: int,
    context_bytes: int,
    out: list[RawFinding],
) -> None:
    """Append (s, e, name) for each check whose validator accepts buf[s:e]; the
    validator sees up to `context_bytes` before it, within the same value."""
    value = buf[s:e]
    before = buf[max(0, s - context_bytes) : s].rpartition(SEPARATOR)[2] if context_bytes else b""
    for name, validator in checks:
        try:
            valid = validator(value, before)
        except Exception:  # a validator bug must not unmask: fail closed
            valid = True
        if valid:
            out.append((s, e, name))


def py_rows_holding(hits: PyCollector, starts: list[int]) -> list[int]:
    """Sorted indexes of the rows (beginning at ascending `starts`) that hold
    the byte before each collected end; ends before the first row: none."""
    n = hits.n
    rows = {bisect.bisect_right(starts, key // n - 1) - 1 for key in hits.keys}
    return sorted(r for r in rows if r >= 0)


def _rank(priority: int, length: int, secret_priority: int) -> tuple[bool, int, int]:
    """Secrets first, then the longest finding, then the highest priority."""
    return (priority >= secret_priority, length, priority)


def py_place(
    raw: list[RawFinding],
    values: Sequence[bytes],
    prio: dict[str, int],
    secret_priority: int,
    finding: type[Finding],
    across: Across,
) -> dict[int, list[Finding]]:
    """Findings per value index of sorted `raw` over `SEPARATOR.join(values)`.

    Overlapping findings merge into one span named by the best-ranked one; a
    span inside one value is placed in it, one that crosses a separator goes
    to `across`, which clips it into every value it touches.
    """
    out: dict[int, list[Finding]] = {}
    if not raw or not values:
        return out
    new = tuple.__new__
    i = 0
    base = 0
    vend = len(values[0])
    last = len(values) - 1
    cs, ce, cn = raw[0]
    for s, e, name in (*raw[1:], (-1, -1, "")):
        if s >= 0 and s < ce:
            if _rank(prio.get(name, 0), e - s, secret_priority) > _rank(
                prio.get(cn, 0), ce - cs, secret_priority
            ):
                cn = name
            if e > ce:
                ce = e
            continue
        while cs >= vend and i < last:
            i += 1
            base = vend + 1
            vend = base + len(values[i])
        if ce <= vend:  # the usual case: inside one value
            hit = new(finding, (cs - base, ce - base, cn))
            lst = out.get(i)
            if lst is None:
                out[i] = [hit]
            else:
                lst.append(hit)
        else:
            across(values, out, i, base, vend, cs, ce, cn)
        cs, ce, cn = s, e, name
    return out


Collector: Callable[..., Any]
rows_holding: Callable[[Any, list[int]], list[int]]
validate: Callable[[Any, bytes, Sequence[Fast], Window, list[RawFinding], int], None]
place: Callable[
    [list[RawFinding], Sequence[bytes], dict[str, int], int, type[Finding], Across],
    dict[int, list[Finding]],
]
try:
    from sluice.masking import _hits
except ImportError:  # no compiler at install: the Python versions
    COMPILED = False
    Collector, validate, place = PyCollector, py_validate, py_place
    rows_holding = py_rows_holding
else:
    COMPILED = True
    Collector, validate, place = _hits.Collector, _hits.validate, _hits.place
    rows_holding = _hits.rows_holding
