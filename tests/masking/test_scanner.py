"""The scanner: backends agree, batches map back to values, separators hold."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.masking.detectors import BUILTIN_DETECTORS, regex_detector
from sluice.masking.hits import Finding
from sluice.masking.scanner import Scanner

DETECTORS = list(BUILTIN_DETECTORS.values())
TEXT = (
    b"mail a.b@example.com, call (212) 555-0143, ssn 123-45-6789, card 4111-1111-1111-1111, "
    b"ip 10.1.1.1 / 8.8.4.4 / fe80::1, key AKIAIOSFODNN7EXAMPLE, password=pw1 "
    b"postgres://u:pw2@h/db, token eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0. end"
)


@pytest.mark.parametrize("backend", ["hyperscan", "re2", "re"])
def test_backends_agree(backend: str) -> None:
    reference = Scanner(DETECTORS, backend="hyperscan").scan(TEXT)
    scanner = Scanner(DETECTORS, backend=backend)  # type: ignore[arg-type]
    assert scanner.backend == backend
    assert scanner.scan(TEXT) == reference
    assert len(reference) >= 10


def test_scan_many_maps_offsets_to_values() -> None:
    s = Scanner(DETECTORS)
    values = [b"", b"nothing", b"x a@example.com y", b"", b"1 ssn 123-45-6789", b"b@example.org"]
    out = s.scan_many(values)
    assert sorted(out) == [2, 4, 5]
    assert out[2] == [Finding(2, 15, "email")]
    assert values[4][out[4][0].start : out[4][0].end] == b"123-45-6789"
    assert out[5] == [Finding(0, 13, "email")]


def test_findings_never_cross_values() -> None:
    # A card split over two values is two non-cards; an email split at the '@' is nothing.
    s = Scanner(DETECTORS)
    assert s.scan_many([b"4111 1111", b"1111 1111"]) == {}
    assert s.scan_many([b"john", b"@example.com"]) == {}


def test_custom_pattern_matching_separator_is_clipped_per_value() -> None:
    # A careless custom regex that can cross NUL still masks both sides.
    s = Scanner([regex_detector("any", r"ab[\s\S]cd")])
    out = s.scan_many([b"xab", b"cdx"])
    assert out == {0: [Finding(1, 3, "any")], 1: [Finding(0, 2, "any")]}


def test_overlaps_merge_with_priority() -> None:
    s = Scanner(DETECTORS)
    raw = b"postgres://bob:hunter2@db.example.com/x"
    (f,) = s.scan(raw)
    assert f.detector == "password"
    assert b"hunter2" in raw[f.start : f.end]


def test_empty_scanner_and_inputs() -> None:
    assert Scanner([]).scan(TEXT) == []
    assert Scanner(DETECTORS).scan_many([]) == {}
    assert Scanner(DETECTORS).scan(b"") == []


def _email_anchored_on_its_local_part() -> Scanner:
    """The built-in detectors with the email prefilter as it was: the local
    part and the "@", the start tracked by the automaton."""
    email = BUILTIN_DETECTORS["email"]
    pattern = dataclasses.replace(
        email.patterns[0], prefilter=rb"[A-Za-z0-9._%+\-]+@[A-Za-z0-9]", start_run=None
    )
    detectors = [
        dataclasses.replace(email, patterns=(pattern,)) if d is email else d for d in DETECTORS
    ]
    return Scanner(detectors)


SCANNER = Scanner(DETECTORS)
TRACKED = _email_anchored_on_its_local_part()
EMAILISH = st.lists(
    st.one_of(
        st.sampled_from([b"@", b".", b"a", b"Z", b"9", b"-", b"+", b"_", b"%", b" ", b"\x00"]),
        st.sampled_from([b"bob@example.com", b"x@y.co", b"@@", b".@a.io", b"a" * 70 + b"@b.org"]),
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(EMAILISH)
def test_walking_back_over_the_local_part_finds_what_tracking_it_found(text: bytes) -> None:
    values = text.split(b"\x00")
    assert SCANNER.scan(text.replace(b"\x00", b" ")) == TRACKED.scan(text.replace(b"\x00", b" "))
    assert SCANNER.scan_many(values) == TRACKED.scan_many(values)


def test_an_email_with_a_local_part_over_64_characters_is_no_finding() -> None:
    assert SCANNER.scan(b"to " + b"a" * 65 + b"@example.com") == []
    assert SCANNER.scan(b"to " + b"a" * 64 + b"@example.com") == [Finding(3, 79, "email")]
