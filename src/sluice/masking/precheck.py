"""A whole-buffer pre-check: can any built-in detector possibly fire in here?

The data path sees result rows as one buffer of framed values (for
PostgreSQL, a run of DataRow messages with length headers between values).
Decoding every row to scan its values costs microseconds per row; most
results hold no PII at all. This check runs the detectors' prefilters once
over the raw buffer, headers and all: if nothing matches, no value can hold
a finding, and the rows pass untouched.

Why the raw buffer is safe to pre-check: a prefilter match inside a value is
also a match inside the buffer, because the prefilters are plain patterns
without lookaround. The one assertion some use, a word boundary, could be
broken by a header byte next to a value, so it is dropped here: the check
becomes broader (more "maybe"), never narrower. A "maybe" sends the rows to
the exact per-value path.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Final

import hyperscan
from mypy_extensions import mypyc_attr

from sluice.masking import hits
from sluice.masking.detectors import BUILTIN_DETECTORS, Detector


def _stop_at_first_match(idx: int, start: int, end: int, flags: int, ctx: object) -> bool:
    return True  # the scan ends with hyperscan.error (ScanTerminated)


_GET_IDENT: Final = threading.get_ident  # bound once: compiled, a module attribute is a lookup


class ThreadScratch:
    """hyperscan scratch space for one database, one per thread (a scratch
    serves one scan at a time).

    The first thread to ask, the event loop's as a rule, finds its scratch
    without a thread-local lookup (about 400 instructions each, twice a
    statement); other threads use a thread-local. A thread id is reused only
    after its thread ended, so a scratch is never in two scans at once.
    """

    def __init__(self, db: Any) -> None:
        self._db = db
        self._local = threading.local()
        self._first: tuple[int, Any] | None = None  # (thread id, scratch): one read, one write

    def get(self) -> Any:
        first = self._first
        ident = _GET_IDENT()
        if first is not None and first[0] == ident:
            return first[1]
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._db)
        if first is None:
            self._first = (ident, scratch)
        return scratch


@mypyc_attr(allow_interpreted_subclasses=True)  # tests count its calls in a subclass
class RegionPrecheck:
    """Compiled once per detector set; `may_contain` is thread-safe."""

    def __init__(self, detectors: Sequence[Detector]):
        self._db: Any = None
        self._every: Any = None
        self._patterns = 0
        self._scratch: ThreadScratch | None = None
        self._every_scratch: ThreadScratch | None = None
        if not detectors:
            return
        if any(BUILTIN_DETECTORS.get(d.name) is not d for d in detectors):
            return  # custom detectors may use any assertion: no pre-check
        expressions = [
            (p.precheck or p.prefilter).replace(rb"\b", b"") for d in detectors for p in d.patterns
        ]
        try:
            db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            db.compile(
                expressions=expressions,
                ids=list(range(len(expressions))),
                flags=hyperscan.HS_FLAG_SINGLEMATCH,
            )
            every = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            every.compile(expressions=expressions, ids=list(range(len(expressions))))
        except hyperscan.error:
            return
        self._db = db
        self._every = every
        self._scratch = ThreadScratch(db)
        self._every_scratch = ThreadScratch(every)
        self._patterns = len(expressions)

    def candidate_rows(self, buf: bytes | memoryview, starts: list[int]) -> list[int] | None:
        """Indexes of the rows (beginning at `starts` in `buf`) where a
        prefilter match ends: a superset of the rows holding a finding, since
        a finding inside one value ends inside that value. None: unknown
        (check every row).
        """
        if self._every_scratch is None:
            return None
        if len(starts) == 1 and starts[0] == 0:
            # One row holds every match: the scan that stops at the first one
            # answers, without collecting ends (a single-row result, as most
            # statements' are).
            return [0] if self.may_contain(buf) else []
        scratch = self._every_scratch.get()
        ends = hits.Collector(self._patterns, True)
        try:
            self._every.scan(buf, ends, 0, None, scratch)  # positional: see Scanner._raw
        except hyperscan.error:
            return None
        return hits.rows_holding(ends, starts) if len(ends) else []

    @property
    def usable(self) -> bool:
        return self._db is not None

    def may_contain(self, buf: bytes | memoryview) -> bool:
        """False only when no detector can match anywhere in `buf`."""
        if self._scratch is None:
            return True
        scratch = self._scratch.get()
        try:
            self._db.scan(buf, _stop_at_first_match, 0, None, scratch)
        except hyperscan.error:
            return True  # stopped at a match, or failed: either way, not "clean"
        return False
