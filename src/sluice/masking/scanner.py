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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from sluice.masking import hits
from sluice.masking.detectors import Detector, Pattern
from sluice.masking.hits import SEPARATOR, Fast, Finding, RawFinding
from sluice.masking.precheck import ThreadScratch
from sluice.masking.validators import CONTEXT_BYTES, Validator

Backend = Literal["hyperscan", "re2", "re"]


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
    groups: dict[tuple[bytes, bytes, int, int, bytes | None], list[tuple[Pattern, str]]] = {}
    for d in detectors:
        for p in d.patterns:
            key = (p.regex, p.prefilter, p.lookback, p.window, p.start_run)
            groups.setdefault(key, []).append((p, d.name))
    return tuple(
        _Entry(pattern=g[0][0], checks=tuple((name, p.validator) for p, name in g))
        for g in groups.values()
    )


# Detectors with this priority or more are secrets: they name a merged span
# whatever its length (a password inside a URL that also looks like an email).
SECRET_PRIORITY: Final = 80


class Scanner:
    """Immutable after construction; safe to share (hyperscan scratch is per thread)."""

    def __init__(self, detectors: Sequence[Detector], *, backend: Backend | None = None):
        self.detectors = tuple(detectors)
        self._entries = _entries(self.detectors)
        self._priority = {d.name: d.priority for d in self.detectors}
        self._thread_scratch: ThreadScratch | None = None  # with the hyperscan database
        self._hs_db: Any = None
        self._hs_ids: tuple[int, ...] = ()
        self._fast: tuple[Fast, ...] = ()
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
                self._thread_scratch = ThreadScratch(db)
                self._hs_ids = tuple(ok)
                self._fast = tuple(
                    (
                        e.pattern.compiled.match,
                        e.pattern.value_groups,
                        e.pattern.context,
                        e.checks,
                        e if e.pattern.lookback else None,
                        hits.run_table(e.pattern.start_run) if e.pattern.start_run else None,
                    )
                    for e in (self._entries[i] for i in ok)
                )
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
        assert self._thread_scratch is not None  # made with the database
        return self._thread_scratch.get()

    def scan(self, buf: bytes) -> list[Finding]:
        """Validated findings in `buf`, sorted, overlaps merged into one span."""
        raw = self._raw(buf)
        if not raw:
            return []
        raw.sort()
        # One value: every merged span lies inside it.
        return hits.place(
            raw, (buf,), self._priority, SECRET_PRIORITY, Finding, self._place_across
        )[0]

    def _raw(self, buf: bytes) -> list[RawFinding]:
        """Validated, unmerged findings."""
        raw: list[RawFinding] = []
        if self._hs_db is not None:
            collector = hits.Collector(len(self._hs_ids))
            # Positional: the binding parses keywords by name (0.65 µs a call, 0.23 without).
            self._hs_db.scan(buf, collector, 0, None, self._scratch())
            if len(collector):
                hits.validate(collector, buf, self._fast, self._exact_window, raw, CONTEXT_BYTES)
        elif self._re2_set is not None:
            for idx in self._re2_set.Match(buf) or ():
                self._exact_all(self._entries[self._re2_ids[idx]], buf, raw)
        for i in self._slow:
            self._exact_all(self._entries[i], buf, raw)
        return raw

    def _exact_window(self, entry: _Entry, buf: bytes, start: int, out: list[RawFinding]) -> None:
        pattern = entry.pattern
        lo = max(buf.rfind(SEPARATOR, max(0, start - pattern.lookback), start) + 1, 0)
        lo = max(lo, start - pattern.lookback)
        hi = min(len(buf), start + pattern.window)
        pos = lo
        while pos <= start:
            m = pattern.compiled.search(buf, pos, hi)
            if m is None or m.start() > start:
                return
            self._accept(entry, buf, m, out)
            pos = max(m.end(), m.start() + 1)

    def _exact_all(self, entry: _Entry, buf: bytes, out: list[RawFinding]) -> None:
        for m in entry.pattern.compiled.finditer(buf):
            self._accept(entry, buf, m, out)

    @staticmethod
    def _accept(entry: _Entry, buf: bytes, m: re.Match[bytes], out: list[RawFinding]) -> None:
        pattern = entry.pattern
        if pattern.value_groups:
            for g in pattern.value_groups:
                if m.group(g) is not None:
                    s, e = m.span(g)
                    break
            else:
                return
        else:
            s, e = m.span()
        if e <= s:
            return
        hits.run_checks(entry.checks, buf, s, e, CONTEXT_BYTES if pattern.context else 0, out)

    def scan_many(self, values: Sequence[bytes]) -> dict[int, list[Finding]]:
        """Findings per value index (only values with findings), offsets within the value.

        A finding that would cross a separator is clipped into each value it
        touches, so nothing it covered is left unmasked.
        """
        if not values:
            return {}
        if len(values) == 1:
            single = self.scan(values[0])
            return {0: single} if single else {}
        buf = SEPARATOR.join(values)
        raw = self._raw(buf)
        if not raw:
            return {}
        raw.sort()
        return hits.place(raw, values, self._priority, SECRET_PRIORITY, Finding, self._place_across)

    @staticmethod
    def _place_across(
        values: Sequence[bytes],
        out: dict[int, list[Finding]],
        j: int,
        jbase: int,
        jend: int,
        fs: int,
        fe: int,
        name: str,
    ) -> None:
        """Clip a finding that crosses separators into every value it touches."""
        last = len(values) - 1
        while True:
            s, e = max(fs, jbase), min(fe, jend)
            if s < e:
                out.setdefault(j, []).append(Finding(s - jbase, e - jbase, name))
            if fe <= jend or j >= last:
                return
            j += 1
            jbase = jend + 1
            jend = jbase + len(values[j])
