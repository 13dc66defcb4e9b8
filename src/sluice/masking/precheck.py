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
from typing import Any

import hyperscan
from mypy_extensions import mypyc_attr

from sluice.masking import hits
from sluice.masking.detectors import BUILTIN_DETECTORS, Detector


def _stop_at_first_match(idx: int, start: int, end: int, flags: int, ctx: object) -> bool:
    return True  # the scan ends with hyperscan.error (ScanTerminated)


@mypyc_attr(allow_interpreted_subclasses=True)  # tests count its calls in a subclass
class RegionPrecheck:
    """Compiled once per detector set; `may_contain` is thread-safe."""

    def __init__(self, detectors: Sequence[Detector]):
        self._db: Any = None
        self._every: Any = None
        self._patterns = 0
        self._local = threading.local()
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
        self._patterns = len(expressions)

    def candidate_rows(self, buf: bytes | memoryview, starts: list[int]) -> list[int] | None:
        """Indexes of the rows (beginning at `starts` in `buf`) where a
        prefilter match ends: a superset of the rows holding a finding, since
        a finding inside one value ends inside that value. None: unknown
        (check every row).
        """
        if self._db is None:
            return None
        scratch = getattr(self._local, "every_scratch", None)
        if scratch is None:
            scratch = self._local.every_scratch = hyperscan.Scratch(self._every)
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
        if self._db is None:
            return True
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._db)
        try:
            self._db.scan(buf, _stop_at_first_match, 0, None, scratch)
        except hyperscan.error:
            return True  # stopped at a match, or failed: either way, not "clean"
        return False
