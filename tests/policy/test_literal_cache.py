"""Verdicts shared by texts that differ only in their string literals.

The verdict cache keys a plain query or DML by its text with numbers and
string literals blanked (`lexed_keys`), when its analysis read no literal's
value (`StatementInfo.literal_blind`). These tests hold a warm cache to the
verdict a fresh judgement gives, for texts whose literals do matter too.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pglast.parser import scan

from sluice.events import QueryOrigin
from sluice.policy import Allow, Block, PolicyEngine, RequireApproval
from sluice.policy import engine as engine_module
from sluice.policy.sql import (
    LITERAL_MARK,
    classify,
    lexed_keys,
    literal_key,
    py_literal_key,
)

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


def _decide_query(engine: PolicyEngine, sql: str) -> object:
    event = query(sql)
    return engine.decide_query(
        event.context, sql, event.origin, event.statement_name, policy_name="agents", prepared={}
    )


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(TEMPLATES),
    st.lists(LITERALS, min_size=2, max_size=2),
    st.lists(LITERALS, min_size=2, max_size=2),
    st.booleans(),
)
def test_decide_query_shares_the_cache_of_decide(
    warm: PolicyEngine, template: str, first: list[str], second: list[str], query_first: bool
) -> None:
    """The proxy's `decide_query` (no event object on a hit) and `decide`
    keep and find verdicts under the same keys, and give the fresh verdict."""
    warmer, answerer = (_decide_query, _decide) if query_first else (_decide, _decide_query)
    warmer(warm, _fill(template, first))
    sql = _fill(template, second)
    fresh = compile_policies(POLICY).explain(query(sql), policy_name="agents").verdict
    assert answerer(warm, sql) == fresh


def test_decide_query_finds_what_decide_kept() -> None:
    engine = compile_policies(POLICY)
    first = _decide(engine, "SELECT * FROM orders WHERE note = 'a' AND id = 1")
    second = _decide_query(engine, "SELECT * FROM orders WHERE note = 'b' AND id = 2")
    third = _decide(engine, "SELECT * FROM orders WHERE note = 'c' AND id = 3")
    assert isinstance(first, Allow)
    assert first is second is third
    assert engine.judged_afresh == 1
    # Not cached (the text names a prepared statement): judged each time, by both.
    _decide_query(engine, "EXECUTE p(1)")
    _decide(engine, "EXECUTE p(1)")
    assert engine.judged_afresh == 3


def test_plain_queries_that_differ_in_literals_are_judged_once() -> None:
    engine = compile_policies(POLICY)
    for email in ("a@example.com", "b@example.com", "o'brien@example.com"):
        escaped = email.replace("'", "''")
        verdict = _decide(engine, f"SELECT * FROM customers WHERE email = '{escaped}'")
        assert isinstance(verdict, Allow)
        assert verdict.mask is not None
        assert verdict.mask.profiles == ("pii",)
    assert engine.judged_afresh == 1
    for note in ("x", "y"):
        verdict = _decide(engine, f"UPDATE orders SET note = '{note}' WHERE id = 3")
        assert isinstance(verdict, RequireApproval)
    assert engine.judged_afresh == 2


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


# The key of texts with standard literals only (no lexer): texts that share
# it must be the same tokens, as PostgreSQL's own lexer sees them, but for the
# values of their numbers and string literals.

LITERAL_KEYS = [
    pytest.param(literal_key, id="used"),
    pytest.param(py_literal_key, id="python"),
]
_LITERAL_ALPHABET = "abxyzEUNBX_&01239 \t\n,.=<>()*;+-/%!|:'\"$\\\x00\u00e9"
_LITERAL_RUN = re.compile(r"'(?:[^']|'')*'")
_NUMBER_RUN = re.compile(r"(?<![A-Za-z0-9_])[0-9]+")


def _shape(text: str) -> list[tuple[str, str]] | None:
    """The lexer's tokens with the values of numbers and string literals hidden."""
    try:
        tokens = scan(text)
    except Exception:
        return None
    hidden = {"ICONST": "#", "FCONST": "#", "SCONST": "'"}
    return [
        (t.name, hidden[t.name] if t.name in hidden else text[t.start : t.end + 1]) for t in tokens
    ]


# Texts made of pieces, literals among them, run together or apart: the
# pieces that make a literal something else (E, U&, N, a digit or a name
# right before it; a comment, a dollar quote, a lone quote) come up often.
_PIECES = st.one_of(
    st.sampled_from(
        [
            "SELECT",
            "a",
            "x1",
            "_b",
            "E",
            "e",
            "U&",
            "N",
            "B",
            "X",
            "&",
            "1",
            "12.5",
            ".5",
            " ",
            " ",
            "\n",
            ",",
            "=",
            "(",
            ")",
            "-",
            "/",
            "*",
            "'",
            "''",
            '"',
            "$$",
            "--",
            "/*",
            "explain",
            "\\",
        ]
    ),
    st.from_regex(r"'(?:[^'\x00]|''){0,5}'", fullmatch=True),
)
_TEXTS = st.one_of(
    st.lists(_PIECES, max_size=12).map("".join),
    st.text(alphabet=_LITERAL_ALPHABET, max_size=50),
)


@settings(max_examples=800, deadline=None)
@given(_TEXTS, st.data())
@pytest.mark.parametrize("key", LITERAL_KEYS)
def test_the_literal_key_hides_only_literal_values(
    key: Callable[[str], str | None], text: str, data: st.DataObject
) -> None:
    blanked = key(text)
    if blanked is None:
        return
    # Other literals and numbers in the places the key hides give the same key...
    literal = st.from_regex(r"'(?:[^'\x00]|''){0,6}'", fullmatch=True)
    number = st.from_regex(r"[0-9]{1,4}", fullmatch=True)
    outside = [
        _NUMBER_RUN.sub(lambda _: data.draw(number), part) for part in _LITERAL_RUN.split(text)
    ]
    other = outside[0] + "".join(data.draw(literal) + part for part in outside[1:])
    assert key(other) == blanked
    # ...and the lexer sees the same tokens with other values.
    assert _shape(other) == _shape(text)
    assert _shape(text) is not None


@pytest.mark.parametrize("key", LITERAL_KEYS)
def test_the_literal_key_refuses_what_needs_the_lexer(key: Callable[[str], str | None]) -> None:
    for sql in (
        "SELECT 1",  # no literal: the plain key's
        "SELECT E'x'",
        "SELECT e'x'",
        "SELECT U&'x'",
        "SELECT B'01'",
        "SELECT X'ff'",
        "SELECT N'x'",
        "SELECT n'x'",
        "SELECT 1'x'",
        "SELECT 'x",  # unterminated
        "SELECT 'x' -- 'y'",
        "SELECT 'x' /* 'y' */",
        "SELECT $$x$$, 'y'",
        "SELECT \"q\", 'y'",
        "EXPLAIN SELECT 'x'",
        "SELECT 'a\x00b'",
        "SELECT 'x' FROM t\u00e9",
    ):
        assert key(sql) is None, sql


@pytest.mark.parametrize("key", LITERAL_KEYS)
def test_the_literal_key_blanks_literals_and_zeroes_numbers(
    key: Callable[[str], str | None],
) -> None:
    m = LITERAL_MARK
    assert key("SELECT 'a''b', c1 FROM t2 WHERE x = 'é' AND n > 12.5") == (
        f"SELECT {m}, c1 FROM t2 WHERE x = {m} AND n > 0.0"
    )
    assert key("SELECT 'explain -- 1e5'") == f"SELECT {m}"
    assert key("'a'\n'b'12") == f"{m}\n{m}0"


@settings(max_examples=3000, deadline=None)
@given(st.one_of(_TEXTS, st.text(max_size=30)))
def test_the_compiled_literal_key_answers_as_the_python_one(text: str) -> None:
    assert literal_key(text) == py_literal_key(text)


def test_the_compiled_literal_key_is_built_where_a_compiler_is() -> None:
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler here: the Python key is used")
    assert literal_key is not py_literal_key


def test_texts_parsed_one_after_another_keep_their_own_verdicts() -> None:
    """A Parse's text keys are remembered per text; a new text is never taken
    for one seen before (compiled code once matched every new text to the
    first one's key)."""
    engine = compile_policies(POLICY)
    context = query("SELECT 1").context
    verdicts = {
        sql: engine.decide_query(context, sql, QueryOrigin.PARSE, None, policy_name="agents")
        for sql in ("DROP TABLE orders", "SELECT 1", "SELECT id FROM orders", "DROP TABLE t")
    }
    assert [type(v).__name__ for v in verdicts.values()] == ["Block", "Allow", "Allow", "Block"]
