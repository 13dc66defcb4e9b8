"""The scanner's per-hit loops: the compiled and the Python versions agree."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.masking import hits
from sluice.masking import validators as v
from sluice.masking.detectors import BUILTIN_DETECTORS
from sluice.masking.hits import Finding, RawFinding
from sluice.masking.scanner import Scanner
from sluice.masking.validators import Validator

Impl = tuple[Any, Any, Any]
LOOPS: list[tuple[str, Impl]] = [("python", (hits.PyCollector, hits.py_validate, hits.py_place))]
if hits.COMPILED:
    from sluice.masking import _hits

    LOOPS.append(("compiled", (_hits.Collector, _hits.validate, _hits.place)))
IMPLEMENTATIONS = [pytest.param(impl, id=name) for name, impl in LOOPS]


def test_the_compiled_loops_are_built_where_a_compiler_is() -> None:
    """The install builds them (setup.py); CI machines have gcc and the headers."""
    assert hits.COMPILED


def _even(value: bytes, before: bytes) -> bool:
    return len(value) % 2 == 0


def _raises_on_z(value: bytes, before: bytes) -> bool:
    if b"z" in value:
        raise RuntimeError("validator bug")
    return b"y" not in before


def _odd_context(value: bytes, before: bytes) -> bool:
    """Depends on exactly how much context the loop hands over."""
    return len(before) % 2 == 1


DIGITS = re.compile(rb"\d+")
GROUPED = re.compile(rb"(?:k=(?P<v>[a-z]+)|(?P<w>x+))")
WORD = re.compile(rb"[a-z]+")


def _window(entry: Any, buf: bytes, start: int, out: list[RawFinding]) -> None:
    """Stands for the scanner's windowed search: a fixed span around the hit."""
    out.append((max(0, start - 1), min(len(buf), start + 2), entry))


def _always(value: bytes, before: bytes) -> bool:
    return True


LETTERS = hits.run_table(b"abcdefghijklmnopqrstuvwxyz")
FAST: tuple[hits.Fast, ...] = (
    (DIGITS.match, (), False, (("digits", _even), ("number", _always)), None, None),
    (
        GROUPED.match,
        ("v", "w"),
        True,
        (("pair", _raises_on_z), ("odd", _odd_context)),
        None,
        None,
    ),
    (WORD.match, (), True, (("word", _raises_on_z), ("even_word", _even)), None, None),
    (WORD.match, (), False, (), "windowed", None),
    # A hit on "=" whose finding begins with the letters just before it.
    (WORD.match, (), False, (("run", _always),), None, LETTERS),
)


def _run_validate(impl: Impl, buf: bytes, keys: Sequence[tuple[int, int]]) -> list[RawFinding]:
    collector_type, validate, _ = impl
    collector = collector_type(len(FAST))
    for idx, start in keys:
        collector(idx, start, start + 1, 0, None)
    out: list[RawFinding] = []
    validate(collector, buf, FAST, _window, out, 5)
    return sorted(out)


buffers = st.binary(max_size=60).map(lambda b: bytes(b"az09 =kxy\x00"[c % 10] for c in b))


@settings(max_examples=300, deadline=None)
@given(buf=buffers, data=st.data())
def test_validate_gives_the_same_findings(buf: bytes, data: st.DataObject) -> None:
    keys = data.draw(
        st.lists(st.tuples(st.integers(0, len(FAST) - 1), st.integers(0, len(buf) + 3)))
    )
    results = [_run_validate(impl, buf, keys) for _, impl in LOOPS]
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_validate_runs_each_distinct_hit_once_and_fails_closed(impl: Impl) -> None:
    buf = b"ab 1234\x00yk=zz x"
    found = _run_validate(impl, buf, [(0, 3), (0, 3), (1, 9), (2, 0), (3, 14)])
    assert found == [
        (0, 2, "even_word"),  # "ab": even; context-free of "y"
        (0, 2, "word"),
        (3, 7, "digits"),
        (3, 7, "number"),
        (11, 13, "odd"),  # context "yk=": odd
        (11, 13, "pair"),  # "zz": the validator raised, so it counts as found
        (13, 15, "windowed"),
    ]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_run_moves_the_hit_back_to_where_it_begins(impl: Impl) -> None:
    run = len(FAST) - 1
    long = b"q" * 300
    buf = b"x ab=cd\x00 =z\x00" + long + b"=z"
    far = len(buf) - 2  # the "=" after 300 letters
    found = _run_validate(impl, buf, [(run, 4), (run, 9), (run, far)])
    assert found == [
        (2, 4, "run"),  # "ab" before the "=" at 4
        # nothing at 9: a blank before the "=", no run, and no word at "="
        (far - hits.RUN_LIMIT, far, "run"),  # at most RUN_LIMIT bytes back
    ]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_context_stops_at_the_value_separator(impl: Impl) -> None:
    # "y" before "ab" in the same value hides it from `_raises_on_z`; across a NUL it does not.
    assert ("word" in {n for _, _, n in _run_validate(impl, b"y ab", [(2, 2)])}) is False
    assert ("word" in {n for _, _, n in _run_validate(impl, b"y\x00ab", [(2, 2)])}) is True


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_base_exception_in_a_validator_is_not_swallowed(impl: Impl) -> None:
    def interrupted(value: bytes, before: bytes) -> bool:
        raise KeyboardInterrupt

    collector_type, validate, _ = impl
    collector = collector_type(1)
    collector(0, 0, 1, 0, None)
    with pytest.raises(KeyboardInterrupt):
        validate(
            collector,
            b"abc",
            ((WORD.match, (), False, (("w", interrupted),), None, None),),
            _window,
            [],
            5,
        )


def test_the_compiled_collector_refuses_bad_hits() -> None:
    if not hits.COMPILED:
        pytest.skip("not built")
    collector = _hits.Collector(2)
    with pytest.raises(ValueError, match="out of range"):
        collector(2, 0, 0, 0, None)
    with pytest.raises(ValueError, match="out of range"):
        collector(0, -1, 0, 0, None)
    with pytest.raises(TypeError):
        collector(0)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="must be positive"):
        _hits.Collector(0)
    with pytest.raises(ValueError, match="one fast entry per pattern"):
        _hits.validate(collector, b"", FAST, _window, [], 5)  # 5 entries for n = 2


def test_the_compiled_collector_is_made_from_positional_arguments_only() -> None:
    """Its constructor takes (n, use_end) without an argument tuple: each one
    is checked, and `use_end` keys the hit's end instead of its start."""
    if not hits.COMPILED:
        pytest.skip("not built")
    with pytest.raises(TypeError, match="positional"):
        _hits.Collector()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional"):
        _hits.Collector(2, True, 3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional"):
        _hits.Collector(n=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _hits.Collector("2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be positive"):
        _hits.Collector(-1, True)
    by_start, by_end = _hits.Collector(3), _hits.Collector(3, True)
    for collector in (by_start, by_end):
        collector(1, 4, 9, 0, None)
    rows = [0, 5, 8]  # three rows: the start (4) lies in the first, the end (9) in the third
    assert hits.rows_holding(by_start, rows) == [0]
    assert hits.rows_holding(by_end, rows) == [2]


PRIORITY = {"a": 10, "b": 50, "c": 10, "s": 90, "t": 85}


_across = Scanner._place_across  # how the scanner clips a span across values


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_place_gives_the_same_findings(data: st.DataObject) -> None:
    values = data.draw(st.lists(st.binary(min_size=0, max_size=8), min_size=1, max_size=6))
    size = len(b"\x00".join(values))
    spans = data.draw(
        st.lists(
            st.tuples(
                st.integers(0, max(0, size - 1)), st.integers(1, 6), st.sampled_from("abcstx")
            )
        )
    )
    raw = sorted((s, min(size, s + n), name) for s, n, name in spans if s < size)
    results = [impl[2](list(raw), values, PRIORITY, 80, Finding, _across) for _, impl in LOOPS]
    assert all(r == results[0] for r in results)
    for found in results[-1].values():
        assert all(type(f) is Finding for f in found)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_place_merges_overlaps_and_ranks_secrets_first(impl: Impl) -> None:
    values = [b"0123456789", b"abcdef"]
    raw = [(0, 8, "b"), (2, 4, "s"), (5, 9, "a"), (11, 13, "a"), (12, 14, "b")]
    out = impl[2](raw, values, PRIORITY, 80, Finding, _across)
    # The secret names the merged span though it is shorter; at equal length, the higher priority.
    assert out == {0: [Finding(0, 9, "s")], 1: [Finding(0, 3, "b")]}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_place_clips_a_span_across_values(impl: Impl) -> None:
    out = impl[2]([(2, 6, "a")], [b"abc", b"def"], PRIORITY, 80, Finding, _across)
    assert out == {0: [Finding(2, 3, "a")], 1: [Finding(0, 2, "a")]}


# The compiled validators: each against its Python reference, on input shaped
# like what its pattern matches and on arbitrary bytes.
VALIDATORS = [
    ("card", v.py_card_ok, v.card_ok, b"0123456789 -4"),
    ("ssn", v.py_ssn_ok, v.ssn_ok, b"0123456789 -69"),
    ("email", v.py_email_ok, v.email_ok, b"ab.@PNGjsx1-_"),
    ("phone", v.py_phone_ok, v.phone_ok, b"0123456789+1 ()-.xXtTeE\t\n"),
    ("ip_public", v.py_ip_public_ok, v.ip_public_ok, b"0123456789.:1"),
    ("ip_private", v.py_ip_private_ok, v.ip_private_ok, b"0123456789.:1"),
]


def _outcome(validator: Validator, value: bytes, before: bytes) -> object:
    """The answer, or the exception raised (the scanner counts that as a hit)."""
    try:
        return validator(value, before)
    except Exception as exc:
        return type(exc)


def _shaped(alphabet: bytes) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(list(alphabet)), max_size=24).map(bytes)


SAMPLES = [
    b"4111 1111 1111 1111", b"4111-1111-1111-1111", b"4111 1111-1111 1111", b"378282246310005",
    b"6011111111111117", b"5555555555554444", b"2221000000000009", b"3530111333300000",
    b"30569309025904", b"3000000000007", b"6200000000000005", b"2200000000000004",
    b"4111_1111_1111_1111",
    b"123-45-6789", b"000-12-3456", b"666-12-3456", b"900-12-3456", b"123-00-6789",
    b"123-45-0000", b"123 45 6789", b"123-45 6789",
    b"a@b.com", b"a@b.PNG", b"icon@2x.png", b".a@b.com", b"a.@b.com", b"a..b@c.com", b"@b.com",
    b"a@b", b"a@b." + b"x" * 70,
    b"(212) 555-1234", b"212-555-1234", b"+1 212 555 1234", b"1-212-555-1234", b"+44 20 7946 0958",
    b"+49 (0)30 123456", b"2 212 555 1234", b"212-555-1234 x12", b"212-555-1234x12",
    b"212-555-1234 ext. 12", b"212-555-1234 EXT 9", b"212-555-1234 Ext.\t7", b"212-555-1234 x12\n",
    b"(212) 555-1234 t5", b"x123", b"212-555-1234 xx12", b"+44 20 7946 0958 x3",
    b"123-456-7890", b"0" * 20,
    b"8.8.8.8", b"10.1.2.3", b"192.168.1.1", b"172.16.0.1", b"100.64.1.1", b"01.2.3.4",
    b"1.2.3", b"1.2.3.4.", b"1.2.3.4.5", b"256.1.1.1", b"1..2.3", b"fe80::1", b"2001:4860::1",
]  # fmt: skip
BEFORE = [
    b"", b"version ", b"v", b"ip=", b"at ", b"x\x00", b"Firmware: ", b"release=\t", b"xv",
    b"_v", b"-v", b"(V", b"preversion ", b"my version:= ", b"Version", b"released ", b"firmware\n",
]  # fmt: skip


@pytest.mark.parametrize(("kind", "reference", "compiled", "alphabet"), VALIDATORS)
def test_each_compiled_validator_answers_as_its_reference(
    kind: str, reference: Validator, compiled: Validator, alphabet: bytes
) -> None:
    assert hits.COMPILED
    assert type(compiled) is not type(reference)
    for value in SAMPLES:
        for before in BEFORE:
            expected = _outcome(reference, value, before)
            assert _outcome(compiled, value, before) == expected, (kind, value, before)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_compiled_validators_agree_on_shaped_and_arbitrary_input(data: st.DataObject) -> None:
    kind, reference, compiled, alphabet = data.draw(st.sampled_from(VALIDATORS))
    value = data.draw(st.one_of(_shaped(alphabet), st.binary(max_size=24)))
    before = data.draw(
        st.one_of(st.sampled_from(BEFORE), st.binary(max_size=8), _shaped(b"vVersionfmwal_ :=\t-"))
    )
    assert _outcome(compiled, value, before) == _outcome(reference, value, before), kind


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_rows_holding_gives_the_same_rows(data: st.DataObject) -> None:
    starts = sorted(set(data.draw(st.lists(st.integers(0, 200), min_size=1, max_size=12))))
    ends = data.draw(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 220)), max_size=30))
    results = []
    for _, (collector_type, _, _) in LOOPS:
        collector = collector_type(3, True)
        for idx, end in ends:
            collector(idx, 0, end, 0, None)
        rows_holding = (
            hits.py_rows_holding if collector_type is hits.PyCollector else _hits.rows_holding
        )
        results.append(rows_holding(collector, starts))
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_rows_holding_names_the_row_of_the_byte_before_each_end(impl: Impl) -> None:
    collector_type = impl[0]
    collector = collector_type(2, True)
    for idx, end in [(0, 12), (1, 12), (0, 10), (1, 31), (0, 5)]:
        collector(idx, 99, end, 0, None)  # the start is not what is kept
    rows_holding = (
        hits.py_rows_holding if collector_type is hits.PyCollector else _hits.rows_holding
    )
    # Rows begin at 5, 10 and 20: an end at 5 or 10 closes a match in the row before.
    assert rows_holding(collector, [5, 10, 20]) == [0, 1, 2]
    assert rows_holding(collector, [11, 30]) == [0, 1]


def test_the_scanner_finds_the_same_with_the_python_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback a machine without a compiler runs, end to end through the scanner."""
    detectors = list(BUILTIN_DETECTORS.values())
    values = [
        b"mail a.b@example.com, call (212) 555-0143 or +44 20 7946 0958",
        b"ssn 123-45-6789, card 4111-1111-1111-1111, iban GB82 WEST 1234 5698 7654 32",
        b"ip 10.1.1.1 / 8.8.4.4 / fe80::1 / v10.1.2.3, key AKIAIOSFODNN7EXAMPLE",
        b"password=pw1 postgres://u:pw2@h/db token eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
        b"",
        b"nothing here at all",
        b"split 4111 1111",
        b"1111 1111 a@",
        b"example.com",
    ]
    compiled = Scanner(detectors).scan_many(values)
    single = Scanner(detectors).scan(values[0])
    monkeypatch.setattr(hits, "Collector", hits.PyCollector)
    monkeypatch.setattr(hits, "validate", hits.py_validate)
    monkeypatch.setattr(hits, "place", hits.py_place)
    assert Scanner(detectors).scan_many(values) == compiled
    assert Scanner(detectors).scan(values[0]) == single
    assert len(compiled) == 4
