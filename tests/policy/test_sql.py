"""Classification of SQL text: kinds, categories, tables, hiding tricks."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pglast.parser import scan

from sluice.policy.prepared import (
    _SEARCH_PATH_WORDS,
    _SEARCH_PATH_WORDS_RE,
    mentions_any,
    mentions_prepared,
    mentions_words,
    py_mentions_any,
)
from sluice.policy.sql import (
    KNOWN_KINDS,
    Category,
    Deallocate,
    Execute,
    Prepare,
    StatementInfo,
    TableRef,
    _not_plain,
    classify,
    is_restricting,
    merge_execution,
    plain_numbers_zeroed,
    py_plain_numbers_zeroed,
    reads_backslashes,
)

C = Category


def one(sql: str) -> StatementInfo:
    statements = classify(sql).statements
    assert len(statements) == 1, statements
    return statements[0]


@pytest.mark.parametrize(
    ("sql", "kind", "category"),
    [
        ("SELECT 1", "select", C.READ),
        ("VALUES (1)", "select", C.READ),
        ("TABLE customers", "select", C.READ),
        ("INSERT INTO t VALUES (1)", "insert", C.WRITE),
        ("UPDATE t SET a = 1 WHERE id = 2", "update", C.WRITE),
        ("DELETE FROM t WHERE id = 2", "delete", C.WRITE),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", "merge", C.WRITE),
        ("DROP TABLE t", "drop_table", C.DDL),
        ("DROP SCHEMA billing CASCADE", "drop_schema", C.DDL),
        ("DROP DATABASE prod", "drop_database", C.DDL),
        ("TRUNCATE t", "truncate", C.WRITE),
        ("CREATE TABLE t (id int)", "create_table", C.DDL),
        ("ALTER TABLE t ADD COLUMN c int", "alter_table", C.DDL),
        ("CREATE INDEX i ON t (a)", "create_index", C.DDL),
        ("CREATE TABLE a AS SELECT * FROM b", "create_table_as", C.DDL),
        ("SELECT * INTO a FROM b", "select_into", C.DDL),
        ("ALTER SYSTEM SET work_mem = '1GB'", "alter_system", C.ADMIN),
        ("SET ROLE postgres", "set_role", C.ADMIN),
        ("SET SESSION AUTHORIZATION postgres", "set_session_authorization", C.ADMIN),
        ("RESET ROLE", "reset_role", C.ADMIN),
        ("SET session_replication_role = replica", "set", C.ADMIN),
        ("GRANT SELECT ON t TO bob", "grant", C.DCL),
        ("REVOKE SELECT ON t FROM bob", "revoke", C.DCL),
        ("GRANT admin TO bob", "grant", C.DCL),
        ("CREATE ROLE bob", "create_role", C.DCL),
        ("CREATE USER bob PASSWORD 'x'", "create_user", C.DCL),
        ("ALTER ROLE bob SUPERUSER", "alter_role", C.DCL),
        ("DROP ROLE bob", "drop_role", C.DCL),
        ("DROP USER bob", "drop_role", C.DCL),
        ("LOAD 'evil.so'", "load", C.ADMIN),
        ("CREATE EXTENSION dblink", "create_extension", C.ADMIN),
        ("DO $$ BEGIN PERFORM 1; END $$", "do", C.PROCEDURAL),
        (
            "CREATE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql",
            "create_function",
            C.PROCEDURAL,
        ),
        ("CREATE PROCEDURE p() AS $$ select 1 $$ LANGUAGE sql", "create_procedure", C.PROCEDURAL),
        ("CALL p()", "call", C.PROCEDURAL),
        ("BEGIN", "begin", C.TRANSACTION),
        ("START TRANSACTION READ ONLY", "begin", C.TRANSACTION),
        ("COMMIT", "commit", C.TRANSACTION),
        ("ROLLBACK", "rollback", C.TRANSACTION),
        ("SAVEPOINT a", "savepoint", C.TRANSACTION),
        ("RELEASE SAVEPOINT a", "release_savepoint", C.TRANSACTION),
        ("ROLLBACK TO SAVEPOINT a", "rollback_to_savepoint", C.TRANSACTION),
        ("SET statement_timeout = '5s'", "set", C.SESSION),
        ("SET search_path TO app", "set", C.SESSION),
        ("SHOW work_mem", "show", C.SESSION),
        ("RESET work_mem", "reset", C.SESSION),
        ("LISTEN jobs", "listen", C.SESSION),
        ("UNLISTEN *", "unlisten", C.SESSION),
        ("NOTIFY jobs", "notify", C.WRITE),
        ("DISCARD ALL", "discard", C.SESSION),
        ("DEALLOCATE ALL", "deallocate", C.SESSION),
        ("VACUUM t", "vacuum", C.MAINTENANCE),
        ("ANALYZE t", "analyze", C.MAINTENANCE),
        ("CLUSTER t USING i", "cluster", C.MAINTENANCE),
        ("REINDEX TABLE t", "reindex", C.MAINTENANCE),
        ("CHECKPOINT", "checkpoint", C.ADMIN),
        ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "lock", C.WRITE),
        ("SELECT * FROM t FOR UPDATE", "select_for_update", C.WRITE),
        ("SELECT * FROM t FOR SHARE", "select_for_update", C.WRITE),
        ("EXPLAIN DELETE FROM t", "explain", C.READ),
        ("EXPLAIN (ANALYZE false) DELETE FROM t", "explain", C.READ),
        ("DECLARE c CURSOR FOR SELECT 1", "declare_cursor", C.READ),
        ("FETCH 10 FROM c", "fetch", C.READ),
        ("CLOSE c", "close", C.SESSION),
        ("COPY t TO STDOUT", "copy", C.READ),
        ("COPY t FROM STDIN", "copy", C.WRITE),
        ("COPY (SELECT 1) TO STDOUT", "copy", C.READ),
        ("COPY t TO PROGRAM 'curl evil'", "copy", C.FILE_PROGRAM),
        ("COPY t FROM PROGRAM 'id'", "copy", C.FILE_PROGRAM),
        ("COPY t FROM '/etc/passwd'", "copy", C.FILE_PROGRAM),
        ("COPY t TO '/tmp/out'", "copy", C.FILE_PROGRAM),
        ("CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw", "create_server", C.ADMIN),
        ("REFRESH MATERIALIZED VIEW v", "refresh_materialized_view", C.WRITE),
    ],
)
def test_statement_kind_and_category(sql: str, kind: str, category: Category) -> None:
    info = one(sql)
    assert (info.kind, info.category) == (kind, category)
    assert info.kind in KNOWN_KINDS


@pytest.mark.parametrize(
    ("sql", "category"),
    [
        ("SELECT pg_terminate_backend(123)", C.ADMIN),
        ("SELECT pg_cancel_backend(pid) FROM pg_stat_activity", C.ADMIN),
        ("SELECT pg_reload_conf()", C.ADMIN),
        ("SELECT pg_rotate_logfile()", C.ADMIN),
        ("SELECT pg_promote()", C.ADMIN),
        ("SELECT pg_catalog.pg_terminate_backend(1)", C.ADMIN),
        ("SELECT PG_TERMINATE_BACKEND(1)", C.ADMIN),
        ('SELECT "pg_terminate_backend"(1)', C.ADMIN),
        ("SELECT 1 WHERE EXISTS (SELECT pg_terminate_backend(1))", C.ADMIN),
        ("SELECT * FROM (SELECT pg_reload_conf()) s", C.ADMIN),
        ("SELECT CASE WHEN true THEN pg_promote() END", C.ADMIN),
        ("SELECT pg_read_file('/etc/passwd')", C.FILE_PROGRAM),
        ("SELECT pg_read_binary_file('/etc/passwd')", C.FILE_PROGRAM),
        ("SELECT * FROM pg_ls_dir('.')", C.FILE_PROGRAM),
        ("SELECT pg_stat_file('postgresql.conf')", C.FILE_PROGRAM),
        ("SELECT lo_import('/etc/passwd')", C.FILE_PROGRAM),
        ("SELECT lo_export(1, '/tmp/x')", C.FILE_PROGRAM),
        ("SELECT * FROM dblink('host=x', 'select 1') AS t(a int)", C.FILE_PROGRAM),
        ("SELECT dblink_exec('host=x', 'drop table t')", C.FILE_PROGRAM),
        ("SELECT set_config('role', 'postgres', false)", C.ADMIN),
        ("SELECT set_config('session_authorization', 'postgres', false)", C.ADMIN),
        ("SELECT set_config(current_setting('x'), 'postgres', false)", C.ADMIN),
        ("SELECT set_config('search_path', 'app', false)", C.READ),
        ("SELECT query_to_xml('delete from t', true, true, '')", C.PROCEDURAL),
        ("SELECT setval('s', 1)", C.WRITE),
        ("UPDATE t SET a = pg_read_file('x') WHERE id = 1", C.FILE_PROGRAM),
        ("INSERT INTO t SELECT pg_terminate_backend(pid) FROM pg_stat_activity", C.ADMIN),
        ("CALL pg_terminate_backend(1)", C.ADMIN),
    ],
)
def test_dangerous_functions_anywhere(sql: str, category: Category) -> None:
    assert one(sql).category == category


def test_plain_explain_does_not_escalate_calls() -> None:
    info = one("EXPLAIN SELECT pg_terminate_backend(1)")
    assert info.category == C.READ
    assert "pg_terminate_backend" in info.functions


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN ANALYZE DELETE FROM t",
        "EXPLAIN (ANALYZE) DELETE FROM t",
        "EXPLAIN (ANALYZE true, BUFFERS) DELETE FROM t",
        "EXPLAIN (analyze on) DELETE FROM t",
        "explain   /* hi */ analyse delete from t",
    ],
)
def test_explain_analyze_is_the_inner_statement(sql: str) -> None:
    info = one(sql)
    assert (info.kind, info.category) == ("delete", C.WRITE)
    assert info.has_restricting_where is False
    assert info.via == ("explain_analyze",)


@pytest.mark.parametrize(
    "sql",
    [
        "WITH d AS (DELETE FROM customers RETURNING *) SELECT * FROM d",
        "WITH d AS (UPDATE customers SET a = 1 RETURNING *) SELECT count(*) FROM d",
        "SELECT * FROM t WHERE id IN (WITH d AS (DELETE FROM customers RETURNING id) "
        "SELECT id FROM d)",
    ],
)
def test_data_modifying_cte_is_a_write(sql: str) -> None:
    info = one(sql)
    assert info.category == C.WRITE
    assert info.kind in {"delete", "update"}
    assert {"delete", "update"} & info.kinds
    assert info.has_restricting_where is False
    assert TableRef(schema=None, name="customers") in info.tables_written


def test_cte_names_are_not_tables() -> None:
    info = one("WITH d AS (SELECT 1) SELECT * FROM d JOIN billing.invoices i ON true")
    assert info.tables == {TableRef(schema="billing", name="invoices")}


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'DROP TABLE customers' AS advice",
        "SELECT drop_count, delete_flag FROM stats",
        "SELECT 1 -- ; DROP TABLE customers",
        "/* DELETE FROM customers */ SELECT 1",
        'SELECT "DROP TABLE x" FROM t',
        "SELECT $$pg_terminate_backend(1)$$",
        "SELECT * FROM t WHERE note LIKE '%pg_read_file%'",
        "SELECT 'x; DELETE FROM t'",
    ],
)
def test_benign_mentions_are_reads(sql: str) -> None:
    analysis = classify(sql)
    assert [s.category for s in analysis.statements] == [C.READ]


def test_case_and_quoting_are_seen_through() -> None:
    assert one("dElEtE fRoM Public.Customers").tables_written == {
        TableRef(schema="public", name="customers")
    }
    assert one('DROP TABLE "public"."customers"').kind == "drop_table"


def test_every_statement_is_classified() -> None:
    analysis = classify("SELECT 1; DELETE FROM t; DROP TABLE x;COMMIT")
    assert [s.kind for s in analysis.statements] == ["select", "delete", "drop_table", "commit"]
    assert [s.text for s in analysis.statements] == [
        "SELECT 1",
        "DELETE FROM t",
        "DROP TABLE x",
        "COMMIT",
    ]


def test_statement_text_with_multibyte_characters() -> None:
    analysis = classify("SELECT 'héllo ☃'; DELETE FROM t")
    assert [s.text for s in analysis.statements] == ["SELECT 'héllo ☃'", "DELETE FROM t"]


def test_unparsable() -> None:
    analysis = classify("SELEC 1; DELETE FROM t")
    assert analysis.unparsable
    (info,) = analysis.statements
    assert info.category == C.UNPARSABLE
    assert info.error is not None
    assert "syntax error" in info.error


def test_empty_text_has_no_statements() -> None:
    assert classify("").statements == ()
    assert classify(" ; -- nothing").statements == ()


def test_tables_read_and_written() -> None:
    info = one("INSERT INTO billing.invoices SELECT * FROM public.orders o JOIN items ON true")
    assert info.tables_written == {TableRef(schema="billing", name="invoices")}
    assert info.tables_read == {
        TableRef(schema="public", name="orders"),
        TableRef(schema=None, name="items"),
    }
    dropped = one("DROP TABLE a.b, c")
    assert dropped.tables_written == {
        TableRef(schema="a", name="b"),
        TableRef(schema=None, name="c"),
    }
    assert one("DROP SCHEMA billing").tables_written == {TableRef(schema="billing", name="*")}


def test_alter_table_drop_column_is_a_drop_kind() -> None:
    assert one("ALTER TABLE t DROP COLUMN email").kinds == {"alter_table", "drop_column"}


@pytest.mark.parametrize(
    ("sql", "restricting"),
    [
        ("DELETE FROM t", False),
        ("DELETE FROM t WHERE true", False),
        ("DELETE FROM t WHERE 1 = 1", False),
        ("DELETE FROM t WHERE 'a' = 'a'", False),
        ("DELETE FROM t WHERE NOT false", False),
        ("DELETE FROM t WHERE id = id", False),
        ("DELETE FROM t WHERE id + 1 = id + 2", False),  # numbers never decide
        ("DELETE FROM t WHERE id + 1 = id - 1", True),
        ("DELETE FROM t WHERE id = 1 OR true", False),
        ("DELETE FROM t WHERE random() < 2", False),
        ("DELETE FROM t WHERE $1", False),
        ("UPDATE t SET a = 1 WHERE 2 > 1", False),
        ("DELETE FROM t WHERE id = 1", True),
        ("DELETE FROM t WHERE true AND id = 1", True),
        ("UPDATE t SET a = 1 WHERE id = $1", True),
        ("DELETE FROM t WHERE CURRENT OF c", True),
        ("DELETE FROM t WHERE id IN (SELECT id FROM s)", True),
        ("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", False),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", True),
        ("WITH d AS (DELETE FROM a) DELETE FROM b WHERE id = 1", False),
    ],
)
def test_restricting_where(sql: str, restricting: bool) -> None:
    assert one(sql).has_restricting_where is restricting


def test_no_where_check_without_update_or_delete() -> None:
    assert one("SELECT 1").has_restricting_where is None
    assert is_restricting(None) is False


def test_prepared_statement_effects() -> None:
    prepared = one("PREPARE p (int) AS DELETE FROM t WHERE id = $1")
    assert prepared.effect == Prepare(name="p")
    assert (prepared.kind, prepared.category) == ("delete", C.WRITE)
    assert one("EXECUTE p (1)").effect == Execute(name="p")
    assert one("EXPLAIN ANALYZE EXECUTE p").effect == Execute(name="p")
    ctas = one("CREATE TABLE x AS EXECUTE p")
    assert ctas.effect == Execute(name="p")
    assert ctas.category == C.DDL
    assert one("DEALLOCATE p").effect == Deallocate(name="p")
    assert one("DEALLOCATE ALL").effect == Deallocate(name=None)
    assert one("DISCARD ALL").effect == Deallocate(name=None)
    assert one("DISCARD PLANS").effect is None


def test_merge_execution_judges_the_prepared_statement() -> None:
    outer = one("EXECUTE p")
    inner = one("PREPARE p AS DELETE FROM t")
    merged = merge_execution(outer, inner, "p")
    assert merged.kind == "delete"
    assert merged.kinds == {"delete"}
    assert merged.category == C.WRITE
    assert merged.has_restricting_where is False
    assert merged.text == "EXECUTE p"
    assert merged.effect is None


def test_classify_is_cached() -> None:
    sql = "SELECT * FROM cached_table_for_test"
    assert classify(sql) is classify(sql)


def test_deep_nesting_does_not_raise() -> None:
    deep = "SELECT " + "(" * 5000 + "1" + ")" * 5000
    analysis = classify(deep)
    assert len(analysis.statements) == 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_classify_never_raises(text: str) -> None:
    analysis = classify(text)
    for statement in analysis.statements:
        assert isinstance(statement.category, Category)


SQL_WORDS = st.sampled_from(
    [
        "SELECT", "DELETE", "FROM", "WHERE", "DROP", "TABLE", "t", "1", "=", ";", "(", ")",
        "WITH", "AS", "EXPLAIN", "ANALYZE", "PREPARE", "EXECUTE", "p", "COPY", "PROGRAM",
        "'x'", "pg_read_file", "UPDATE", "SET", "a", ",", "RETURNING", "*", "INTO", "--",
        "/*", "*/", "$$", "DO", "BEGIN", "COMMIT", "ROLE", "GRANT", "ON", "TO",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(SQL_WORDS, max_size=25).map(" ".join))
def test_classify_never_raises_on_sql_like_text(text: str) -> None:
    classify(text)


def test_texts_differing_only_in_numbers_share_analysis_but_keep_their_text() -> None:
    first = classify("SELECT * FROM t WHERE id = 7; DELETE FROM t WHERE id = 12")
    second = classify("SELECT * FROM t WHERE id = 8; DELETE FROM t WHERE id = 993")
    assert [s.text for s in second.statements] == [
        "SELECT * FROM t WHERE id = 8",
        "DELETE FROM t WHERE id = 993",
    ]
    assert [s.category for s in first.statements] == [s.category for s in second.statements]
    assert second.sql == "SELECT * FROM t WHERE id = 8; DELETE FROM t WHERE id = 993"


def test_explain_option_values_are_not_normalised() -> None:
    on = classify("EXPLAIN (ANALYZE 1) DELETE FROM t")
    off = classify("EXPLAIN (ANALYZE 0) DELETE FROM t")
    assert on.statements[0].category is Category.WRITE
    assert off.statements[0].category is Category.READ


# The plain-text cache key (no lexer): texts that share a key must differ only
# in the digits of numeric literals, as PostgreSQL's own lexer sees them.

_PLAIN_ALPHABET = "abcxyzEob_0123456789 \t\n,.=<>()*;+-/%!|&^~:[]@#"
_NUMBER_RUN = re.compile(r"(?<![A-Za-z0-9_])[0-9]+")
PLAIN_KEYS = [
    pytest.param(plain_numbers_zeroed, id="used"),
    pytest.param(py_plain_numbers_zeroed, id="python"),
]


def _tokens(text: str) -> list[tuple[str, str]] | None:
    """The lexer's tokens, numbers of either kind shown alike."""
    try:
        tokens = scan(text)
    except Exception:
        return None
    return [
        ("NUMBER", "#") if t.name in ("ICONST", "FCONST") else (t.name, text[t.start : t.end + 1])
        for t in tokens
    ]


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=_PLAIN_ALPHABET, max_size=60), st.data())
def test_plain_key_hides_only_numeric_literals(text: str, data: st.DataObject) -> None:
    key = plain_numbers_zeroed(text)
    if key is None:
        return
    # Any other digits in the places the key hides give the same key...
    other = _NUMBER_RUN.sub(lambda _: data.draw(st.from_regex(r"[0-9]{1,6}", fullmatch=True)), text)
    assert plain_numbers_zeroed(other) == key
    # ...and the lexer sees the same statement with other numbers.
    assert _tokens(other) == _tokens(text)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM t WHERE name = 'a1'",  # a string
        'SELECT * FROM "t 1"',  # a quoted identifier
        "SELECT $1",  # a parameter
        "SELECT $$1$$",  # a dollar quote
        "SELECT 1 -- 2",  # a comment
        "SELECT 1 /* 2 */",
        "EXPLAIN (ANALYZE 0) SELECT 1",  # option values
        "VACUUM t",
        "analyse t",
        "explain select 1",
        "SELECT * FROM t\u00a01",  # non-ASCII: PostgreSQL reads it as part of a name
        "SELECT 0x1F",  # numbers run into letters
        "SELECT 1e5",
        "SELECT 1_000",
    ],
)
@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_plain_key_refuses_texts_it_cannot_read_without_the_lexer(
    key: Callable[[str], str | None], sql: str
) -> None:
    assert key(sql) is None


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_plain_key_zeroes_numbers_but_not_names(key: Callable[[str], str | None]) -> None:
    sql = "SELECT c1, 12.5 FROM t2 WHERE aid = 48213 AND x_9 > .5"
    assert key(sql) == "SELECT c1, 0.0 FROM t2 WHERE aid = 0 AND x_9 > .0"
    assert key("7 a") == "0 a"
    assert key("") == ""
    assert key("a7 9") == "a7 0"


def test_the_compiled_plain_key_is_built_where_a_compiler_is() -> None:
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler here: the Python key is used")
    assert plain_numbers_zeroed is not py_plain_numbers_zeroed


# Letters of the option words, comment starts, non-ASCII and control characters.
_KEY_ALPHABET = _PLAIN_ALPHABET + "EXPLAINVCUMZSexplaincumzs-/*'$\"\x00\x0b\x0c\r\u00e9\u212a"


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.text(alphabet=_KEY_ALPHABET, max_size=60), st.text(max_size=30)))
def test_the_compiled_plain_key_answers_as_the_python_one(text: str) -> None:
    assert plain_numbers_zeroed(text) == py_plain_numbers_zeroed(text)


# The regex `_not_plain` stands for, kept here as the reference.
_NOT_PLAIN_REFERENCE = re.compile(
    r"explain|analy[sz]e|vacuum|--|/\*|(?<![A-Za-z0-9_])[0-9]+[A-Za-z_]", re.IGNORECASE
)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=_PLAIN_ALPHABET + "EXPLAINVCUMZSexplaincumzs-/*", max_size=40))
def test_the_not_plain_test_answers_as_its_regex(text: str) -> None:
    assert _not_plain(text) == (_NOT_PLAIN_REFERENCE.search(text) is not None)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="prepaREXECUTdlocisPEXAD ;\u017f\u212a\u0131\u0130\u00e91", max_size=30))
def test_the_prepared_statement_prefilter_answers_as_its_regex(text: str) -> None:
    """ASCII texts take plain substring tests; others the regex itself."""
    reference = re.compile("prepare|execute|deallocate|discard", re.IGNORECASE)
    assert mentions_prepared(text) == (reference.search(text) is not None)
    assert mentions_prepared(text.upper()) == (reference.search(text.upper()) is not None)


_SEARCH_PATH_ALPHABET = "search_pthSEARCH_PTHconfigCONFIGu&U ;\u017f\u212a\u0131\u0130\u00e91"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=_SEARCH_PATH_ALPHABET, max_size=30))
def test_the_search_path_prefilter_answers_as_its_regex(text: str) -> None:
    """`changes_search_path` parses only texts its pre-filter lets through."""
    reference = re.compile("search_path|set_config|u&", re.IGNORECASE)
    for sample in (text, text.upper(), text.lower()):
        expected = reference.search(sample) is not None
        assert mentions_words(sample, _SEARCH_PATH_WORDS, _SEARCH_PATH_WORDS_RE) == expected


# Words of the pre-filters and their letters in other cases; `\u212a` (Kelvin)
# and `\u017f` (long s) fold to ASCII letters, so non-ASCII goes to the regex.
_WORD_ALPHABET = "prepaREXECUTdlocisPEXAD_&u ;search\u017f\u212a\u00e9\x00"
_WORDS = st.lists(st.text(alphabet="prepaexcutdlosiRE_&u", min_size=0, max_size=8), max_size=6).map(
    tuple
)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=_WORD_ALPHABET, max_size=40), _WORDS)
def test_the_compiled_word_prefilter_answers_as_the_python_one(
    text: str, words: tuple[str, ...]
) -> None:
    """Capital letters in a word never match, as in `sql.lower()`."""
    assert mentions_any(text, words) == py_mentions_any(text, words)
    if text.isascii():
        low = text.lower()
        assert mentions_any(text, words) == any(word in low for word in words)
    else:
        assert mentions_any(text, words) is None


def test_the_compiled_word_prefilter_is_built_where_a_compiler_is() -> None:
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler here: the Python pre-filter is used")
    assert mentions_any is not py_mentions_any


@pytest.mark.parametrize(
    ("sql", "found"),
    [
        ("SELECT 1", False),
        ("PREPARE", True),  # the whole text
        ("x ExEcUtE", True),  # at the end
        ("execut", False),  # cut short at the end
        ("DEALLOCATEdiscard", True),
        ("SELECT * FROM t WHERE a = 'prep are'", False),
    ],
)
def test_the_word_prefilter_finds_words_in_any_case(sql: str, found: bool) -> None:
    words = ("prepare", "execute", "deallocate", "discard")
    assert mentions_any(sql, words) is found
    assert mentions_words(sql, words, re.compile("|".join(words), re.IGNORECASE)) is found


def test_the_word_prefilter_answers_from_memory_as_it_did_at_first() -> None:
    """The last text's lower case and answers are kept: asked again, with the
    same lists, lists built anew, more lists than it keeps, or a new text of
    the same characters, it answers as at first."""
    sql = "SELECT * FROM t WHERE note = 'Please EXECUTE'"
    lists = [(f"absent{i}",) for i in range(10)] + [("prepare", "execute"), ("password",)]
    for _ in range(3):
        for words in lists:
            rebuilt = (*words,)  # a new tuple of the same words
            expected = any(word in sql.lower() for word in words)
            assert mentions_any(sql, words) is expected
            assert mentions_any(sql, rebuilt) is expected
    assert mentions_any("".join(["SELECT 1 -- ", "execute"]), ("execute",)) is True
    assert mentions_any("SELECT 1", ("execute",)) is False
    assert mentions_any("".join(["SELECT 1 -- ", "execute"]), ("execute",)) is True


def test_the_word_prefilter_keeps_no_long_text() -> None:
    """A statement may be tens of MB: past 64 Ki characters it is answered
    without being kept (no reference to it, no lower-case copy) and the
    text kept before stays kept."""
    short = "".join(["SELECT 1 -- ", "EXECUTE"])
    assert mentions_any(short, ("execute",)) is True
    for found, tail in ((True, " PREPARE s"), (False, " nothing")):
        long = "x" * (64 * 1024) + tail
        references = sys.getrefcount(long)
        assert mentions_any(long, ("prepare",)) is found
        assert mentions_any(long, ("prepare",)) is found
        assert sys.getrefcount(long) == references
    assert mentions_any(short, ("execute",)) is True
    assert mentions_any(short, ("prepare",)) is False


def test_the_word_prefilter_survives_a_text_whose_release_asks_it_again() -> None:
    """Freeing the text it kept may run Python code (a str subclass's
    __del__) that asks again: the memory stays whole and the answers right."""
    answers: list[bool | None] = []

    class Asking(str):
        def __del__(self) -> None:
            answers.append(mentions_any("x EXECUTE y", ("execute",)))
            answers.append(mentions_any("nothing here", ("execute",)))

    assert mentions_any(Asking("PREPARE s AS SELECT 1"), ("prepare",)) is True
    assert mentions_any("SELECT 2", ("prepare", "execute")) is False  # releases the subclass
    assert answers == [True, False]
    assert mentions_any("SELECT 2", ("prepare", "execute")) is False
    assert mentions_any("EXECUTE s", ("execute",)) is True


def test_the_word_prefilter_refuses_what_it_cannot_read() -> None:
    with pytest.raises(TypeError):
        mentions_any(b"SELECT", ("select",))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        mentions_any("SELECT", ["select"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ASCII"):
        mentions_any("SELECT", ("s\u00e9lect",))
    many = (*(f"w{i}" for i in range(40)), "lect")
    assert mentions_any("SELECT", many) is True


B = "\\"


@pytest.mark.parametrize(
    ("sql", "reads"),
    [
        ("SELECT 1", False),
        (f"SELECT '{B}''", True),
        (f"SELECT '{B}'' ; DROP TABLE t; --'", True),
        (f"SELECT N'{B}x'", True),  # N'' is a plain string after a keyword
        (f"SELECT 'a' 'b{B}'", True),
        (f"SELECT E'{B}''", False),  # E'' reads the same with either setting
        (f"SELECT $${B}$$, $t${B}$t$", False),
        (f'SELECT "a{B}b"', False),
        (f"SELECT 'a' -- {B}", False),
        (f"SELECT 1 /* {B} */", False),
        (f"SELECT 'unterminated{B}", True),  # the lexer rejects it: counted
        # Offsets count characters: text before the literal takes more bytes.
        (f"SELECT 'ééééééééééééééééééééé' AS a, 'b{B}c'", True),
    ],
)
def test_which_texts_read_backslashes(sql: str, reads: bool) -> None:
    """A backslash in a plain '...' string is the one place where
    standard_conforming_strings changes how PostgreSQL lexes a text."""
    assert reads_backslashes(sql) is reads


@pytest.mark.parametrize(
    ("sql", "from_data"),
    [
        ("SELECT set_config('my.v', balance::text, false) FROM people", True),
        ("SELECT set_config('my.v', (SELECT max(x) FROM t)::text, false)", True),
        ("SELECT 1 WHERE set_config('a.b', upper(name), true) IS NOT NULL", True),
        ("SELECT set_config('my.v', 'constant', false)", False),
        ("SELECT set_config('my.v', $1, false)", False),
        ("SELECT set_config('my.v', now()::text, false)", False),
        ("SELECT pg_notify('ch', email) FROM people", True),
        ("SELECT pg_notify('ch', 'done')", False),
    ],
)
def test_settings_set_from_data_are_noted(sql: str, from_data: bool) -> None:
    assert classify(sql).statements[0].side_channel_data is from_data
