"""COPY TO STDOUT masking: text and CSV, records split at every byte."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.masking import pgtypes as t
from sluice.masking.copy import MAX_COPY_RECORD_BYTES, CopyFormat, CopyMasker
from sluice.masking.errors import MaskingError
from sluice.masking.masker import Masker
from sluice.masking.model import ColumnLineage, ColumnOrigin, ResultColumn
from sluice.masking.precheck import RegionPrecheck
from tests.masking.conftest import engine

SSN = ColumnOrigin(schema="public", table="people", column="ssn")
MASKER = engine(
    [{"name": "p", "content": True, "columns": [{"match": "people.ssn", "strategy": "partial"}]}]
).masker(["p"])
COLUMNS = [
    ResultColumn(name="id", type_oid=t.INT4, lineage=ColumnLineage()),
    ResultColumn(name="ssn", type_oid=t.TEXT, lineage=ColumnLineage(origins=frozenset({SSN}))),
    ResultColumn(name="note", type_oid=t.TEXT, lineage=ColumnLineage()),
]


def run(
    masker: CopyMasker, data: bytes, step: int | None = None, split: int | None = None
) -> bytes:
    if split is not None:
        return masker.feed(data[:split]) + masker.feed(data[split:]) + masker.finish()
    assert step is not None
    out = b"".join(masker.feed(data[i : i + step]) for i in range(0, len(data), step))
    return out + masker.finish()


def copier(fmt: CopyFormat, masker: Masker = MASKER) -> CopyMasker:
    cm = masker.copy_masker(COLUMNS, fmt)
    assert cm is not None
    return cm


TEXT_IN = (
    b"1\t123-45-6789\tmail a@b.com\\tthen\n"
    b"2\t\\N\tclean \\\\ text\n"
    b"3\t987-65-4321\tcall (212) 555-0143\\nbye\n"
)
TEXT_OUT = (
    b"1\t***-**-6789\tmail [REDACTED:email]\\tthen\n"
    b"2\t\\N\tclean \\\\ text\n"
    b"3\t***-**-4321\tcall [REDACTED:phone]\\nbye\n"
)

CSV_IN = (
    b'id,ssn,note\n1,123-45-6789,"multi\nline a@b.com, ""quoted"""\n2,,""\n3,987-65-4321,plain\r\n'
)
CSV_OUT = (
    b"id,ssn,note\n"
    b'1,***-**-6789,"multi\nline [REDACTED:email], ""quoted"""\n'
    b'2,,""\n'
    b"3,***-**-4321,plain\r\n"
)


def test_text_format_whole_and_every_split() -> None:
    assert run(copier(CopyFormat()), TEXT_IN, step=len(TEXT_IN)) == TEXT_OUT
    for i in range(len(TEXT_IN) + 1):
        assert run(copier(CopyFormat()), TEXT_IN, split=i) == TEXT_OUT, i
    assert run(copier(CopyFormat()), TEXT_IN, step=1) == TEXT_OUT


def test_csv_format_with_header_and_every_split() -> None:
    fmt = CopyFormat(kind="csv", header=True)
    assert run(copier(fmt), CSV_IN, step=len(CSV_IN)) == CSV_OUT
    for i in range(len(CSV_IN) + 1):
        assert run(copier(fmt), CSV_IN, split=i) == CSV_OUT, i
    assert run(copier(fmt), CSV_IN, step=1) == CSV_OUT


def test_stats_accumulate() -> None:
    cm = copier(CopyFormat())
    run(cm, TEXT_IN, step=7)
    assert cm.stats.values == 4
    assert dict(cm.stats.by_detector) == {"email": 1, "phone": 1}


def test_last_record_without_newline() -> None:
    cm = copier(CopyFormat())
    assert cm.feed(b"1\t123-45-6789\tx") == b""
    assert cm.finish() == b"1\t***-**-6789\tx"


def test_text_custom_delimiter_with_escaped_delimiter() -> None:
    cm = copier(CopyFormat(delimiter=b","))
    data = b"1,111-22-3333,a\\,b@example.com\n"
    assert run(cm, data, step=3) == b"1,***-**-3333,a\\,[REDACTED:email]\n"


def test_null_result_is_written_as_null() -> None:
    masker = engine(
        [{"name": "n", "columns": [{"match": "people.ssn", "strategy": "null"}]}]
    ).masker(["n"])
    assert run(copier(CopyFormat(), masker), b"1\tx\ty\n", step=2) == b"1\t\\N\ty\n"
    csv = copier(CopyFormat(kind="csv"), masker)
    assert run(csv, b'1,x,""\n', step=2) == b'1,,""\n'


def test_malformed_streams_fail_closed() -> None:
    cm = copier(CopyFormat(kind="csv"))
    cm.feed(b'1,2,"open quote')
    with pytest.raises(MaskingError):
        cm.finish()
    with pytest.raises(MaskingError):
        run(copier(CopyFormat()), b"only\ttwo\n", step=100)
    cm = copier(CopyFormat())
    with pytest.raises(MaskingError):
        cm.feed(b"x" * (MAX_COPY_RECORD_BYTES + 1))


def test_no_masker_when_nothing_applies() -> None:
    plain = engine([{"name": "none", "detectors": []}]).masker(["none"])
    assert plain.copy_masker(COLUMNS[:1], CopyFormat()) is None


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), kind=st.sampled_from(["text", "csv"]), step=st.integers(1, 17))
def test_garbage_is_masked_or_rejected(data: bytes, kind: str, step: int) -> None:
    cm = copier(CopyFormat(kind=kind))  # type: ignore[arg-type]
    with contextlib.suppress(MaskingError):
        run(cm, data, step=step)


# The raw-bytes pre-check: records no prefilter matches pass without being split
# and scanned; the output must be exactly that of the exact path.

CONTENT = engine([{"name": "c", "content": True}]).masker(["c"])
PRECHECK = RegionPrecheck(CONTENT.scanner.detectors)
FRAGMENTS = [
    b"plain words",
    b"jane.roe@example.com",
    b"123-45-6789",
    b"(212) 555-0143",
    b"4111 1111 1111 1111",
    b"10.1.2.3",
    b"AKIAIOSFODNN7EXAMPLE",
    b"jane.roe\\x40example.com",  # an escaped @: only decoding reveals the email
    b"\\t",
    b"\\\\",
    b"\\N",
    b'"',
    b'""',
    b",",
    b"\t",
    b"caf\xc3\xa9",
]
TEXT_COLUMNS = [ResultColumn(name=f"c{i}", type_oid=t.TEXT) for i in range(3)]


def _encoded(value: bytes, kind: str) -> bytes:
    """A value as COPY writes it (so records are well formed whatever it holds)."""
    if kind == "text":
        for raw, escaped in ((b"\\", b"\\\\"), (b"\t", b"\\t"), (b"\n", b"\\n"), (b"\r", b"\\r")):
            value = value.replace(raw, escaped)
        return value
    if not value or any(c in value for c in b',"\r\n'):
        return b'"' + value.replace(b'"', b'""') + b'"'
    return value


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.lists(st.sampled_from(FRAGMENTS), max_size=4), min_size=3, max_size=3),
        min_size=1,
        max_size=12,
    ),
    kind=st.sampled_from(["text", "csv"]),
    step=st.integers(1, 64),
)
def test_the_precheck_changes_nothing_but_the_work(
    rows: list[list[list[bytes]]], kind: str, step: int
) -> None:
    assert PRECHECK.usable
    fmt = CopyFormat(kind="csv" if kind == "csv" else "text")
    delim = b"," if kind == "csv" else b"\t"
    data = b"".join(
        delim.join(_encoded(b"".join(parts), kind) for parts in row) + b"\n" for row in rows
    )
    exact = CONTENT.copy_masker(TEXT_COLUMNS, fmt)
    checked = CONTENT.copy_masker(TEXT_COLUMNS, fmt, PRECHECK)
    assert exact is not None
    assert checked is not None
    assert run(checked, data, step=step) == run(exact, data, step=step)
    assert checked.stats == exact.stats


def test_a_malformed_record_that_may_hold_a_finding_still_fails_closed() -> None:
    masker = CONTENT.copy_masker(TEXT_COLUMNS, CopyFormat(), PRECHECK)
    assert masker is not None
    with pytest.raises(MaskingError):
        run(masker, b"1\tjane.roe@example.com\n", step=5)


def test_the_precheck_is_not_used_with_column_rules() -> None:
    masker = MASKER.copy_masker(COLUMNS, CopyFormat(), PRECHECK)
    assert masker is not None
    assert masker._precheck is None
    assert run(masker, TEXT_IN, step=7) == TEXT_OUT


def test_with_the_precheck_pii_free_records_pass_and_others_are_masked() -> None:
    masker = CONTENT.copy_masker(TEXT_COLUMNS, CopyFormat(), PRECHECK)
    assert masker is not None
    clean = b"1\tnothing here\tat all\n" * 50
    dirty = b"2\tmail jane.roe@example.com\tok\n3\tescaped jane.roe\\x40example.com\tok\n"
    out = run(masker, clean + dirty + clean, step=100)
    assert out.startswith(clean)
    assert out.endswith(clean)
    assert b"jane.roe" not in out


def test_bytea_hex_values_are_read_as_bytes() -> None:
    """COPY writes bytea as hex: a finding in the bytes is masked in them and
    written as hex again; text that only looks like an escape is left alone."""
    email = b"mail a@b.com".hex().encode()
    plain = b"no secrets".hex().encode()
    text_in = b"1\t\\N\t\\\\x" + email + b"\n2\t\\N\t\\\\x" + plain + b"\n3\t\\N\t\\x41B\n"
    out = run(copier(CopyFormat()), text_in, step=7)
    first, second, third = out.splitlines()
    assert first.startswith(b"1\t\\N\t\\\\x")
    assert bytes.fromhex(first.split(b"\\\\x")[1].decode()) == b"mail [REDACTED:email]"
    assert second == text_in.splitlines()[1]
    assert third == b"3\t\\N\t\\x41B"
    csv_in = b"1,,\\x" + email + b"\n"  # no escape or quote: the pre-check path
    masker = CONTENT.copy_masker(TEXT_COLUMNS, CopyFormat(kind="csv"), PRECHECK)
    assert masker is not None
    csv_out = run(masker, csv_in, step=len(csv_in))
    assert bytes.fromhex(csv_out.strip().split(b"\\x")[1].decode()) == b"mail [REDACTED:email]"
