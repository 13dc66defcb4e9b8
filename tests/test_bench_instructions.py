"""bench.instructions reads callgrind's summary as valgrind prints it."""

from __future__ import annotations

from bench.instructions import collected

# The tail of `valgrind --tool=callgrind` on stderr (valgrind 3.19).
SUMMARY = """==18667== Events    : Ir
==18667== Collected : 6679804630
==18667==
==18667== I   refs:      6,679,804,630
"""


def test_the_count_is_read_from_the_summary() -> None:
    assert collected(SUMMARY) == 6_679_804_630


def test_no_summary_no_count() -> None:
    assert collected("==1== error: cannot start python\n") is None
