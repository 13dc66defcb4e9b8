"""The masker: planning per result shape, batch row masking, message text."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.masking import pgtypes as t
from sluice.masking.config import MaskingSpec
from sluice.masking.errors import MaskingConfigError, MaskingError
from sluice.masking.masker import Masker, MaskingEngine
from sluice.masking.model import ColumnLineage, ColumnOrigin, ResultColumn, TableRef
from tests.masking.conftest import KEY, engine

EMAIL = ColumnOrigin(schema="public", table="customers", column="email")
SSN = ColumnOrigin(schema="public", table="customers", column="ssn")
ID = ColumnOrigin(schema="public", table="customers", column="id")
KNOWN = ColumnLineage()


def col(name: str, oid: int = t.TEXT, fmt: int = 0, *origins: ColumnOrigin) -> ResultColumn:
    return ResultColumn(
        name=name, type_oid=oid, format=fmt, lineage=ColumnLineage(origins=frozenset(origins))
    )


RULES = engine(
    [
        {
            "name": "rules",
            "columns": [
                {"match": "public.customers.email", "strategy": "hash"},
                {"match": "*ssn*", "strategy": "partial", "keep_last": 4},
                {"match": "billing.*.card", "strategy": None},
                {"match": "notes", "strategy": "detect"},
            ],
        }
    ]
).masker(["rules"])


def test_prepare_returns_none_when_nothing_applies() -> None:
    assert RULES.prepare([col("id", t.INT4, 0, ID), col("name")]) is None
    no_rules = engine([{"name": "empty", "detectors": []}]).masker(["empty"])
    assert no_rules.prepare([col("x")]) is None
    assert no_rules.prepare([ResultColumn(name="x", type_oid=t.TEXT)]) is None


def test_column_rules_by_origin_name_and_strength() -> None:
    cols = [
        col("e", t.TEXT, 0, EMAIL),
        col("s", t.TEXT, 0, SSN),
        col("both", t.TEXT, 0, EMAIL, SSN),
    ]
    rm = RULES.prepare(cols)
    assert rm is not None
    rows, stats = rm.mask_rows([[b"a@b.com", b"123-45-6789", b"x"], [None, None, None]])
    assert rows[0][0] is not None
    assert rows[0][0].startswith(b"h:")
    assert rows[0][1] == b"***-**-6789"
    assert rows[0][2] is not None
    assert rows[0][2].startswith(b"h:")
    assert rows[1] == [None, None, None]
    assert stats.values == 3
    assert dict(stats.by_column) == {"e": 1, "s": 1, "both": 1}


def test_output_name_matches_column_glob() -> None:
    rm = RULES.prepare([col("customer_ssn")])
    assert rm is not None
    assert rm.mask_rows([[b"123-45-6789"]])[0] == [[b"***-**-6789"]]


def test_unknown_origin_fails_closed() -> None:
    rm = RULES.prepare([ResultColumn(name="x", type_oid=t.TEXT)])
    assert rm is not None
    assert rm.mask_rows([[b"v"]])[0] == [[None]]  # strongest rule: null


def test_unresolved_table_fails_closed_only_if_a_rule_touches_it() -> None:
    star = ColumnLineage(unresolved=frozenset({TableRef(schema="billing", table="cards")}))
    masker = engine(
        [{"name": "p", "columns": [{"match": "billing.cards.number", "strategy": "redact"}]}]
    ).masker(["p"])
    rm = masker.prepare([ResultColumn(name="c", type_oid=t.TEXT, lineage=star)])
    assert rm is not None
    assert rm.mask_rows([[b"x"]])[0] == [[b"[REDACTED]"]]
    other = ColumnLineage(unresolved=frozenset({TableRef(schema="public", table="orders")}))
    assert masker.prepare([ResultColumn(name="c", type_oid=t.TEXT, lineage=other)]) is None


def test_unknown_schema_origin_matches_any_schema() -> None:
    origin = ColumnOrigin(schema="", table="customers", column="email")
    assert RULES.prepare([col("e", t.TEXT, 0, origin)]) is not None


def test_detect_rule_scans_that_column_only() -> None:
    rm = RULES.prepare([col("notes"), col("other")])
    assert rm is not None
    rows, stats = rm.mask_rows([[b"mail x@y.com", b"mail x@y.com"]])
    assert rows == [[b"mail [REDACTED:email]", b"mail x@y.com"]]
    assert dict(stats.by_detector) == {"email": 1}


def test_content_masking_batch(content_masker: Masker) -> None:
    cols = [
        col("id", t.INT4),
        col("note"),
        col("doc", t.JSONB),
        col("card", t.INT8),
        col("when", t.TIMESTAMPTZ),
    ]
    rm = content_masker.prepare(cols)
    assert rm is not None
    rows: list[list[bytes | None]] = [
        [
            b"1",
            b"ssn 123-45-6789",
            b'{"e": "a@b.com", "n": 4111111111111111}',
            b"4111111111111111",
            b"2024-01-01",
        ],
        [b"2", b"clean", b'{"k": "v"}', b"42", b"2024-01-02"],
        [None, None, None, None, None],
    ]
    out, stats = rm.mask_rows(rows)
    assert out[0][1] == b"ssn [REDACTED:ssn]"
    doc = json.loads(out[0][2] or b"")
    assert doc == {"e": "[REDACTED:email]", "n": "[REDACTED:credit_card]"}
    assert out[0][3] is None  # int8 cannot hold a placeholder
    assert out[1] is rows[1]
    assert out[2] is rows[2]
    assert dict(stats.by_detector) == {"ssn": 1, "email": 1, "credit_card": 2}


def test_json_unicode_escapes_are_decoded(content_masker: Masker) -> None:
    rm = content_masker.prepare([col("doc", t.JSON)])
    assert rm is not None
    out, _ = rm.mask_rows([[b'{"e": "bob\\u0040example.com"}']])
    assert json.loads(out[0][0] or b"") == {"e": "[REDACTED:email]"}


def test_binary_formats(content_masker: Masker) -> None:
    cols = [col("t", t.TEXT, 1), col("j", t.JSONB, 1), col("n", t.INT8, 1), col("r", t.RECORD, 1)]
    rm = content_masker.prepare(cols)
    assert rm is not None
    row: list[bytes | None] = [
        b"a@b.com",
        b'\x01{"a": "a@b.com"}',
        (4111111111111111).to_bytes(8, "big"),
        b"\x00\x00a@b.com",
    ]
    out, _ = rm.mask_rows([row])
    assert out[0][0] == b"[REDACTED:email]"
    assert out[0][1] == b'\x01{"a": "[REDACTED:email]"}'
    assert out[0][2] is None
    assert out[0][3] is None


def test_fake_whole_column_uses_detected_kind() -> None:
    m = engine([{"name": "f", "columns": [{"match": "email", "strategy": "fake"}]}]).masker(["f"])
    rm = m.prepare([col("email")])
    assert rm is not None
    out, _ = rm.mask_rows([[b"alice@corp.com"], [b"not an email"]])
    assert (out[0][0] or b"").endswith(b"@example.com")
    assert (out[1][0] or b"").startswith(b"fake-")


def test_row_width_mismatch_raises(content_masker: Masker) -> None:
    rm = content_masker.prepare([col("a")])
    assert rm is not None
    with pytest.raises(MaskingError):
        rm.mask_rows([[b"a", b"b"]])


def test_mask_text(content_masker: Masker) -> None:
    text, stats = content_masker.mask_text(
        "duplicate key value violates unique constraint: (email)=(joe@corp.com)"
    )
    assert "joe@corp.com" not in text
    assert "[REDACTED:email]" in text
    assert dict(stats.by_detector) == {"email": 1}
    same, none = content_masker.mask_text("nothing here")
    assert same == "nothing here"
    assert not none


def test_mask_text_null_strategy_redacts() -> None:
    m = engine([{"name": "n", "detectors": [{"name": "email", "strategy": "null"}]}]).masker(["n"])
    assert m.mask_text("x a@b.com")[0] == "x [REDACTED:email]"


def test_profiles_merge_strongest_and_cache() -> None:
    eng = engine(
        [
            {"name": "a", "content": True, "detectors": [{"name": "email", "strategy": "partial"}]},
            {"name": "b", "detectors": [{"name": "email", "strategy": "hash"}, "ssn"]},
        ]
    )
    m = eng.masker(["b", "a", "a"])
    assert m is eng.masker(["a", "b"])
    assert m.content
    assert m.mask_text("a@b.com")[0].startswith("h:")
    with pytest.raises(MaskingConfigError, match="unknown masking profile"):
        eng.masker(["zzz"])


def test_config_errors() -> None:
    with pytest.raises(MaskingConfigError, match="unknown detector"):
        engine([{"name": "x", "detectors": ["nope"]}]).masker(["x"])
    with pytest.raises(MaskingConfigError, match="hmac_key"):
        MaskingEngine(
            MaskingSpec.model_validate(
                {"profiles": [{"name": "h", "columns": [{"match": "a", "strategy": "hash"}]}]}
            )
        ).masker(["h"])
    with pytest.raises(MaskingConfigError, match="shadows"):
        engine([{"name": "x", "custom_detectors": [{"name": "email", "regex": "x"}]}]).masker(["x"])


def test_custom_detectors_apply() -> None:
    m = engine(
        [
            {
                "name": "c",
                "detectors": [],
                "custom_detectors": [
                    {"name": "employee_id", "regex": "EMP-[0-9]{6}", "strategy": "hash"},
                    {"name": "codename", "words": ["bluebird"]},
                ],
            }
        ]
    ).masker(["c"])
    text, stats = m.mask_text("EMP-123456 works on Bluebird")
    assert text.startswith("h:")
    assert text.endswith("works on [REDACTED:codename]")
    assert dict(stats.by_detector) == {"employee_id": 1, "codename": 1}


# -- properties ---------------------------------------------------------------

PII = st.sampled_from(
    [
        "jane.doe@example.com",
        "bob_smith@corp.org",
        "(212) 555-0143",
        "+44 20 7946 0958",
        "123-45-6789",
        "4111 1111 1111 1111",
        "5555555555554444",
        "DE89 3704 0044 0532 0130 00",
        "8.8.8.8",
        "10.20.30.40",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    ]
)
# Filler that no detector can fire on: lowercase letters and spaces only,
# not ending in a version marker ("version 10.1.2.3" is not an address).
FILLER = st.text(alphabet=string.ascii_lowercase + " ", max_size=30).filter(
    lambda s: not s.rstrip().endswith(("v", "version", "release", "firmware"))
)


@st.composite
def pii_rows(draw: st.DrawFn) -> tuple[list[list[bytes | None]], list[str]]:
    rows: list[list[bytes | None]] = []
    inserted: list[str] = []
    for _ in range(draw(st.integers(1, 8))):
        row: list[bytes | None] = []
        for _ in range(3):
            kind = draw(st.integers(0, 2))
            if kind == 0:
                row.append(None)
            elif kind == 1:
                row.append(draw(FILLER).encode())
            else:
                pii = draw(PII)
                inserted.append(pii)
                row.append(f"{draw(FILLER)} {pii} {draw(FILLER)}".encode())
        rows.append(row)
    return rows, inserted


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=pii_rows())
def test_inserted_pii_never_leaks_and_clean_values_are_untouched(
    content_masker: Masker, data: tuple[list[list[bytes | None]], list[str]]
) -> None:
    rows, inserted = data
    rm = content_masker.prepare([col("a"), col("b"), col("c")])
    assert rm is not None
    out, _ = rm.mask_rows(rows)
    blob = b"\n".join(v for row in out for v in row if v is not None)
    for pii in inserted:
        assert pii.encode() not in blob
    for before, after in zip(rows, out, strict=True):
        for b, a in zip(before, after, strict=True):
            if b is None or b.decode().strip(string.ascii_lowercase + " ") == "":
                assert a == b


TEXT_MASKER = engine([{"name": "p"}]).masker(["p"])


@settings(max_examples=500)
@given(text=st.text())
def test_mask_text_never_raises(text: str) -> None:
    out, _ = TEXT_MASKER.mask_text(text)
    assert isinstance(out, str)


def test_hmac_key_is_used_for_hash() -> None:
    a = MaskingEngine(
        MaskingSpec.model_validate(
            {"profiles": [{"name": "h", "detectors": [{"name": "email", "strategy": "hash"}]}]}
        ),
        hmac_key=KEY,
    ).masker(["h"])
    assert a.mask_text("a@b.com")[0] == a.mask_text("a@b.com")[0]
