"""PgSessionMasking on raw DataRow regions, without a server."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.audit import AuditLog
from sluice.events import Identity, Protocol, SessionContext
from sluice.masking import MaskingEngine, MaskingSpec
from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.rows import datarow_run
from sluice.protocols.postgres.tracker import ResultShape
from sluice.proxy.pg_masking import PgSessionMasking

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

    def run(splice: bool) -> bytes | None:
        session = PgSessionMasking(
            engine=COLUMN_ENGINE,
            profiles=["cols"],
            context=CONTEXT,
            audit=AuditLog([]),
            catalog=None,
        )
        if not splice:
            session._plan_constants = lambda plan: None  # type: ignore[method-assign]
        return session.mask_rows(shape, region, len(rows))

    assert run(splice=True) == run(splice=False)
