"""Audit event ids, made cheaply: one per statement.

Ids are RFC 9562 version-8 UUIDs: 64 random bits drawn once per process
(with the version nibble, the first three groups of the text) and a counter
under the variant bits. Unique like uuid4, without a getrandom() call per
event; every forked worker draws its own bits.
"""

from __future__ import annotations

import itertools
import os
from typing import Final

_VARIANT: Final = 0b10 << 62
_COUNTER_MASK: Final = (1 << 62) - 1


class _Ids:
    """The process's id state: its random head and counter."""

    def __init__(self) -> None:
        self.head = ""
        self.counter = itertools.count()
        self.seed()

    def seed(self) -> None:
        high = int.from_bytes(os.urandom(8), "big") & ~(0xF << 12) | (0x8 << 12)
        text = f"{high:016x}"
        self.head = f"{text[:8]}-{text[8:12]}-{text[12:]}-"
        self.counter = itertools.count(int.from_bytes(os.urandom(7), "big"))

    def next(self) -> str:
        # next() is atomic: events come from threads too
        low = "%016x" % (_VARIANT | (next(self.counter) & _COUNTER_MASK))
        return f"{self.head}{low[:4]}-{low[4:]}"  # uuid.UUID's text, faster


_IDS: Final = _Ids()
os.register_at_fork(after_in_child=_IDS.seed)


def new_id() -> str:
    """A fresh event id (the text of a version-8 UUID)."""
    return _IDS.next()
