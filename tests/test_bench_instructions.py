"""bench.instructions reads callgrind's summary as valgrind prints it, under a fixed hash seed."""

from __future__ import annotations

import pytest
from bench.instructions import HASH_SEED, collected, hotpath_env

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


def test_the_runs_share_a_fixed_hash_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    assert hotpath_env()["PYTHONHASHSEED"] == HASH_SEED


def test_a_seed_that_is_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONHASHSEED", "123")
    assert hotpath_env()["PYTHONHASHSEED"] == "123"
