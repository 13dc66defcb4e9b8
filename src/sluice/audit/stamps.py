"""Audit event ids and timestamps, made cheaply: one of each per statement.

Ids are RFC 9562 version-8 UUIDs: 64 random bits drawn once per process
(with the version nibble, the first three groups of the text) and a counter
under the variant bits. Unique like uuid4, without a getrandom() call per
event; every forked worker draws its own bits.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import time
from typing import Any, Final

_COUNTER_MASK: Final = (1 << 62) - 1  # the counter's bits under the variant's two
_LOW_MASK: Final = (1 << 48) - 1  # the fifth group: 12 hex digits
_VARIANT_GROUP: Final = 0b10 << 14  # the variant bits at the top of the fourth group


class _Ids:
    """The process's id state: its random head and counter."""

    def __init__(self) -> None:
        self.head = ""
        self.counter = itertools.count()
        # The fourth group's value and the id's text up to it, as one tuple:
        # one read and one write, so threads never pair a group with another's text.
        self.prefix: tuple[int, str] = (-1, "")
        self.seed()

    def seed(self) -> None:
        high = int.from_bytes(os.urandom(8), "big") & ~(0xF << 12) | (0x8 << 12)
        text = f"{high:016x}"
        self.head = f"{text[:8]}-{text[8:12]}-{text[12:]}-"
        self.counter = itertools.count(int.from_bytes(os.urandom(7), "big"))
        self.prefix = (-1, "")

    def next(self) -> str:
        count: int = next(self.counter) & _COUNTER_MASK  # next() is atomic: threads emit too
        group = (count >> 48) | _VARIANT_GROUP  # changes once in 2**48 ids: its text is kept
        prefix = self.prefix
        if prefix[0] != group:
            prefix = self.prefix = (group, f"{self.head}{group:04x}-")
        # Small ints only, and no %-formatting: the cheapest text of the kind here.
        return prefix[1] + (count & _LOW_MASK).to_bytes(6, "big").hex()


_IDS: Final = _Ids()
os.register_at_fork(after_in_child=_IDS.seed)


def new_id() -> str:
    """A fresh event id (the text of a version-8 UUID)."""
    return _IDS.next()


# Bound once: compiled, a module attribute is looked up at every use.
_UTC: Final = dt.UTC
_NOW: Final = dt.datetime.now


def utc_now() -> dt.datetime:
    """Now, as an audit event's timestamp."""
    return _NOW(_UTC)


_NS: Final = time.time_ns
# The current second and its text up to the fraction, as one tuple: one read
# and one write, so threads never pair a second with another's text. Held in
# a Final list: compiled, that is a static, where a rebound global is a
# module-dict lookup and store.
_SECOND: Final[list[tuple[int, str]]] = [(-1, "")]


def utc_now_text() -> str:
    """Now, as `format_timestamp(utc_now())` gives it, without a datetime:
    the text up to the second is made once a second."""
    now: int = _NS()
    seconds = now // 1_000_000_000  # native integer arithmetic: divmod() is a generic call
    second = _SECOND[0]
    if second[0] != seconds:
        # format_timestamp's own text, up to the fraction's digits
        text = format_timestamp(dt.datetime.fromtimestamp(seconds, _UTC))[:-7]
        second = _SECOND[0] = (seconds, text)
    # str() of a 7-digit number, less its leading 1: the zero-padded
    # microseconds for a fraction of the cost of a format spec.
    return second[1] + str(1_000_000 + now // 1000 % 1_000_000)[1:] + "Z"


def format_timestamp(ts: dt.datetime) -> str:
    """UTC ISO 8601 with microseconds and a Z suffix."""
    if ts.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return ts.astimezone(_UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def settle_timestamp(members: dict[str, Any]) -> None:
    """Give `members["timestamp"]` as text where orjson would not write it
    as `format_timestamp` does (orjson keeps other offsets and leaves out a
    zero fraction); UTC datetimes are left to orjson, the faster."""
    stamp: dt.datetime = members["timestamp"]
    if stamp.tzinfo is not _UTC or stamp.microsecond == 0:
        members["timestamp"] = format_timestamp(stamp)
