"""Verdicts shared by texts that differ only in their string literals.

The verdict cache keys a plain query or DML by its text with numbers and
string literals blanked (`lexed_keys`), when its analysis read no literal's
value (`StatementInfo.literal_blind`). These tests hold a warm cache to the
verdict a fresh judgement gives, for texts whose literals do matter too.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.policy import Allow, Block, PolicyEngine, RequireApproval
from sluice.policy import engine as engine_module
from sluice.policy.sql import LITERAL_MARK, classify, lexed_keys

from .conftest import compile_policies, query

POLICY = {
    "name": "agents",
    "extends": "ai-agent",
    "rules": [
        {
            "name": "mask-customers",
            "when": {"tables": ["public.customers"]},
            "action": "mask",
            "mask_profiles": ["pii"],
        },
        {"name": "no-billing", "when": {"schemas": ["billing"]}, "action": "block"},
    ],
}

# Texts with `{}` where a string literal goes. Some are plain queries and DML
# (their verdicts are shared); in the others a literal's value can change the
# verdict (a setting's name, a self-comparison, a file name, a block's body).
TEMPLATES = [
    "SELECT * FROM customers WHERE email = {}",
    "SELECT id, {} AS label FROM orders WHERE note LIKE {} LIMIT 5",
    "UPDATE orders SET note = {} WHERE id = 7",
    "DELETE FROM orders WHERE note = {}",
    "DELETE FROM orders WHERE note || {} = note || {}",
    "DELETE FROM orders WHERE {} = {}",
    "INSERT INTO orders (note) VALUES ({}) RETURNING id",
    "SELECT set_config({}, {}, false)",
    "SELECT set_config({}, 'x', false) FROM orders WHERE note = {}",
    "SELECT current_setting({})",
    "SET application_name = {}",
    "SET search_path = {}",
    "COPY orders TO {}",
    "DO {}",
    "EXPLAIN (FORMAT {}) DELETE FROM orders",
    "SELECT * FROM billing.invoices WHERE ref = {}",
    "WITH d AS (DELETE FROM orders WHERE note = {} RETURNING *) SELECT * FROM d",
    "SELECT pg_read_file({})",
    "SELECT nextval({})",
    "SELECT {}::regclass",
]

# Literal values, written as PostgreSQL would read them; some matter where
# they stand (a setting's name, the same value on both sides).
LITERALS = st.sampled_from(
    [
        "'a'",
        "'b'",
        "''",
        "'search_path'",
        "'statement_timeout'",
        "'role'",
        "'public, evil'",
        "'/etc/passwd'",
        "$$BEGIN PERFORM 1; END$$",
        "$$SET search_path = evil$$",
        "$q$x$q$",
        "E'it\\'s'",
        "'it''s'",
        "'json'",
        "'customers'",
        "'a'\n'continued'",
    ]
)


def _fill(template: str, values: list[str]) -> str:
    return template.format(*values[: template.count("{}")])


def _decide(engine: PolicyEngine, sql: str) -> object:
    return engine.decide(query(sql), policy_name="agents", prepared={})


@pytest.fixture(scope="module")
def warm() -> PolicyEngine:
    return compile_policies(POLICY)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(TEMPLATES),
    st.lists(LITERALS, min_size=2, max_size=2),
    st.lists(LITERALS, min_size=2, max_size=2),
)
def test_a_warm_cache_gives_what_a_fresh_judgement_gives(
    warm: PolicyEngine, template: str, first: list[str], second: list[str]
) -> None:
    # The first text warms the cache; the second must not get a verdict its
    # own literals would not give.
    _decide(warm, _fill(template, first))
    sql = _fill(template, second)
    fresh = compile_policies(POLICY).explain(query(sql), policy_name="agents").verdict
    assert _decide(warm, sql) == fresh


def test_plain_queries_that_differ_in_literals_are_judged_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = compile_policies(POLICY)
    judged: list[str] = []
    explain = PolicyEngine.explain

    def counting(self: PolicyEngine, event: object, **kw: object) -> object:
        judged.append(getattr(event, "sql", ""))
        return explain(self, event, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(PolicyEngine, "explain", counting)
    for email in ("a@example.com", "b@example.com", "o'brien@example.com"):
        escaped = email.replace("'", "''")
        verdict = _decide(engine, f"SELECT * FROM customers WHERE email = '{escaped}'")
        assert isinstance(verdict, Allow)
        assert verdict.mask is not None
        assert verdict.mask.profiles == ("pii",)
    assert len(judged) == 1
    for note in ("x", "y"):
        verdict = _decide(engine, f"UPDATE orders SET note = '{note}' WHERE id = 3")
        assert isinstance(verdict, RequireApproval)
    assert len(judged) == 2


def test_a_setting_name_in_a_literal_is_judged_per_text() -> None:
    engine = compile_policies(POLICY)
    harmless = _decide(engine, "SELECT set_config('application_name', 'x', false)")
    assert isinstance(harmless, Allow)
    admin = _decide(engine, "SELECT set_config('role', 'postgres', false)")
    assert isinstance(admin, Block)
    assert admin.rule == "no-server-admin"


def test_a_self_comparison_does_not_restrict_whatever_its_literals() -> None:
    engine = compile_policies(POLICY)
    # Judged first, a comparison of different values must not let the same
    # comparison of equal values (every row) through, nor the other way round.
    for sql in (
        "DELETE FROM orders WHERE note || 'a' = note || 'b'",
        "DELETE FROM orders WHERE note || 'a' = note || 'a'",
    ):
        verdict = _decide(engine, sql)
        assert isinstance(verdict, Block)
        assert verdict.rule == "no-unbounded-writes"
    assert classify("DELETE FROM orders WHERE note = 'a'").statements[0].has_restricting_where


@pytest.mark.parametrize(
    ("sql", "blind"),
    [
        ("SELECT * FROM t WHERE a = 'x'", True),
        ("UPDATE t SET a = 'x' WHERE id = 1", True),
        ("WITH d AS (DELETE FROM t WHERE a = 'x' RETURNING *) SELECT * FROM d", True),
        ("SELECT set_config('application_name', 'x', false)", False),
        ("SET application_name = 'x'", False),
        ("COPY t TO '/tmp/x'", False),
        ("DO $$BEGIN END$$", False),
        ("EXPLAIN (FORMAT 'json') SELECT 1", False),
        ("PREPARE p AS SELECT 'x'", False),
        ("SELECT pg_read_file('/etc/passwd')", False),
        ("SELECT 'x' FROM", False),  # unparsable
    ],
)
def test_which_statements_are_literal_blind(sql: str, blind: bool) -> None:
    assert [s.literal_blind for s in classify(sql).statements] == [blind]


def test_the_blanked_key_marks_each_string_literal() -> None:
    sql = "SELECT 'a', E'b\\'c', $$d$$, $t$e$t$, 12, U&'f' FROM t WHERE x = 'g'\n'h'"
    keys = lexed_keys(sql)
    assert keys is not None
    numbers, blanked = keys
    assert numbers == sql.replace("12", "00")
    m = LITERAL_MARK
    # U&'...' is another token kind, kept as written; a literal continued on
    # the next line is one literal.
    assert blanked == f"SELECT {m}, {m}, {m}, {m}, 00, U&'f' FROM t WHERE x = {m}"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM t WHERE a = 1",  # no string literal
        'SELECT "quoted identifier" FROM t',
        "SELECT 'x', '\x00'",  # the mark itself: texts could not be told apart
        "SELECT 'x', \x00",
    ],
)
def test_no_blanked_key_without_literals_or_with_the_mark(sql: str) -> None:
    keys = lexed_keys(sql)
    assert keys is None or keys[1] is None


def test_option_words_leave_the_text_uncached() -> None:
    assert lexed_keys("EXPLAIN (ANALYZE 'off') DELETE FROM t") is None


def test_shared_verdicts_stay_per_identity_and_policy() -> None:
    engine = compile_policies(
        POLICY,
        {
            "name": "oncall",
            "extends": "ai-agent",
            "rules": [
                {
                    "name": "oncall-writes",
                    "subjects": {"groups": ["oncall"]},
                    "when": {"kind": ["update"]},
                    "action": "allow",
                },
            ],
        },
    )
    sql = "UPDATE orders SET note = '{}' WHERE id = 1"
    on_call = engine.decide(query(sql.format("a"), groups=("oncall",)), policy_name="oncall")
    assert isinstance(on_call, Allow)
    other = engine.decide(query(sql.format("b")), policy_name="oncall")
    assert isinstance(other, RequireApproval)
    assert isinstance(_decide(engine, sql.format("c")), RequireApproval)


def test_the_cache_stays_bounded_with_literal_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "VERDICT_CACHE_SIZE", 4)
    engine = compile_policies(POLICY)
    for n in range(20):
        _decide(engine, f"SELECT * FROM t{n} WHERE a = 'x'")
    assert len(engine._verdicts) <= 4
