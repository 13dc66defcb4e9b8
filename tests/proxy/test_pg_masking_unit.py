"""PgSessionMasking on raw DataRow regions, without a server."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.audit import AuditLog
from sluice.events import Identity, Protocol, SessionContext
from sluice.masking import MaskingEngine, MaskingError, MaskingSpec
from sluice.masking import lineage as lineage_module
from sluice.masking.precheck import RegionPrecheck
from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.rows import datarow_run
from sluice.protocols.postgres.tracker import ResultShape
from sluice.proxy import pg_masking as pg_masking_module
from sluice.proxy.pg_masking import DENSE_MIN_ROWS, DENSE_SKIP_BATCHES, PgSessionMasking
from tests.masking.test_detectors import POSITIVE

ENGINE = MaskingEngine(
    MaskingSpec.model_validate(
        {"profiles": [{"name": "pii", "detectors": ["all"], "content": True}]}
    )
)
CONTEXT = SessionContext(
    session_id="s",
    identity=Identity(user="u"),
    connection="c",
    protocol=Protocol.POSTGRES,
    client_addr="x",
)
FIELDS = [
    m.FieldDescription(
        name=f"c{i}", table_oid=0, column=0, type_oid=25, type_size=-1, type_modifier=-1, format=0
    )
    for i in range(3)
]
PII = [
    "john.doe@example.com",
    "123-45-6789",
    "4111 1111 1111 1111",
    "10.1.2.3",
    "AKIAIOSFODNN7EXAMPLE",
]
FILLER = st.text(alphabet="abcdefghijklmnopqrstuvwxyz LawsonDawsnSt 0123456789.", max_size=80)


def masking() -> PgSessionMasking:
    return PgSessionMasking(
        engine=ENGINE, profiles=["pii"], context=CONTEXT, audit=AuditLog([]), catalog=None
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(FILLER, st.one_of(st.none(), st.sampled_from(PII)), FILLER),
        min_size=1,
        max_size=60,
    )
)
def test_only_rows_with_findings_change_and_no_pii_survives(
    rows: list[tuple[str, str | None, str]],
) -> None:
    values = [[a.encode(), (b or "clean").encode(), c.encode()] for a, b, c in rows]
    region = b"".join(m.encode_data_row(list(v)) for v in values)
    out = masking().mask_rows(ResultShape(fields=FIELDS, sql="SELECT"), region, len(values))
    result = region if out is None else out
    for pii in PII:
        assert pii.encode() not in result
    _, starts = datarow_run(result, 0, len(result))
    ends = [*starts[1:], len(result)]
    decoded = [m.decode_data_row(result[s + 5 : e]) for s, e in zip(starts, ends, strict=True)]
    assert len(decoded) == len(values)
    for (_before, b, _after), got in zip(rows, decoded, strict=True):
        if b is None:
            assert got[1] == b"clean"


class CountingPrecheck(RegionPrecheck):
    """A session's pre-check, counting the calls."""

    calls = 0

    def candidate_rows(self, buf: bytes | memoryview, starts: list[int]) -> list[int] | None:
        self.calls += 1
        return super().candidate_rows(buf, starts)


def counted_masking() -> tuple[PgSessionMasking, CountingPrecheck]:
    session = masking()
    assert session._precheck is not None
    counting = CountingPrecheck(session.masker.scanner.detectors)
    session._precheck = counting
    return session, counting


def test_pii_dense_results_skip_the_precheck_for_a_while_with_the_same_output() -> None:
    session, counting = counted_masking()
    shape = ResultShape(fields=FIELDS, sql="SELECT")
    dense = [[b"row %d" % i, PII[i % len(PII)].encode(), b"x"] for i in range(DENSE_MIN_ROWS)]
    clean = [[b"row %d" % i, b"nothing here", b"x"] for i in range(DENSE_MIN_ROWS)]
    batches = [dense] * 3 + [clean] * 3 + [dense] * 4 + [clean] * 2
    for i, values in enumerate(batches):
        region = b"".join(m.encode_data_row(list(v)) for v in values)
        got = session.mask_rows(shape, region, len(values))
        # A fresh session (pre-check on every batch) gives the same bytes.
        assert got == masking().mask_rows(shape, region, len(values)), i
        if values is dense:
            assert got is not None
            assert all(p.encode() not in got for p in PII)
        else:
            assert got is None
    # Batch 0 is dense: batches 1-8 go without the pre-check, clean ones too;
    # batch 9 (dense) runs it again; batches 10 and 11 skip it again.
    assert DENSE_SKIP_BATCHES == 8
    assert counting.calls == 2
    # A new result (a new shape) starts with the pre-check.
    session.mask_rows(ResultShape(fields=FIELDS, sql="SELECT"), region, len(batches[-1]))
    assert counting.calls == 3


def test_sparse_results_keep_the_precheck() -> None:
    session, counting = counted_masking()
    shape = ResultShape(fields=FIELDS, sql="SELECT")
    values = [
        [b"row %d" % i, (PII[0] if i % 4 == 0 else "clean").encode(), b"x"] for i in range(64)
    ]
    region = b"".join(m.encode_data_row(list(v)) for v in values)
    for _ in range(5):
        assert session.mask_rows(shape, region, len(values)) is not None
    assert counting.calls == 5  # a quarter of the rows hold PII: not dense


COLUMN_ENGINE = MaskingEngine(
    MaskingSpec.model_validate(
        {
            "profiles": [
                {
                    "name": "cols",
                    "content": False,
                    "detectors": [],
                    "columns": [
                        {"match": "*email*", "strategy": "redact"},
                        {"match": "*ssn*", "strategy": "null"},
                    ],
                }
            ]
        }
    )
)
COLUMN_FIELDS = [
    m.FieldDescription(
        name=n, table_oid=0, column=0, type_oid=25, type_size=-1, type_modifier=-1, format=0
    )
    for n in ("id", "email", "note", "ssn", "tail")
]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(st.none(), st.binary(max_size=40)), min_size=5, max_size=5),
        min_size=1,
        max_size=40,
    )
)
def test_spliced_column_rules_equal_the_full_path(rows: list[list[bytes | None]]) -> None:
    region = b"".join(m.encode_data_row(r) for r in rows)
    shape = ResultShape(fields=COLUMN_FIELDS, sql="SELECT id, email, note, ssn, tail FROM t")

    class Unspliced(PgSessionMasking):
        def _plan_constants(self, plan: object) -> None:
            return None

    def run(splice: bool) -> bytes | None:
        session = (PgSessionMasking if splice else Unspliced)(
            engine=COLUMN_ENGINE,
            profiles=["cols"],
            context=CONTEXT,
            audit=AuditLog([]),
            catalog=None,
        )
        return session.mask_rows(shape, region, len(rows))

    assert run(splice=True) == run(splice=False)


def test_texts_that_differ_in_literals_share_one_lineage_analysis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    analysed: list[str] = []

    def counting(sql: str, catalog: object = None) -> object:
        analysed.append(sql)
        return lineage_module.analyze(sql, catalog)  # type: ignore[arg-type]

    monkeypatch.setattr(pg_masking_module, "analyze", counting)
    rows: list[list[bytes | None]] = [[b"1", b"a@example.com", b"n", b"123-45-6789", b"t"]]
    region = b"".join(m.encode_data_row(r) for r in rows)
    template = "SELECT id, email, note, ssn, tail FROM t WHERE note = {} AND id > {}"

    def masked(session: PgSessionMasking, sql: str) -> bytes | None:
        return session.mask_rows(ResultShape(fields=COLUMN_FIELDS, sql=sql), region, len(rows))

    session = PgSessionMasking(
        engine=COLUMN_ENGINE, profiles=["cols"], context=CONTEXT, audit=AuditLog([]), catalog=None
    )
    outputs = [
        masked(session, template.format(note, n))
        for note, n in (("'a'", 10), ("'b'", 20), ("'c''d'", 30))
    ]
    assert len(analysed) == 1
    fresh = PgSessionMasking(
        engine=COLUMN_ENGINE, profiles=["cols"], context=CONTEXT, audit=AuditLog([]), catalog=None
    )
    expected = masked(fresh, template.format("'z'", 99))
    assert expected is not None
    assert b"a@example.com" not in expected
    assert outputs == [expected] * 3
    # A literal where a column was is another statement: analysed on its own.
    masked(session, "SELECT id, 'email', note, ssn, tail FROM t WHERE note = 'a' AND id > 10")
    assert len(analysed) == 3


def test_reported_settings_are_masked_like_message_text() -> None:
    session = masking()  # detectors only: values are masked where they hold PII
    leaked = session.mask_parameter_status(
        m.parameter_status("application_name", "run for john.doe@example.com")[5:]
    )
    assert leaked is not None
    assert m.decode_parameter_status(leaked[5:]) == ("application_name", "run for [REDACTED:email]")
    plain = m.parameter_status("application_name", "nightly report")[5:]
    assert session.mask_parameter_status(plain) is None
    # Formats clients decode results by go as they are, whatever they hold.
    zone = m.parameter_status("TimeZone", "Europe/Paris")[5:]
    assert session.mask_parameter_status(zone) is None


def test_data_errors_under_column_rules_lose_the_values_they_quote() -> None:
    """A salary in a data error looks like nothing a detector knows."""
    engine = MaskingEngine(
        MaskingSpec.model_validate(
            {
                "profiles": [
                    {
                        "name": "cols",
                        "columns": [{"match": "*salary*", "strategy": "redact"}],
                        "content": False,
                    }
                ]
            }
        )
    )
    session = PgSessionMasking(
        engine=engine, profiles=["cols"], context=CONTEXT, audit=AuditLog([]), catalog=None
    )

    def fields(body: bytes) -> dict[str, str]:
        return m.decode_fields(session.mask_message(m.ERROR_RESPONSE, body))

    cast = m.error_response("22007", 'invalid input syntax for type date: "120000"')[5:]
    assert fields(cast)["M"] == 'invalid input syntax for type date: "[REDACTED]"'
    duplicate = m.encode_fields(
        b"E",
        {
            "S": "ERROR",
            "C": "23505",
            "M": 'duplicate key value violates unique constraint "pay_salary_key"',
            "D": "Key (salary)=(120000) already exists.",
        },
    )[5:]
    assert fields(duplicate)["D"] == "[REDACTED]"
    assert "120000" not in str(fields(duplicate))
    # Other classes quote names, not values: they go as they are.
    missing = m.error_response("42P01", 'relation "payroll" does not exist')[5:]
    assert fields(missing)["M"] == 'relation "payroll" does not exist'


class CountingMayContain(RegionPrecheck):
    """A session's pre-check, counting the whole-buffer checks."""

    checks = 0

    def may_contain(self, buf: bytes | memoryview) -> bool:
        self.checks += 1
        return super().may_contain(buf)


@pytest.mark.parametrize(("detector", "text", "span"), POSITIVE)
def test_a_statement_text_is_masked_whatever_the_precheck_says_first(
    detector: str, text: str, span: str
) -> None:
    """Statement texts go through the pre-check before the scanner: every
    detector's example in a literal is still masked, and a clean text comes
    back as it was, decided by the pre-check alone."""
    session = masking()
    assert session._precheck is not None
    counting = CountingMayContain(session.masker.scanner.detectors)
    session._precheck = counting
    sql = f"SELECT * FROM notes WHERE body = $q${text}$q$ AND id = 48213"  # the text verbatim
    assert span not in session.mask_statement(sql), detector
    clean = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213"
    assert session.mask_statement(clean) is clean
    assert counting.checks == 2


class FailingPrecheck(RegionPrecheck):
    def may_contain(self, buf: bytes | memoryview) -> bool:
        raise RuntimeError("scratch lost")


def test_a_failing_statement_precheck_is_a_masking_error() -> None:
    """The pre-check failing on a statement's text refuses it as masking
    does (masking-required), never returning the text unmasked."""
    session = masking()
    session._precheck = FailingPrecheck(session.masker.scanner.detectors)
    with pytest.raises(MaskingError, match="RuntimeError"):
        session.mask_statement("SELECT 'jane@example.com'")
