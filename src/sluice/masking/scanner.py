"""One compiled multi-pattern pass over a whole buffer.

The scanner finds candidate starts for every detector at once (hyperscan when
importable, else an RE2 set, else a Python alternation), then runs the exact
Python regex and the validator only at those hits. Data without PII costs one
pass of the automaton and nothing else.

`scan_many` joins many values with NUL (no pattern matches NUL) so a whole
batch of DataRows costs one scan, and maps findings back to values.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal

from sluice.masking.detectors import Detector, Pattern
from sluice.masking.validators import CONTEXT_BYTES, Validator

Backend = Literal["hyperscan", "re2", "re"]
SEPARATOR = b"\x00"


@dataclass(frozen=True, slots=True)
class Finding:
    """A validated span [start, end) of one detector in a buffer or value."""

    start: int
    end: int
    detector: str


def _hyperscan() -> Any:
    try:
        import hyperscan
    except ImportError:  # pragma: no cover - hyperscan is a dependency
        return None
    return hyperscan


def _re2() -> Any:
    try:
        import re2
    except ImportError:  # pragma: no cover
        return None
    return re2


@dataclass(frozen=True, slots=True)
class _Entry:
    """One distinct pattern and every (detector, validator) that shares it."""

    pattern: Pattern
    checks: tuple[tuple[str, Validator], ...]


def _entries(detectors: Sequence[Detector]) -> tuple[_Entry, ...]:
    groups: dict[tuple[bytes, bytes, int, int], list[tuple[Pattern, str]]] = {}
    for d in detectors:
        for p in d.patterns:
            groups.setdefault((p.regex, p.prefilter, p.lookback, p.window), []).append((p, d.name))
    return tuple(
        _Entry(pattern=g[0][0], checks=tuple((name, p.validator) for p, name in g))
        for g in groups.values()
    )


class Scanner:
    """Immutable after construction; safe to share (hyperscan scratch is per thread)."""

    def __init__(self, detectors: Sequence[Detector], *, backend: Backend | None = None):
        self.detectors = tuple(detectors)
        self._entries = _entries(self.detectors)
        self._priority = {d.name: d.priority for d in self.detectors}
        self._local = threading.local()
        self._hs_db: Any = None
        self._hs_ids: tuple[int, ...] = ()
        self._slow: tuple[int, ...] = ()  # entries the automaton could not take
        self._re2_set: Any = None
        self._re2_ids: tuple[int, ...] = ()
        self.backend: Backend = self._compile(backend)

    def _compile(self, backend: Backend | None) -> Backend:
        if not self._entries:
            return backend or "re"
        hs = _hyperscan() if backend in (None, "hyperscan") else None
        if hs is not None:
            ok, slow = [], []
            for i, e in enumerate(self._entries):
                try:
                    db = hs.Database(mode=hs.HS_MODE_BLOCK)
                    db.compile(expressions=[e.pattern.prefilter], flags=hs.HS_FLAG_SOM_LEFTMOST)
                    ok.append(i)
                except hs.error:
                    slow.append(i)
            if ok:
                db = hs.Database(mode=hs.HS_MODE_BLOCK)
                db.compile(
                    expressions=[self._entries[i].pattern.prefilter for i in ok],
                    ids=list(range(len(ok))),
                    flags=hs.HS_FLAG_SOM_LEFTMOST,
                )
                self._hs_db = db
                self._hs_ids = tuple(ok)
            self._slow = tuple(slow)
            return "hyperscan"
        r2 = _re2() if backend in (None, "re2") else None
        if r2 is not None:
            rset = r2.Set.SearchSet(r2.Options())
            ok2, slow2 = [], []
            for i, e in enumerate(self._entries):
                try:
                    rset.Add(e.pattern.prefilter)
                    ok2.append(i)
                except r2.error:
                    slow2.append(i)
            rset.Compile()
            self._re2_set = rset
            self._re2_ids = tuple(ok2)
            self._slow = tuple(slow2)
            return "re2"
        # Plain `re`: each exact pattern over the buffer (slow, but always available).
        self._slow = tuple(range(len(self._entries)))
        return "re"

    def _scratch(self) -> Any:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            hs = _hyperscan()
            scratch = hs.Scratch(self._hs_db)
            self._local.scratch = scratch
        return scratch

    def scan(self, buf: bytes) -> list[Finding]:
        """Validated findings in `buf`, sorted, overlaps merged into one span."""
        raw: list[Finding] = []
        if self._hs_db is not None:
            hits: list[tuple[int, int]] = []
            append = hits.append

            def on_match(idx: int, start: int, end: int, flags: int, ctx: object) -> None:
                append((idx, start))

            self._hs_db.scan(buf, match_event_handler=on_match, scratch=self._scratch())
            if hits:
                for idx, start in sorted(set(hits)):
                    self._exact_at(self._entries[self._hs_ids[idx]], buf, start, raw)
        elif self._re2_set is not None:
            for idx in self._re2_set.Match(buf) or ():
                self._exact_all(self._entries[self._re2_ids[idx]], buf, raw)
        for i in self._slow:
            self._exact_all(self._entries[i], buf, raw)
        return self._merge(raw) if raw else raw

    def _exact_at(self, entry: _Entry, buf: bytes, start: int, out: list[Finding]) -> None:
        pattern = entry.pattern
        if not pattern.lookback:
            m = pattern.compiled.match(buf, start)
            if m is not None:
                self._accept(entry, buf, m, out)
            return
        lo = buf.rfind(SEPARATOR, max(0, start - pattern.lookback), start) + 1
        lo = max(lo, start - pattern.lookback, 0)
        hi = min(len(buf), start + pattern.window)
        pos = lo
        while pos <= start:
            m = pattern.compiled.search(buf, pos, hi)
            if m is None or m.start() > start:
                return
            self._accept(entry, buf, m, out)
            pos = max(m.end(), m.start() + 1)

    def _exact_all(self, entry: _Entry, buf: bytes, out: list[Finding]) -> None:
        for m in entry.pattern.compiled.finditer(buf):
            self._accept(entry, buf, m, out)

    @staticmethod
    def _accept(entry: _Entry, buf: bytes, m: re.Match[bytes], out: list[Finding]) -> None:
        s, e = m.span()
        for g in entry.pattern.value_groups:
            if m.group(g) is not None:
                s, e = m.span(g)
                break
        if e <= s:
            return
        before = buf[max(0, s - CONTEXT_BYTES) : s].rpartition(SEPARATOR)[2]
        value = buf[s:e]
        for name, validator in entry.checks:
            try:
                valid = validator(value, before)
            except (ValueError, UnicodeDecodeError, OverflowError):
                valid = False
            if valid:
                out.append(Finding(s, e, name))

    def _merge(self, found: list[Finding]) -> list[Finding]:
        """Merge overlapping findings; the highest priority (then longest) names the span."""
        found.sort(key=lambda f: (f.start, -f.end))
        merged: list[Finding] = []
        cur = found[0]
        best = cur
        for f in found[1:]:
            if f.start < cur.end:
                if (self._priority.get(f.detector, 0), f.end - f.start) > (
                    self._priority.get(best.detector, 0),
                    best.end - best.start,
                ):
                    best = f
                cur = Finding(cur.start, max(cur.end, f.end), best.detector)
            else:
                merged.append(Finding(cur.start, cur.end, best.detector))
                cur = best = f
        merged.append(Finding(cur.start, cur.end, best.detector))
        return merged

    def scan_many(self, values: Sequence[bytes]) -> dict[int, list[Finding]]:
        """Findings per value index (only values with findings), offsets within the value.

        A finding that would cross a separator is clipped into each value it
        touches, so nothing it covered is left unmasked.
        """
        if not values:
            return {}
        if len(values) == 1:
            found = self.scan(values[0])
            return {0: found} if found else {}
        buf = SEPARATOR.join(values)
        found = self.scan(buf)
        if not found:
            return {}
        # starts[i] is the offset of value i in buf.
        starts = [0, *accumulate(len(x) + 1 for x in values[:-1])]
        out: dict[int, list[Finding]] = {}
        for f in found:
            i = bisect_right(starts, f.start) - 1
            while i < len(values):
                base = starts[i]
                vend = base + len(values[i])
                s, e = max(f.start, base), min(f.end, vend)
                if s < e:
                    out.setdefault(i, []).append(Finding(s - base, e - base, f.detector))
                if f.end <= vend:
                    break
                i += 1
        return out
