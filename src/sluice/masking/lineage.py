"""Column lineage: which base columns each output column of a query is derived from.

Uses pglast (PostgreSQL's own parser). Any expression propagates lineage: a
column computed from `customers.ssn` through functions, casts, concatenation,
`md5`, `encode`, `to_jsonb`, `row_to_json(c)`, `json_build_object`,
`string_agg`, CASE, row constructors or scalar subqueries is treated as
`customers.ssn`. Where lineage cannot be determined it fails closed:

- `SELECT *` / `t.*` of a table the catalog cannot list yields an item of
  unknown width whose lineage names the table as `unresolved`; where the
  catalog is complete (the proxy's), a relation it does not list was made
  since it was read and may be a view over anything: it is `opaque`;
- functions outside a list of built-ins (user functions may read any table),
  statements we cannot see through (FETCH, EXECUTE, CALL) and SQL that does
  not parse are `opaque`: every column rule applies to them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pglast
from pglast import ast

from sluice.masking.model import (
    NO_LINEAGE,
    OPAQUE,
    ColumnLineage,
    ColumnOrigin,
    TableRef,
)

__all__ = [
    "Catalog",
    "ColumnLineage",
    "ColumnOrigin",
    "OutputColumn",
    "StatementLineage",
    "StaticCatalog",
    "TableRef",
    "analyze",
    "result_lineage",
]

# Nesting (subqueries, CTEs, views within views) beyond this is treated as
# opaque: deeper SQL is unusual and unbounded recursion is a DoS vector.
MAX_LINEAGE_DEPTH = 48
# SQL longer than this is not parsed for lineage (opaque, fail closed).
MAX_LINEAGE_SQL_BYTES = 1024 * 1024


class Catalog(Protocol):
    """What lineage needs from the database catalog (the proxy queries the backend)."""

    @property
    def search_path(self) -> Sequence[str]: ...

    def columns(self, schema: str, table: str) -> Sequence[str] | None:
        """Column names of a table or view in order, or None if it does not exist."""

    def view_definition(self, schema: str, table: str) -> str | None:
        """The SELECT defining a view, or None for a table."""

    def unknown_is_opaque(self, schema: str | None, table: str) -> bool:
        """Whether a relation the catalog does not list is of unknown origin
        throughout: one made since the catalog was read may be a view over
        any table (False: only its own table's rules may apply to it)."""


SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema"})


@dataclass(frozen=True, slots=True, kw_only=True)
class StaticCatalog:
    """A catalog from dictionaries (tests, or a snapshot cached by the proxy).

    `complete`: it lists every relation outside the system schemas, whose
    relation names are `system_relations`; any other relation is then new
    (or temporary), and opaque.
    """

    tables: Mapping[tuple[str, str], Sequence[str]] = field(default_factory=dict)
    views: Mapping[tuple[str, str], str] = field(default_factory=dict)
    search_path: Sequence[str] = ("public",)
    complete: bool = False
    system_relations: frozenset[str] = frozenset()

    def columns(self, schema: str, table: str) -> Sequence[str] | None:
        return self.tables.get((schema, table))

    def view_definition(self, schema: str, table: str) -> str | None:
        return self.views.get((schema, table))

    def unknown_is_opaque(self, schema: str | None, table: str) -> bool:
        if not self.complete:
            return False
        if schema is not None:
            return schema not in SYSTEM_SCHEMAS and not schema.startswith("pg_toast")
        # Unqualified: pg_catalog comes first on every search_path.
        return table not in self.system_relations


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputColumn:
    """One output item; `star` items stand for an unknown number of columns."""

    name: str | None
    lineage: ColumnLineage
    star: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StatementLineage:
    columns: tuple[OutputColumn, ...] | None  # None: opaque statement

    def for_result(self, n: int) -> list[ColumnLineage]:
        """Lineage of each of the `n` columns the backend actually returned."""
        cols = self.columns
        if cols is None:
            return [OPAQUE] * n
        stars = [i for i, c in enumerate(cols) if c.star]
        if not stars:
            if len(cols) != n:
                return [OPAQUE] * n
            return [c.lineage for c in cols]
        prefix, suffix = cols[: stars[0]], cols[stars[-1] + 1 :]
        middle_n = n - len(prefix) - len(suffix)
        if middle_n < 0:
            return [OPAQUE] * n
        middle = NO_LINEAGE
        for c in cols[stars[0] : stars[-1] + 1]:
            middle = middle | c.lineage
        return [c.lineage for c in prefix] + [middle] * middle_n + [c.lineage for c in suffix]


def analyze(sql: str, catalog: Catalog | None = None) -> list[StatementLineage]:
    """Lineage per statement in `sql`. Never raises: failures are opaque."""
    if len(sql.encode("utf-8", "surrogatepass")) > MAX_LINEAGE_SQL_BYTES:
        return [StatementLineage(columns=None)]
    try:
        stmts = pglast.parse_sql(sql)
    except Exception:  # parse errors and parser limits: fail closed
        return [StatementLineage(columns=None)]
    out = []
    for raw in stmts:
        try:
            cols = _Analyzer(catalog).statement(raw.stmt)
        except (_Opaque, RecursionError):
            cols = None
        out.append(StatementLineage(columns=None if cols is None else tuple(cols)))
    return out or [StatementLineage(columns=())]


def result_lineage(
    sql: str, n_columns: int, catalog: Catalog | None = None, *, statement: int = 0
) -> list[ColumnLineage]:
    """Lineage of the `n_columns` result columns of statement number `statement`."""
    stmts = analyze(sql, catalog)
    if statement >= len(stmts):
        return [OPAQUE] * n_columns
    return stmts[statement].for_result(n_columns)


class _Opaque(Exception):
    """Lineage of a statement cannot be determined."""


# Built-in functions whose result depends only on their arguments. Anything
# else (user functions) may read tables itself, so its result is opaque.
SAFE_FUNCTIONS = frozenset(
    """
    abs ceil ceiling floor round trunc sign sqrt cbrt exp ln log log10 power pow mod div
    greatest least random width_bucket degrees radians pi sin cos tan asin acos atan atan2
    length char_length character_length octet_length bit_length lower upper initcap
    substr substring left right lpad rpad trim btrim ltrim rtrim replace translate repeat
    reverse concat concat_ws format position strpos split_part regexp_replace regexp_match
    regexp_matches regexp_substr regexp_split_to_array regexp_split_to_table regexp_like
    regexp_count regexp_instr starts_with overlay ascii chr quote_ident quote_literal
    quote_nullable to_hex md5 sha224 sha256 sha384 sha512 encode decode convert
    convert_from convert_to digest hmac crc32 crc32c unistr normalize casefold string_to_array
    array_to_string array_agg array_append array_prepend array_cat array_length
    array_lower array_upper array_position array_positions array_remove array_replace
    array_dims array_ndims cardinality unnest string_agg json_agg jsonb_agg json_object_agg
    jsonb_object_agg json_build_object jsonb_build_object json_build_array
    jsonb_build_array to_json to_jsonb row_to_json array_to_json json_object jsonb_object
    json_array_elements jsonb_array_elements json_array_elements_text
    jsonb_array_elements_text json_each jsonb_each json_each_text jsonb_each_text
    json_extract_path jsonb_extract_path json_extract_path_text jsonb_extract_path_text
    json_object_keys jsonb_object_keys json_populate_record jsonb_populate_record
    json_populate_recordset jsonb_populate_recordset json_to_record jsonb_to_record
    json_to_recordset jsonb_to_recordset jsonb_set jsonb_insert jsonb_strip_nulls
    json_strip_nulls jsonb_pretty jsonb_path_query jsonb_path_query_array
    jsonb_path_query_first jsonb_path_exists jsonb_path_match json_typeof jsonb_typeof
    json_array_length jsonb_array_length xmlagg xmlelement xmlforest xmlconcat
    query_to_xml count sum avg min max bool_and bool_or every bit_and bit_or bit_xor
    stddev stddev_pop stddev_samp variance var_pop var_samp corr covar_pop covar_samp
    percentile_cont percentile_disc mode any_value range_agg range_intersect_agg
    row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value
    last_value nth_value coalesce nullif now current_date current_time current_timestamp
    localtime localtimestamp clock_timestamp statement_timestamp transaction_timestamp
    date_part date_trunc date_bin extract age make_date make_time make_timestamp
    make_timestamptz make_interval to_char to_date to_number to_timestamp timezone
    justify_days justify_hours justify_interval isfinite generate_series
    generate_subscripts gen_random_uuid uuidv4 uuidv7 host hostmask masklen netmask
    network set_masklen text inet abbrev broadcast family num_nonnulls num_nulls
    pg_typeof current_user current_schema current_database session_user version
    """.split()  # noqa: SIM905
)
# Calls that read other tables by name or run SQL text: always opaque.
_OPAQUE_FUNCTIONS = frozenset({"query_to_xml", "dblink", "query_to_xml_and_xmlschema"})


def _children(node: Any) -> Iterator[Any]:
    for name in type(node).__slots__:
        value = getattr(node, name, None)
        if isinstance(value, ast.Node):
            yield value
        elif isinstance(value, tuple | list):
            for item in value:
                if isinstance(item, ast.Node):
                    yield item
                elif isinstance(item, tuple | list):
                    yield from (x for x in item if isinstance(x, ast.Node))


def _strings(nodes: Sequence[Any] | None) -> list[str]:
    return [str(n.sval) for n in nodes or () if isinstance(n, ast.String)]


@dataclass(slots=True, kw_only=True)
class _Rel:
    """A relation in FROM: its name for qualification and its output items."""

    alias: str
    items: list[OutputColumn]
    schema: str | None = None  # base table only
    table: str | None = None  # base table only
    known: bool = True  # base table: whether its column list is known
    opaque: bool = False  # unknown and possibly a view over anything

    def lookup(self, column: str) -> ColumnLineage | None:
        if self.opaque:
            return OPAQUE
        if self.table is not None and not self.known:
            return ColumnLineage(
                origins=frozenset(
                    {ColumnOrigin(schema=self.schema or "", table=self.table, column=column)}
                )
            )
        found: ColumnLineage | None = None
        for item in self.items:
            if item.star or item.name == column:
                found = item.lineage if found is None else found | item.lineage
        return found

    def whole(self) -> ColumnLineage:
        out = NO_LINEAGE
        for item in self.items:
            out = out | item.lineage
        return out


@dataclass(slots=True, kw_only=True)
class _Scope:
    rels: list[_Rel]
    ctes: dict[str, list[OutputColumn]]
    parent: _Scope | None = None

    def cte(self, name: str) -> list[OutputColumn] | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.ctes:
                return scope.ctes[name]
            scope = scope.parent
        return None


class _Analyzer:
    def __init__(
        self, catalog: Catalog | None, depth: int = 0, views: frozenset[str] = frozenset()
    ):
        self.catalog = catalog
        self.depth = depth
        self.views = views

    # -- statements --------------------------------------------------------

    def statement(self, stmt: Any) -> list[OutputColumn] | None:
        root = _Scope(rels=[], ctes={})
        if isinstance(stmt, ast.SelectStmt):
            return self.select(stmt, root)
        if isinstance(stmt, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt):
            return self.modify(stmt, root)
        if isinstance(stmt, ast.CopyStmt):
            if stmt.query is not None:
                return self.statement(stmt.query)
            rel = self.range_var(stmt.relation, root)
            names = _strings(stmt.attlist)
            if names:
                return [OutputColumn(name=n, lineage=rel.lookup(n) or OPAQUE) for n in names]
            return list(rel.items)
        if isinstance(stmt, ast.ExplainStmt | ast.VariableShowStmt):
            return [OutputColumn(name=None, lineage=NO_LINEAGE)]
        if isinstance(stmt, ast.DeclareCursorStmt | ast.PrepareStmt | ast.CreateTableAsStmt):
            return []  # no rows now; FETCH / EXECUTE are opaque
        if isinstance(
            stmt,
            ast.FetchStmt | ast.ExecuteStmt | ast.CallStmt | ast.DoStmt,
        ):
            return None
        return []  # DDL and utility statements return no rows

    def modify(self, stmt: Any, scope: _Scope) -> list[OutputColumn]:
        returning = getattr(stmt, "returningClause", None)
        exprs = getattr(returning, "exprs", None) if returning is not None else None
        if exprs is None:
            exprs = getattr(stmt, "returningList", None)
        if not exprs:
            return []
        inner = _Scope(rels=[], ctes={}, parent=scope)
        if stmt.withClause is not None:
            self.with_clause(stmt.withClause, inner)
        inner.rels.append(self.range_var(stmt.relation, inner))
        for item in getattr(stmt, "fromClause", None) or getattr(stmt, "usingClause", None) or ():
            inner.rels.extend(self.from_item(item, inner))
        return self.targets(exprs, inner)

    def select(self, stmt: Any, outer: _Scope) -> list[OutputColumn]:
        self.depth += 1
        try:
            if self.depth > MAX_LINEAGE_DEPTH:
                raise _Opaque("too deep")
            scope = _Scope(rels=[], ctes={}, parent=outer)
            if stmt.withClause is not None:
                self.with_clause(stmt.withClause, scope)
            if stmt.op is not None and int(stmt.op) != 0:
                return _union_positional(
                    self.select(stmt.larg, scope), self.select(stmt.rarg, scope)
                )
            if stmt.valuesLists:
                rows = [
                    [OutputColumn(name=None, lineage=self.expr(e, scope)) for e in row]
                    for row in stmt.valuesLists
                ]
                out = rows[0]
                for row in rows[1:]:
                    out = _union_positional(out, row)
                return out
            for item in stmt.fromClause or ():
                scope.rels.extend(self.from_item(item, scope))
            return self.targets(stmt.targetList or (), scope)
        finally:
            self.depth -= 1

    def with_clause(self, clause: Any, scope: _Scope) -> None:
        for cte in clause.ctes or ():
            name = cte.ctename
            query = cte.ctequery
            if (
                clause.recursive
                and isinstance(query, ast.SelectStmt)
                and query.op
                and int(query.op) != 0
            ):
                # Seed with the non-recursive part, then resolve the recursive part against it.
                scope.ctes[name] = _rename(
                    self.select(query.larg, scope), _strings(cte.aliascolnames)
                )
                first = self.select(query, scope)
                scope.ctes[name] = _rename(first, _strings(cte.aliascolnames))
                second = self.select(query, scope)
                items = _union_positional(first, second)
            elif isinstance(query, ast.SelectStmt):
                items = self.select(query, scope)
            else:
                items = self.statement(query) or []
            scope.ctes[name] = _rename(items, _strings(cte.aliascolnames))

    def targets(self, targets: Sequence[Any], scope: _Scope) -> list[OutputColumn]:
        out: list[OutputColumn] = []
        for target in targets:
            val: Any = target.val if isinstance(target, ast.ResTarget) else target
            if isinstance(val, ast.ColumnRef) and isinstance(
                (val.fields or (None,))[-1], ast.A_Star
            ):
                out.extend(self.star(val, scope))
                continue
            out.append(
                OutputColumn(
                    name=getattr(target, "name", None) or _name_of(val),
                    lineage=self.expr(val, scope),
                )
            )
        return out

    def star(self, ref: Any, scope: _Scope) -> list[OutputColumn]:
        qual = _strings(ref.fields[:-1])
        if not qual:
            items: list[OutputColumn] = []
            for rel in scope.rels:
                items.extend(rel.items)
            return items
        found = self.find_rel(qual, scope)
        if found is None:
            raise _Opaque(f"unknown relation {'.'.join(qual)}")
        return list(found.items)

    # -- FROM ----------------------------------------------------------------

    def from_item(self, node: Any, scope: _Scope) -> list[_Rel]:
        item: Any = node
        if isinstance(item, ast.RangeVar):
            return [self.range_var(item, scope)]
        if isinstance(item, ast.JoinExpr):
            rels = self.from_item(item.larg, scope) + self.from_item(item.rarg, scope)
            if item.alias is not None:
                items = [i for r in rels for i in r.items]
                return [
                    _Rel(
                        alias=str(item.alias.aliasname),
                        items=_rename(items, _strings(item.alias.colnames)),
                    )
                ]
            return rels
        if isinstance(item, ast.RangeSubselect):
            lateral = (
                _Scope(rels=list(scope.rels), ctes={}, parent=scope) if item.lateral else scope
            )
            items = self.select(item.subquery, lateral)
            alias = str(item.alias.aliasname) if item.alias is not None else "?subquery?"
            names = _strings(item.alias.colnames) if item.alias is not None else []
            return [_Rel(alias=alias, items=_rename(items, names))]
        if isinstance(item, ast.RangeFunction):
            lineage = NO_LINEAGE
            funcs: list[Any] = [
                e[0] if isinstance(e, tuple | list) else e for e in item.functions or ()
            ]
            for func in funcs:
                lineage = lineage | self.expr(func, scope)
            alias = (
                str(item.alias.aliasname)
                if item.alias is not None
                else (_name_of(funcs[0]) if funcs else None) or "?function?"
            )
            names = _strings(item.alias.colnames) if item.alias is not None else []
            items = [OutputColumn(name=n, lineage=lineage) for n in names] or [
                OutputColumn(name=alias, lineage=lineage, star=True)
            ]
            return [_Rel(alias=alias or "?function?", items=items)]
        if isinstance(item, ast.RangeTableSample):
            return self.from_item(item.relation, scope)
        # JSON_TABLE, XMLTABLE and the like: whatever they read, unknown width.
        lineage = self.expr(item, scope)
        alias_node = getattr(item, "alias", None)
        alias = alias_node.aliasname if alias_node is not None else "?table?"
        return [_Rel(alias=alias, items=[OutputColumn(name=None, lineage=lineage, star=True)])]

    def range_var(self, rv: Any, scope: _Scope) -> _Rel:
        alias = rv.alias.aliasname if rv.alias is not None else rv.relname
        colnames = _strings(rv.alias.colnames) if rv.alias is not None else []
        if rv.schemaname is None:
            cte = scope.cte(rv.relname)
            if cte is not None:
                return _Rel(alias=alias, items=_rename(cte, colnames))
        schema, columns = self.resolve(rv.schemaname, rv.relname)
        if columns is None:
            opaque = self.catalog is not None and self.catalog.unknown_is_opaque(
                rv.schemaname, rv.relname
            )
            lineage = (
                OPAQUE
                if opaque
                else ColumnLineage(
                    unresolved=frozenset({TableRef(schema=schema, table=rv.relname)})
                )
            )
            return _Rel(
                alias=alias,
                items=[OutputColumn(name=None, lineage=lineage, star=True)],
                schema=schema,
                table=rv.relname,
                known=False,
                opaque=opaque,
            )
        assert schema is not None
        view = self.view(schema, rv.relname)
        if view is not None:
            items = _rename(view, list(columns))
        else:
            items = [
                OutputColumn(
                    name=c,
                    lineage=ColumnLineage(
                        origins=frozenset({ColumnOrigin(schema=schema, table=rv.relname, column=c)})
                    ),
                )
                for c in columns
            ]
        return _Rel(alias=alias, items=_rename(items, colnames), schema=schema, table=rv.relname)

    def resolve(self, schema: str | None, table: str) -> tuple[str | None, Sequence[str] | None]:
        if self.catalog is None:
            return schema, None
        if schema is not None:
            return schema, self.catalog.columns(schema, table)
        for candidate in self.catalog.search_path:
            cols = self.catalog.columns(candidate, table)
            if cols is not None:
                return candidate, cols
        return None, None

    def view(self, schema: str, table: str) -> list[OutputColumn] | None:
        if self.catalog is None:
            return None
        definition = self.catalog.view_definition(schema, table)
        if definition is None:
            return None
        key = f"{schema}.{table}"
        if key in self.views or self.depth >= MAX_LINEAGE_DEPTH:
            raise _Opaque(f"recursive or too deep view {key}")
        try:
            stmts = pglast.parse_sql(definition)
        except Exception as exc:
            raise _Opaque(f"view {key} does not parse") from exc
        if len(stmts) != 1:
            raise _Opaque(f"view {key} is not one statement")
        sub = _Analyzer(self.catalog, self.depth + 1, self.views | {key})
        cols = sub.statement(stmts[0].stmt)
        if cols is None:
            raise _Opaque(f"view {key} is opaque")
        return cols

    def find_rel(self, qual: list[str], scope: _Scope) -> _Rel | None:
        s: _Scope | None = scope
        while s is not None:
            for rel in s.rels:
                if len(qual) == 1 and rel.alias == qual[0]:
                    return rel
                if len(qual) >= 2 and rel.table == qual[-1] and rel.schema in (qual[-2], None):
                    return rel
            s = s.parent
        return None

    # -- expressions ---------------------------------------------------------

    def expr(self, node: Any, scope: _Scope) -> ColumnLineage:
        if node is None:
            return NO_LINEAGE
        if isinstance(node, ast.ColumnRef):
            return self.column_ref(node, scope)
        if isinstance(node, ast.SubLink):
            out = self.expr(node.testexpr, scope)
            for item in self.select(node.subselect, scope):
                out = out | item.lineage
            return out
        if isinstance(node, ast.SelectStmt):
            out = NO_LINEAGE
            for item in self.select(node, scope):
                out = out | item.lineage
            return out
        if isinstance(node, ast.FuncCall):
            names = _strings(node.funcname)
            name = names[-1].lower() if names else ""
            qualified_builtin = len(names) == 2 and names[0] == "pg_catalog"
            if name in _OPAQUE_FUNCTIONS or not (name in SAFE_FUNCTIONS or qualified_builtin):
                return OPAQUE
        out = NO_LINEAGE
        for child in _children(node):
            out = out | self.expr(child, scope)
        return out

    def column_ref(self, ref: Any, scope: _Scope) -> ColumnLineage:
        fields = ref.fields
        if isinstance(fields[-1], ast.A_Star):  # t.* inside an expression: the whole row
            out = NO_LINEAGE
            for item in self.star(ref, scope):
                out = out | item.lineage
            return out
        names = _strings(fields)
        if len(names) == 1:
            column = names[0]
            # Tables with unknown columns might hold it, but so might an outer
            # query (correlation): keep those weak hits and look further out.
            weak: ColumnLineage | None = None
            s: _Scope | None = scope
            while s is not None:
                found: ColumnLineage | None = None
                for rel in s.rels:
                    hit = rel.lookup(column)
                    if hit is None:
                        continue
                    if rel.known:
                        found = hit if found is None else found | hit
                    else:
                        weak = hit if weak is None else weak | hit
                if found is not None:
                    return found if weak is None else found | weak
                s = s.parent
            if weak is not None:
                return weak
            whole = self.find_rel(names, scope)  # row_to_json(c): a whole-row reference
            if whole is not None:
                return whole.whole()
            raise _Opaque(f"unknown column {column}")
        # rel.col, schema.rel.col, or rel.col.field (composite access)
        for split in range(len(names) - 1, 0, -1):
            qualified = self.find_rel(names[:split], scope)
            if qualified is not None:
                hit = qualified.lookup(names[split])
                if hit is None:
                    raise _Opaque(f"unknown column {'.'.join(names)}")
                return hit
        raise _Opaque(f"unknown relation in {'.'.join(names)}")


def _rename(items: list[OutputColumn], names: Sequence[str]) -> list[OutputColumn]:
    if not names:
        return list(items)
    out = []
    for i, item in enumerate(items):
        if i < len(names) and not item.star:
            out.append(OutputColumn(name=names[i], lineage=item.lineage))
        else:
            out.append(item)
    return out


def _union_positional(a: list[OutputColumn], b: list[OutputColumn]) -> list[OutputColumn]:
    """Column i of a set operation comes from column i of both sides."""
    if len(a) == len(b) and not any(c.star for c in a + b):
        return [
            OutputColumn(name=x.name, lineage=x.lineage | y.lineage)
            for x, y in zip(a, b, strict=True)
        ]
    everything = NO_LINEAGE
    for c in a + b:
        everything = everything | c.lineage
    return [OutputColumn(name=None, lineage=everything, star=True)]


def _name_of(node: Any) -> str | None:
    if isinstance(node, ast.ColumnRef):
        names = _strings(node.fields)
        return names[-1] if names else None
    if isinstance(node, ast.FuncCall):
        names = _strings(node.funcname)
        return names[-1] if names else None
    if isinstance(node, ast.TypeCast):
        return _name_of(node.arg)
    return None
