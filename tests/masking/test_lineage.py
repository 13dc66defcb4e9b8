"""Lineage: output columns mapped to the base columns they are derived from."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.masking.lineage import StaticCatalog, analyze, result_lineage
from sluice.masking.model import OPAQUE, ColumnLineage, ColumnOrigin, TableRef

CATALOG = StaticCatalog(
    tables={
        ("public", "customers"): ["id", "name", "email", "ssn"],
        ("public", "orders"): ["id", "customer_id", "total", "note"],
        ("crm", "contacts"): ["id", "phone"],
        ("public", "customer_emails"): ["cid", "mail"],
    },
    views={("public", "customer_emails"): "SELECT id, lower(email) FROM customers"},
    search_path=("public", "crm"),
)


def o(table: str, column: str, schema: str = "public") -> ColumnOrigin:
    return ColumnOrigin(schema=schema, table=table, column=column)


def origins(sql: str, catalog: StaticCatalog | None = CATALOG) -> list[set[ColumnOrigin]]:
    (stmt,) = analyze(sql, catalog)
    assert stmt.columns is not None
    return [set(c.lineage.origins) for c in stmt.columns]


EMAIL, SSN, NAME, CID = (
    o("customers", "email"),
    o("customers", "ssn"),
    o("customers", "name"),
    o("customers", "id"),
)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT email FROM customers", [{EMAIL}]),
        ("SELECT c.email AS contact FROM public.customers AS c", [{EMAIL}]),
        ("SELECT upper(c.email) || '!' FROM customers c", [{EMAIL}]),
        ("SELECT substring(ssn from 1 for 3)::int FROM customers", [{SSN}]),
        (
            "SELECT encode(convert_to(ssn, 'UTF8'), 'base64'), md5(email) FROM customers",
            [{SSN}, {EMAIL}],
        ),
        ("SELECT CASE WHEN id > 1 THEN email ELSE name END FROM customers", [{CID, EMAIL, NAME}]),
        ("SELECT json_build_object('e', email, 'n', name) FROM customers", [{EMAIL, NAME}]),
        ("SELECT string_agg(ssn, ',') FROM customers GROUP BY name", [{SSN}]),
        ("SELECT array_agg(email ORDER BY id) FROM customers", [{EMAIL, CID}]),
        ("SELECT to_jsonb(c) FROM customers c", [{CID, NAME, EMAIL, SSN}]),
        ("SELECT row_to_json(c.*) FROM customers c", [{CID, NAME, EMAIL, SSN}]),
        ("SELECT ROW(email, 1) FROM customers", [{EMAIL}]),
        ("SELECT count(*), count(ssn) FROM customers", [set(), {SSN}]),
        (
            "SELECT o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id",
            [{o("orders", "total")}, {EMAIL}],
        ),
        (
            "WITH x AS (SELECT email AS e, ssn FROM customers) SELECT e, s.s FROM x, "
            "(SELECT ssn AS s FROM x) s",
            [{EMAIL}, {SSN}],
        ),
        (
            "SELECT (SELECT max(email) FROM customers c WHERE c.id = o.customer_id) FROM orders o",
            [{EMAIL}],
        ),
        (
            "SELECT email FROM customers UNION ALL SELECT note FROM orders",
            [{EMAIL, o("orders", "note")}],
        ),
        ("SELECT phone FROM contacts", [{o("contacts", "phone", "crm")}]),
        ("SELECT mail FROM customer_emails", [{EMAIL}]),
        ("SELECT a FROM (VALUES (1), (2)) v(a)", [set()]),
        ("SELECT x.e FROM (SELECT email FROM customers) AS x(e)", [{EMAIL}]),
        ("SELECT t.e FROM customers c, LATERAL (SELECT c.email AS e) t", [{EMAIL}]),
        ("SELECT email, n FROM customers, generate_series(1, 3) AS g(n)", [{EMAIL}, set()]),
        ("UPDATE customers SET name = 'x' RETURNING ssn", [{SSN}]),
        ("COPY (SELECT email FROM customers) TO STDOUT", [{EMAIL}]),
        ("COPY customers (ssn) TO STDOUT", [{SSN}]),
        (
            "WITH RECURSIVE r(n, e) AS (SELECT 1, email FROM customers UNION ALL "
            "SELECT n + 1, e FROM r WHERE n < 3) SELECT e FROM r",
            [{EMAIL}],
        ),
    ],
)
def test_origins(sql: str, expected: list[set[ColumnOrigin]]) -> None:
    assert origins(sql) == expected


def test_star_with_catalog_expands() -> None:
    assert origins("SELECT * FROM customers") == [{CID}, {NAME}, {EMAIL}, {SSN}]
    got = origins("SELECT c.*, o.total FROM customers c JOIN orders o ON true")
    assert got == [{CID}, {NAME}, {EMAIL}, {SSN}, {o("orders", "total")}]


def test_unresolved_star_names_the_table() -> None:
    lin = result_lineage("SELECT 1 AS k, * FROM secret.cards", 4)
    table = TableRef(schema="secret", table="cards")
    assert lin[0] == ColumnLineage()
    assert all(table in x.unresolved for x in lin[1:])
    # With the catalog but an unknown table: the same.
    lin2 = result_lineage("SELECT * FROM nowhere", 2, CATALOG)
    assert all(TableRef(schema=None, table="nowhere") in x.unresolved for x in lin2)


def test_no_catalog_named_columns_still_resolve() -> None:
    got = origins("SELECT c.ssn, email FROM customers c", catalog=None)
    assert got == [
        {ColumnOrigin(schema="", table="customers", column="ssn")},
        {ColumnOrigin(schema="", table="customers", column="email")},
    ]


def test_opaque_cases() -> None:
    assert result_lineage("FETCH 10 FROM cur", 2) == [OPAQUE, OPAQUE]
    assert result_lineage("SELECT my_function(id) FROM customers", 1, CATALOG) == [OPAQUE]
    assert result_lineage("SELEC broken", 1) == [OPAQUE]
    assert result_lineage("SELECT nosuchcol FROM customers", 1, CATALOG) == [OPAQUE]
    assert result_lineage("SELECT 1, 2", 3) == [OPAQUE] * 3  # width mismatch
    assert result_lineage("SELECT 1", 1, statement=5) == [OPAQUE]


def test_non_row_statements() -> None:
    (stmt,) = analyze("CREATE TABLE t (a int)")
    assert stmt.columns == ()
    (explain,) = analyze("EXPLAIN SELECT ssn FROM customers", CATALOG)
    assert explain.for_result(1) == [ColumnLineage()]


def test_multiple_statements() -> None:
    stmts = analyze("SELECT email FROM customers; SELECT total FROM orders", CATALOG)
    assert [s.for_result(1)[0].origins for s in stmts] == [
        frozenset({EMAIL}),
        frozenset({o("orders", "total")}),
    ]


def test_recursive_view_is_opaque() -> None:
    cat = StaticCatalog(tables={("public", "v"): ["a"]}, views={("public", "v"): "SELECT a FROM v"})
    assert result_lineage("SELECT a FROM v", 1, cat) == [OPAQUE]


@settings(max_examples=200, deadline=None)
@given(sql=st.text(max_size=200))
def test_analyze_never_raises(sql: str) -> None:
    for stmt in analyze(sql, CATALOG):
        assert all(isinstance(x, ColumnLineage) for x in stmt.for_result(3))


@settings(max_examples=100, deadline=None)
@given(
    sql=st.sampled_from(
        [
            "SELECT {} FROM customers c",
            "SELECT x FROM (SELECT {} AS x FROM customers c) s",
            "WITH w AS (SELECT {} AS x FROM customers c) SELECT x FROM w",
        ]
    ),
    wrap=st.lists(
        st.sampled_from(["upper({})", "md5({})", "({})::text", "{} || 'x'", "coalesce({}, '')"]),
        max_size=4,
    ),
)
def test_any_wrapping_keeps_lineage(sql: str, wrap: list[str]) -> None:
    expr = "c.ssn"
    for w in wrap:
        expr = w.format(expr)
    (stmt,) = analyze(sql.format(expr), CATALOG)
    assert stmt.for_result(1)[0].origins == {SSN}


# Column masking reuses a text's lineage for texts that differ only in their
# numbers and string literals (pg_masking `_lineage_text_key`): lineage must
# not depend on a literal's value.
LITERAL_TEMPLATES = [
    "SELECT email FROM customers WHERE name = {s} LIMIT {n}",
    "SELECT {s} AS email, ssn FROM customers WHERE id = {n}",
    "SELECT CASE WHEN name = {s} THEN ssn ELSE {s} END FROM customers",
    "SELECT coalesce(email, {s}), substr(ssn, {n}, {n}) FROM customers",
    "SELECT (SELECT email FROM customers WHERE id = {n}) AS e, {n} AS k",
    "SELECT * FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.note = {s}",
    "SELECT x FROM (SELECT ssn || {s} AS x FROM customers) s",
    "SELECT {s}::regclass, {s}::text AS ssn",
    "SELECT json_build_object({s}, ssn) FROM customers",
    "SELECT * FROM (VALUES ({s}, {n})) v(email, id)",
    "SELECT mail FROM customer_emails WHERE cid = {n}",
    "SELECT email FROM customers UNION ALL SELECT {s}",
]
LITERAL_VALUES = st.sampled_from(
    ["'ssn'", "'email'", "''", "'a''b'", "E'x\\'y'", "$$customers$$", "'id'"]
)


@settings(max_examples=200, deadline=None)
@given(
    template=st.sampled_from(LITERAL_TEMPLATES),
    first=st.tuples(LITERAL_VALUES, st.integers(10000, 99999)),  # same digit count
    second=st.tuples(LITERAL_VALUES, st.integers(10000, 99999)),
)
def test_lineage_does_not_depend_on_literal_values(
    template: str, first: tuple[str, int], second: tuple[str, int]
) -> None:
    from sluice.proxy.pg_masking import _lineage_text_key

    a = template.format(s=first[0], n=first[1])
    b = template.format(s=second[0], n=second[1])
    # Standard literals are keyed without the lexer, E'' and dollar quotes with it.
    standard = {v for v in (first[0], second[0]) if not v.startswith(("E", "$"))}
    if len(standard) in (0, 2) or first[0] == second[0]:
        assert _lineage_text_key(a) == _lineage_text_key(b)
    (left,) = analyze(a, CATALOG)
    (right,) = analyze(b, CATALOG)
    assert left == right


def test_names_and_literals_do_not_share_a_lineage_key() -> None:
    from sluice.proxy.pg_masking import _lineage_text_key

    assert _lineage_text_key("SELECT email FROM customers") != _lineage_text_key(
        "SELECT 'email' FROM customers"
    )
    assert _lineage_text_key('SELECT "ssn" FROM customers') != _lineage_text_key(
        'SELECT "id" FROM customers'
    )


def test_a_relation_missing_from_a_complete_catalog_is_opaque() -> None:
    """The proxy's catalog lists every relation outside the system schemas:
    one it does not list was made since (maybe a view over anything)."""
    complete = StaticCatalog(
        tables={("public", "people"): ["id", "balance"]},
        complete=True,
        system_relations=frozenset({"pg_class"}),
    )
    assert result_lineage("SELECT id, b FROM late_view", 2, complete) == [OPAQUE, OPAQUE]
    assert result_lineage("SELECT * FROM newschema.t", 2, complete) == [OPAQUE, OPAQUE]
    for sql in ("SELECT relname FROM pg_class", "SELECT x FROM pg_catalog.whatever"):
        assert not result_lineage(sql, 1, complete)[0].opaque
    # Without a complete catalog, an unknown table only answers to its own rules.
    assert not result_lineage("SELECT id FROM late_view", 1, CATALOG)[0].opaque
