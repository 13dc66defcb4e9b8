"""SQL classification with PostgreSQL's own parser (pglast).

`classify(sql)` splits a query string into statements and describes each one:
its kind (``select``, ``delete``, ``drop_table`` ...), its category (read,
write, ddl ...), the tables it reads and writes, the functions it calls and
whether its UPDATE/DELETE statements have a restricting WHERE. It never raises:
text the parser rejects becomes one statement of category ``unparsable``.

What classification sees through:

- comments, case and quoting: the parser folds them away;
- ``EXPLAIN ANALYZE`` runs its statement, so it is classified as that statement
  (plain ``EXPLAIN`` only plans: category read);
- data-modifying CTEs (``WITH d AS (DELETE ...) SELECT ...``) and any other
  nested INSERT/UPDATE/DELETE/MERGE add their kind and category;
- admin, file and dynamic-SQL functions anywhere in the tree (select lists,
  subqueries, FROM, defaults) raise the category;
- ``PREPARE p AS ...`` is classified as the statement it prepares (a statement
  that would be refused cannot even be prepared); ``EXECUTE p`` (also inside
  ``EXPLAIN ANALYZE`` and ``CREATE TABLE AS``) carries an `Execute` effect the
  engine resolves against the session's prepared statements.

Design calls documented here:

- ``SELECT ... FOR UPDATE/SHARE`` (and ``LOCK``) take locks that block other
  writers: category write, kind ``select_for_update``.
- ``SELECT INTO`` / ``CREATE TABLE AS`` are ddl and write; the category is ddl.
- VACUUM/ANALYZE/CLUSTER/REINDEX are their own category, ``maintenance``.
- ``file_program`` is everything that leaves the SQL sandbox: server files,
  programs, large-object import/export and other servers (dblink).
- ``NOTIFY`` and ``pg_notify()`` signal other sessions: write.
- A statement has one `category`, the most severe of its `categories`
  (see `SEVERITY`); policy conditions match on that one.
- Unqualified table names keep ``schema=None``; policy resolves them with the
  default search path (``public``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from importlib import resources
from typing import Any, Final

from pglast import ast, enums, parse_sql
from pglast.parser import scan

PARSE_CACHE_SIZE = 4096
"""Distinct statement texts whose analysis is kept: ORMs and agents repeat a
small set of texts, so this covers the hot set while bounding memory."""

MAX_CACHED_SQL_CHARS = 16 * 1024
"""Longer texts (bulk inserts) are analysed but not cached: they rarely repeat
and would dominate the cache's memory."""

MAX_CLASSIFIED_SQL_CHARS = 8 * 1024 * 1024
"""Longer texts are not parsed and classify as unparsable (hence blocked): the
parse tree of a bigger text costs too much memory and time on the hot path."""


class Category(StrEnum):
    READ = "read"
    WRITE = "write"
    DDL = "ddl"
    DCL = "dcl"
    ADMIN = "admin"
    FILE_PROGRAM = "file_program"
    PROCEDURAL = "procedural"
    MAINTENANCE = "maintenance"
    TRANSACTION = "transaction"
    SESSION = "session"
    UNKNOWN = "unknown"
    UNPARSABLE = "unparsable"


SEVERITY: tuple[Category, ...] = (
    Category.UNPARSABLE,
    Category.UNKNOWN,
    Category.FILE_PROGRAM,
    Category.ADMIN,
    Category.DCL,
    Category.PROCEDURAL,
    Category.DDL,
    Category.WRITE,
    Category.MAINTENANCE,
    Category.READ,
    Category.SESSION,
    Category.TRANSACTION,
)
"""Categories, most severe first; a statement's `category` is the first of its
`categories` in this order."""

_SEVERITY_RANK = {category: rank for rank, category in enumerate(SEVERITY)}


def most_severe(categories: frozenset[Category]) -> Category:
    """The most severe category of a set (unknown for an empty set)."""
    if not categories:
        return Category.UNKNOWN
    return min(categories, key=_SEVERITY_RANK.__getitem__)


@dataclass(frozen=True, slots=True, kw_only=True)
class TableRef:
    """A relation as written: ``schema`` is None when the name is unqualified."""

    schema: str | None
    name: str

    def qualified(self, default_schema: str = "public") -> str:
        return f"{self.schema or default_schema}.{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepare:
    """The statement creates the prepared statement `name` (SQL PREPARE)."""

    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Execute:
    """The statement runs the prepared statement `name`."""

    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Deallocate:
    """The statement forgets prepared statement `name`, or all of them if None
    (DEALLOCATE ALL, DISCARD ALL)."""

    name: str | None


PreparedEffect = Prepare | Execute | Deallocate


@dataclass(frozen=True, slots=True, kw_only=True)
class StatementInfo:
    """What one statement does, as far as policy is concerned."""

    text: str
    kind: str
    """The main kind: for EXPLAIN ANALYZE the inner statement's, for a SELECT
    hiding a data-modifying CTE the first data-modifying kind."""
    kinds: frozenset[str]
    """Every kind this statement runs (the main kind plus nested DML)."""
    categories: frozenset[Category]
    tables_read: frozenset[TableRef] = frozenset()
    tables_written: frozenset[TableRef] = frozenset()
    functions: frozenset[str] = frozenset()
    """Called function names, lower case, without schema."""
    unvetted_functions: frozenset[str] = frozenset()
    """Called functions not known to leave the database as it is, as written
    (lower case, schema-qualified if it was): user-defined and extension
    functions, and volatile built-ins with effects. A plain SELECT of one
    may write; the policy judges it as procedural unless it names the
    function among its `read_only_functions`."""
    side_channel_data: bool = False
    """It hands a value computed from columns or a subquery to set_config or
    pg_notify: it can be read back there (SHOW, LISTEN) with no column
    behind it."""
    builtin_calls: frozenset[str] = frozenset()
    """Calls taken for built-ins that only read because their name is
    unqualified: `name` and `operator(op)`. PostgreSQL picks among every
    function of that name on the search path, so a database that has a
    volatile function of that name elsewhere may run it instead."""
    has_restricting_where: bool | None = None
    """None without UPDATE/DELETE/MERGE; False if any of them lacks a WHERE
    (or ON) that restricts rows (``WHERE true``, ``WHERE 1=1``, ``id = id``)."""
    effect: PreparedEffect | None = None
    via: tuple[str, ...] = ()
    """Wrappers seen through, outermost first (``explain_analyze``, ``prepare``,
    ``execute p``)."""
    error: str | None = None
    """The parser's message, for unparsable statements."""
    changes_search_path: bool = False
    """It may change which schema unqualified names resolve to: SET or RESET
    of search_path, set_config of search_path (or of a computed name), or a
    procedural block whose text mentions search_path."""
    literal_blind: bool = False
    """Its classification is the same whatever its string literals hold: a
    plain query or DML (reads and writes only) whose analysis read no string
    literal's value. Its verdict may then be shared by texts that differ only
    in literals (`lexed_keys`)."""

    @property
    def category(self) -> Category:
        return most_severe(self.categories)

    @property
    def tables(self) -> frozenset[TableRef]:
        return self.tables_read | self.tables_written


@dataclass(frozen=True, slots=True, kw_only=True)
class SqlAnalysis:
    """The statements of one query string, in order."""

    sql: str
    statements: tuple[StatementInfo, ...]
    error: str | None = None

    @property
    def unparsable(self) -> bool:
        return self.error is not None


def classify(sql: str) -> SqlAnalysis:
    """Classify every statement of `sql`; never raises."""
    if len(sql) > MAX_CACHED_SQL_CHARS:
        return _classify(sql)
    key = numbers_zeroed(sql)
    if key is None or key == sql:
        return _classify_cached(sql)
    return _with_original_text(_classify_cached(key), key, sql)


def numbers_zeroed(sql: str) -> str | None:
    """`sql` with every digit of its numeric literals turned into '0'.

    Statements that differ only in their numbers (`... WHERE id = 7` and
    `... WHERE id = 8`) then share one cache entry, which is what makes the
    cache work for clients that inline values. No classification depends on
    a number's value except EXPLAIN/VACUUM option values (`ANALYZE 0`), so
    texts with such options are not normalised. The replacement keeps every
    offset, so statement texts are cut from the original afterwards.
    Returns None when the text cannot be scanned.
    """
    keys = lexed_keys(sql)
    return None if keys is None else keys[0]


LITERAL_MARK = "\x00"
"""Stands for a string literal in `lexed_keys`' second key. PostgreSQL texts
cannot hold NUL, so the mark cannot be confused with anything written."""


def lexed_keys(sql: str) -> tuple[str, str | None] | None:
    """`numbers_zeroed(sql)`, and that text with each string literal replaced by
    LITERAL_MARK (None when it has no string literal), from one lexer pass.

    Two texts with the same second key are the same tokens but for the
    values of their numbers and string literals (`'...'`, `E'...'`,
    dollar quotes), so they parse to the same tree but for those values. A
    verdict may be shared under it only where the statement's classification
    read no string literal (`StatementInfo.literal_blind`). None when the
    text cannot be scanned or holds option words whose values matter.
    """
    try:
        tokens = scan(sql)
    except Exception:
        return None
    numbers = []
    strings = []
    for token in tokens:
        name = token.name
        if name in _NUMBER_TOKENS:
            numbers.append((token.start, token.end + 1))
        elif name == "SCONST":
            strings.append((token.start, token.end + 1))
        elif name in _OPTION_KEYWORDS:
            return None
    zeroed = sql
    if numbers:
        chars = list(sql)
        for start, end in numbers:
            for index in range(start, end):
                if chars[index].isdigit():
                    chars[index] = "0"
        zeroed = "".join(chars)
    if not strings or LITERAL_MARK in sql:
        return zeroed, None
    return zeroed, replace_spans(zeroed, strings, LITERAL_MARK)


def replace_spans(text: str, spans: list[tuple[int, int]], mark: str) -> str:
    """`text` with each (start, end) span, in order and apart, replaced by `mark`."""
    parts = []
    position = 0
    for start, end in spans:
        parts.append(text[position:start])
        parts.append(mark)
        position = end
    parts.append(text[position:])
    return "".join(parts)


# Texts made only of these characters hold no string, quoted identifier,
# dollar quote, parameter or non-ASCII letter: a run of digits that does not
# follow a word character is then a number (identifiers cannot start with one).
_PLAIN_TEXT = re.compile(r"[A-Za-z0-9_ \t\n\r\f\v,.=<>()*;+\-/%!|&^~:\[\]@#]*")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_])[0-9]+")
# What the plain key leaves to the lexer: option values whose numbers matter
# (EXPLAIN, ANALYZE, VACUUM), comments, and numbers run into letters (1e5,
# 0x1F, 0o17, 1_000).
_NUMBER_INTO_LETTERS = re.compile(r"(?<![A-Za-z0-9_])[0-9]+[A-Za-z_]")


def _not_plain(sql: str) -> bool:
    """For an ASCII text: holds an option word (any case), a comment or a
    number run into letters."""
    low = sql.lower()
    return (
        "explain" in low
        or "analyze" in low
        or "analyse" in low
        or "vacuum" in low
        or "--" in sql
        or "/*" in sql
        or _NUMBER_INTO_LETTERS.search(sql) is not None
    )


def py_plain_numbers_zeroed(sql: str) -> str | None:
    """A cheaper `numbers_zeroed` for plain texts, without running the lexer.

    Every decimal number becomes `0` (`12.5` becomes `0.0`). Applies only to
    texts of `_PLAIN_TEXT` characters that are not `_not_plain`; returns None
    for any other text. Two texts with the same result differ only in the
    digits of decimal numbers, so they parse to the same statements with
    different numbers. (Its keys are not those of `numbers_zeroed`: keep the
    two apart.)
    """
    if _PLAIN_TEXT.fullmatch(sql) is None or _not_plain(sql):
        return None
    return _NUMBER.sub("0", sql)


# A standard string literal ('...', '' for a quote) and what may not stand
# right before one: a letter, digit or `_` would make it E'', N'', B'', X''
# or part of a name, `&` a U&'' literal.
_STANDARD_LITERAL = re.compile(r"'(?:[^'\x00]|'')*'")
_BEFORE_LITERAL = re.compile(r"[A-Za-z0-9_&]\Z")


def py_literal_key(sql: str) -> str | None:
    """`lexed_keys(sql)[1]` for a text that is plain outside its standard
    string literals, without running the lexer.

    Each literal becomes LITERAL_MARK and the numbers outside literals `0`.
    None unless the text holds at least one such literal and, outside them,
    only `_PLAIN_TEXT` characters and nothing `_not_plain` (after dropping
    the literals); None with a NUL or an unterminated literal. Texts with
    the same key are the same tokens but for the values of their numbers
    and string literals. (Its keys are not `lexed_keys`': keep them apart.)
    """
    if "\x00" in sql:
        return None
    parts = []
    position = 0
    for literal in _STANDARD_LITERAL.finditer(sql):
        before = sql[position : literal.start()]
        if _BEFORE_LITERAL.search(before):
            return None
        parts.append(before)
        position = literal.end()
    if not parts:
        return None
    parts.append(sql[position:])
    outside = LITERAL_MARK.join(parts)
    if _PLAIN_TEXT.fullmatch(outside.replace(LITERAL_MARK, " ")) is None or _not_plain(outside):
        return None
    return LITERAL_MARK.join(_NUMBER.sub("0", part) for part in parts)


plain_numbers_zeroed: Callable[[str], str | None]
literal_key: Callable[[str], str | None]
try:  # compiled when a compiler was there at install; same answers (tests/policy)
    from sluice.policy._sqlkey import literal_key
    from sluice.policy._sqlkey import plain_key as plain_numbers_zeroed
except ImportError:
    plain_numbers_zeroed = py_plain_numbers_zeroed
    literal_key = py_literal_key


_NUMBER_TOKENS = frozenset({"ICONST", "FCONST"})
_OPTION_KEYWORDS = frozenset({"EXPLAIN", "ANALYZE", "ANALYSE", "VACUUM"})


def _with_original_text(analysis: SqlAnalysis, key: str, sql: str) -> SqlAnalysis:
    """Give a cached analysis of the normalised `key` the texts of `sql`."""
    statements = []
    position = 0
    for statement in analysis.statements:
        offset = key.find(statement.text, position)
        if offset < 0:
            return _classify(sql)  # texts do not line up: classify the original
        end = offset + len(statement.text)
        statements.append(replace(statement, text=sql[offset:end]))
        position = end
    return SqlAnalysis(sql=sql, statements=tuple(statements), error=analysis.error)


@functools.lru_cache(maxsize=PARSE_CACHE_SIZE)
def _classify_cached(sql: str) -> SqlAnalysis:
    return _classify(sql)


def _classify(sql: str) -> SqlAnalysis:
    if len(sql) > MAX_CLASSIFIED_SQL_CHARS:
        return _unparsable(sql, f"statement longer than {MAX_CLASSIFIED_SQL_CHARS} characters")
    try:
        raw_statements = parse_sql(sql)
        statements = tuple(_analyse_raw(sql, raw) for raw in raw_statements)
    except Exception as exc:  # the parser's error or a tree too deep to walk
        return _unparsable(sql, f"{type(exc).__name__}: {exc}")
    return SqlAnalysis(sql=sql, statements=statements)


def _unparsable(sql: str, message: str) -> SqlAnalysis:
    info = StatementInfo(
        text=sql,
        kind="unparsable",
        kinds=frozenset({"unparsable"}),
        categories=frozenset({Category.UNPARSABLE}),
        error=message,
    )
    return SqlAnalysis(sql=sql, statements=(info,), error=message)


def _analyse_raw(sql: str, raw: ast.RawStmt) -> StatementInfo:
    start = raw.stmt_location or 0
    end = start + raw.stmt_len if raw.stmt_len else len(sql)
    facts = _Facts()
    _classify_statement(raw.stmt, facts)
    return facts.freeze(sql[start:end].strip())


def merge_execution(outer: StatementInfo, inner: StatementInfo, name: str) -> StatementInfo:
    """`outer` (an EXECUTE, or CREATE TABLE AS / EXPLAIN ANALYZE of one) with the
    prepared statement `inner` it runs, as one statement to judge."""
    inner_kinds = inner.kinds - {"prepare"}
    outer_kinds = outer.kinds - {"execute"}
    wheres = (outer.has_restricting_where, inner.has_restricting_where)
    restricting: bool | None = None
    if False in wheres:
        restricting = False
    elif True in wheres:
        restricting = True
    return StatementInfo(
        text=outer.text,
        kind=inner.kind if outer.kind == "execute" else outer.kind,
        kinds=outer_kinds | inner_kinds,
        categories=outer.categories | inner.categories,
        tables_read=outer.tables_read | inner.tables_read,
        tables_written=outer.tables_written | inner.tables_written,
        functions=outer.functions | inner.functions,
        unvetted_functions=outer.unvetted_functions | inner.unvetted_functions,
        builtin_calls=outer.builtin_calls | inner.builtin_calls,
        side_channel_data=outer.side_channel_data or inner.side_channel_data,
        has_restricting_where=restricting,
        effect=inner.effect if isinstance(inner.effect, Execute) else None,
        via=(*outer.via, f"execute {name}", *(v for v in inner.via if v != "prepare")),
        error=inner.error,
        changes_search_path=outer.changes_search_path or inner.changes_search_path,
    )


@dataclass(slots=True)
class _Facts:
    """Mutable accumulator while one statement's tree is walked."""

    kind: str = "unknown"
    nested_kinds: list[str] = field(default_factory=list)
    categories: set[Category] = field(default_factory=set)
    relations: list[ast.RangeVar] = field(default_factory=list)
    written_ids: set[int] = field(default_factory=set)
    extra_written: set[TableRef] = field(default_factory=set)
    cte_names: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    unvetted_functions: set[str] = field(default_factory=set)
    builtin_calls: set[str] = field(default_factory=set)
    side_channel_data: bool = False
    where_checks: list[bool] = field(default_factory=list)
    effect: PreparedEffect | None = None
    via: list[str] = field(default_factory=list)
    changes_search_path: bool = False
    reads_literals: bool = False
    """A string literal's value was read (e.g. set_config's setting name)."""

    def freeze(self, text: str) -> StatementInfo:
        read: set[TableRef] = set()
        written: set[TableRef] = set(self.extra_written)
        for rel in self.relations:
            if rel.relname is None:
                continue
            if rel.schemaname is None and rel.relname in self.cte_names:
                continue
            ref = TableRef(schema=rel.schemaname, name=rel.relname)
            (written if id(rel) in self.written_ids else read).add(ref)
        kind = self.kind
        if kind == "select" and self.nested_kinds:
            kind = self.nested_kinds[0]
        kinds = frozenset({kind, *self.nested_kinds})
        changes_search_path = self.changes_search_path or (
            Category.PROCEDURAL in self.categories and "search_path" in text.lower()
        )
        return StatementInfo(
            text=text,
            kind=kind,
            kinds=kinds,
            categories=frozenset(self.categories),
            tables_read=frozenset(read - written),
            tables_written=frozenset(written),
            functions=frozenset(self.functions),
            unvetted_functions=frozenset(self.unvetted_functions),
            builtin_calls=frozenset(self.builtin_calls),
            side_channel_data=self.side_channel_data,
            has_restricting_where=all(self.where_checks) if self.where_checks else None,
            effect=self.effect,
            via=tuple(self.via),
            changes_search_path=changes_search_path,
            literal_blind=not self.reads_literals
            and kinds <= _LITERAL_BLIND_KINDS
            and self.categories <= _LITERAL_BLIND_CATEGORIES
            and self.effect is None
            and not self.via
            and not changes_search_path,
        )


# Where `literal_blind` may hold: statements whose analysis is a walk of names
# (relations, columns, functions) and of WHERE shapes. Everything else (SET,
# COPY to a file, DO blocks, EXPLAIN options, admin calls, ...) is judged per
# text, as some of it reads literal values.
_LITERAL_BLIND_KINDS = frozenset(
    {"select", "select_for_update", "insert", "update", "delete", "merge"}
)
_LITERAL_BLIND_CATEGORIES = frozenset({Category.READ, Category.WRITE})


def _snake(name: str) -> str:
    base = name.removesuffix("Stmt")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", base).lower()


_DML_KINDS: dict[type[ast.Node], str] = {
    ast.InsertStmt: "insert",
    ast.UpdateStmt: "update",
    ast.DeleteStmt: "delete",
    ast.MergeStmt: "merge",
}

_FIXED: dict[type[ast.Node], tuple[str, tuple[Category, ...]]] = {
    ast.TruncateStmt: ("truncate", (Category.WRITE,)),
    ast.DoStmt: ("do", (Category.PROCEDURAL,)),
    ast.CallStmt: ("call", (Category.PROCEDURAL,)),
    ast.VariableShowStmt: ("show", (Category.SESSION,)),
    ast.AlterSystemStmt: ("alter_system", (Category.ADMIN,)),
    ast.ConstraintsSetStmt: ("set_constraints", (Category.TRANSACTION,)),
    ast.ListenStmt: ("listen", (Category.SESSION,)),
    ast.UnlistenStmt: ("unlisten", (Category.SESSION,)),
    ast.NotifyStmt: ("notify", (Category.WRITE,)),
    ast.LockStmt: ("lock", (Category.WRITE,)),
    ast.ClosePortalStmt: ("close", (Category.SESSION,)),
    ast.DeclareCursorStmt: ("declare_cursor", (Category.READ,)),
    ast.AlterRoleStmt: ("alter_role", (Category.DCL,)),
    ast.AlterRoleSetStmt: ("alter_role", (Category.DCL,)),
    ast.DropRoleStmt: ("drop_role", (Category.DCL,)),
    ast.AlterDefaultPrivilegesStmt: ("alter_default_privileges", (Category.DCL,)),
    ast.ReassignOwnedStmt: ("reassign_owned", (Category.DCL,)),
    ast.DropOwnedStmt: ("drop_owned", (Category.DCL,)),
    ast.AlterOwnerStmt: ("alter_owner", (Category.DCL,)),
    ast.CreatePolicyStmt: ("create_policy", (Category.DCL,)),
    ast.AlterPolicyStmt: ("alter_policy", (Category.DCL,)),
    ast.LoadStmt: ("load", (Category.ADMIN,)),
    ast.CreateExtensionStmt: ("create_extension", (Category.ADMIN,)),
    ast.AlterExtensionStmt: ("alter_extension", (Category.ADMIN,)),
    ast.AlterExtensionContentsStmt: ("alter_extension", (Category.ADMIN,)),
    ast.CreatePLangStmt: ("create_language", (Category.ADMIN,)),
    ast.CreateEventTrigStmt: ("create_event_trigger", (Category.ADMIN,)),
    ast.AlterEventTrigStmt: ("alter_event_trigger", (Category.ADMIN,)),
    ast.CreateTableSpaceStmt: ("create_tablespace", (Category.ADMIN,)),
    ast.DropTableSpaceStmt: ("drop_tablespace", (Category.ADMIN,)),
    ast.AlterTableSpaceOptionsStmt: ("alter_tablespace", (Category.ADMIN,)),
    ast.AlterTableMoveAllStmt: ("alter_tablespace", (Category.ADMIN,)),
    ast.CreateFdwStmt: ("create_foreign_data_wrapper", (Category.ADMIN,)),
    ast.AlterFdwStmt: ("alter_foreign_data_wrapper", (Category.ADMIN,)),
    ast.CreateForeignServerStmt: ("create_server", (Category.ADMIN,)),
    ast.AlterForeignServerStmt: ("alter_server", (Category.ADMIN,)),
    ast.CreateUserMappingStmt: ("create_user_mapping", (Category.ADMIN,)),
    ast.AlterUserMappingStmt: ("alter_user_mapping", (Category.ADMIN,)),
    ast.DropUserMappingStmt: ("drop_user_mapping", (Category.ADMIN,)),
    ast.CreateSubscriptionStmt: ("create_subscription", (Category.ADMIN,)),
    ast.AlterSubscriptionStmt: ("alter_subscription", (Category.ADMIN,)),
    ast.DropSubscriptionStmt: ("drop_subscription", (Category.ADMIN,)),
    ast.CreatePublicationStmt: ("create_publication", (Category.ADMIN,)),
    ast.AlterPublicationStmt: ("alter_publication", (Category.ADMIN,)),
    ast.CheckPointStmt: ("checkpoint", (Category.ADMIN,)),
    ast.CreatedbStmt: ("create_database", (Category.ADMIN,)),
    ast.DropdbStmt: ("drop_database", (Category.DDL,)),
    ast.AlterDatabaseStmt: ("alter_database", (Category.ADMIN,)),
    ast.AlterDatabaseSetStmt: ("alter_database", (Category.ADMIN,)),
    ast.AlterDatabaseRefreshCollStmt: ("alter_database", (Category.ADMIN,)),
    ast.ClusterStmt: ("cluster", (Category.MAINTENANCE,)),
    ast.ReindexStmt: ("reindex", (Category.MAINTENANCE,)),
    ast.RefreshMatViewStmt: ("refresh_materialized_view", (Category.WRITE,)),
    ast.CreateStmt: ("create_table", (Category.DDL,)),
    ast.IndexStmt: ("create_index", (Category.DDL,)),
    ast.ViewStmt: ("create_view", (Category.DDL,)),
    ast.AlterTableStmt: ("alter_table", (Category.DDL,)),
    ast.RenameStmt: ("rename", (Category.DDL,)),
    ast.CreateSchemaStmt: ("create_schema", (Category.DDL,)),
    ast.CreateSeqStmt: ("create_sequence", (Category.DDL,)),
    ast.AlterSeqStmt: ("alter_sequence", (Category.DDL,)),
    ast.CreateTrigStmt: ("create_trigger", (Category.DDL,)),
    ast.RuleStmt: ("create_rule", (Category.DDL,)),
    ast.CommentStmt: ("comment", (Category.DDL,)),
    ast.AlterFunctionStmt: ("alter_function", (Category.DDL,)),
}

_DDL_PREFIXES = ("Create", "Alter", "Define", "Drop", "Comment", "SecLabel", "Import", "Composite")

_ADMIN_DROPS = {
    enums.ObjectType.OBJECT_EXTENSION,
    enums.ObjectType.OBJECT_EVENT_TRIGGER,
    enums.ObjectType.OBJECT_LANGUAGE,
    enums.ObjectType.OBJECT_FDW,
    enums.ObjectType.OBJECT_FOREIGN_SERVER,
    enums.ObjectType.OBJECT_PUBLICATION,
    enums.ObjectType.OBJECT_SUBSCRIPTION,
    enums.ObjectType.OBJECT_TABLESPACE,
}

_RELATION_DROPS = {
    enums.ObjectType.OBJECT_TABLE,
    enums.ObjectType.OBJECT_VIEW,
    enums.ObjectType.OBJECT_MATVIEW,
    enums.ObjectType.OBJECT_INDEX,
    enums.ObjectType.OBJECT_SEQUENCE,
    enums.ObjectType.OBJECT_FOREIGN_TABLE,
}

_TRANSACTION_KINDS: dict[Any, str] = {
    enums.TransactionStmtKind.TRANS_STMT_BEGIN: "begin",
    enums.TransactionStmtKind.TRANS_STMT_START: "begin",
    enums.TransactionStmtKind.TRANS_STMT_COMMIT: "commit",
    enums.TransactionStmtKind.TRANS_STMT_ROLLBACK: "rollback",
    enums.TransactionStmtKind.TRANS_STMT_SAVEPOINT: "savepoint",
    enums.TransactionStmtKind.TRANS_STMT_RELEASE: "release_savepoint",
    enums.TransactionStmtKind.TRANS_STMT_ROLLBACK_TO: "rollback_to_savepoint",
    enums.TransactionStmtKind.TRANS_STMT_PREPARE: "prepare_transaction",
    enums.TransactionStmtKind.TRANS_STMT_COMMIT_PREPARED: "commit_prepared",
    enums.TransactionStmtKind.TRANS_STMT_ROLLBACK_PREPARED: "rollback_prepared",
}

_ROLE_KINDS: dict[Any, str] = {
    enums.RoleStmtType.ROLESTMT_ROLE: "create_role",
    enums.RoleStmtType.ROLESTMT_USER: "create_user",
    enums.RoleStmtType.ROLESTMT_GROUP: "create_group",
}

ADMIN_SETTINGS = frozenset({"role", "session_authorization", "session_replication_role"})
"""Settings whose change is privilege or server administration, not session taste."""

_SET_ADMIN_KINDS = {"role": "set_role", "session_authorization": "set_session_authorization"}

FILE_PROGRAM_FUNCTIONS = frozenset(
    {
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "pg_ls_logdir",
        "pg_ls_waldir",
        "pg_ls_tmpdir",
        "pg_ls_archive_statusdir",
        "pg_ls_logicalsnapdir",
        "pg_ls_logicalmapdir",
        "pg_ls_replslotdir",
        "pg_ls_summariesdir",
        "lo_import",
        "lo_export",
        "pg_file_write",
        "pg_file_rename",
        "pg_file_unlink",
        "pg_file_sync",
        "pg_logdir_ls",
    }
)
FILE_PROGRAM_FUNCTION_PREFIXES = ("dblink",)

ADMIN_FUNCTIONS = frozenset(
    {
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_signal_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_rotate_logfile_old",
        "pg_promote",
        "pg_switch_wal",
        "pg_switch_xlog",
        "pg_create_restore_point",
        "pg_start_backup",
        "pg_stop_backup",
        "pg_backup_start",
        "pg_backup_stop",
        "pg_wal_replay_pause",
        "pg_wal_replay_resume",
        "pg_create_physical_replication_slot",
        "pg_create_logical_replication_slot",
        "pg_drop_replication_slot",
        "pg_copy_physical_replication_slot",
        "pg_copy_logical_replication_slot",
        "pg_replication_slot_advance",
        "pg_logical_emit_message",
        "pg_log_backend_memory_contexts",
        "pg_import_system_collations",
        "pg_sync_replication_slots",
    }
)
ADMIN_FUNCTION_PREFIXES = ("pg_stat_reset", "pg_replication_origin_")

SIDE_CHANNEL_FUNCTIONS: Final = ("set_config", "pg_notify")
"""Functions whose second argument can be read back elsewhere (SHOW, LISTEN):
a value computed from data there is `side_channel_data`."""

DYNAMIC_SQL_FUNCTIONS = frozenset(
    {
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        # These return the rows of relations named by their arguments (or
        # of a whole schema or database, or of an open cursor), which table
        # rules and column masking cannot see in the statement.
        "table_to_xml",
        "table_to_xml_and_xmlschema",
        "schema_to_xml",
        "schema_to_xml_and_xmlschema",
        "database_to_xml",
        "database_to_xml_and_xmlschema",
        "cursor_to_xml",
    }
)
"""Functions that run SQL text given as an argument, or read data the
statement does not name: procedural."""

WRITE_FUNCTIONS = frozenset(
    {
        "nextval",
        "setval",
        "pg_notify",
        "lo_create",
        "lo_creat",
        "lo_unlink",
        "lo_put",
        "lo_from_bytea",
        "lo_truncate",
        "lowrite",
    }
)


READ_ONLY_VOLATILE_FUNCTIONS = frozenset(
    {
        # Volatile only in that their result changes from call to call.
        "clock_timestamp",
        "timeofday",
        "random",
        "random_normal",
        "setseed",
        "gen_random_uuid",
        "pg_sleep",
        "pg_sleep_for",
        "pg_sleep_until",
        "currval",
        "lastval",
        "current_query",
        "cursor_to_xmlschema",
        # Server state, read.
        "pg_blocking_pids",
        "pg_safe_snapshot_blocking_pids",
        "pg_is_in_recovery",
        "pg_is_wal_replay_paused",
        "pg_get_wal_replay_pause_state",
        "pg_database_size",
        "pg_relation_size",
        "pg_table_size",
        "pg_indexes_size",
        "pg_total_relation_size",
        "pg_tablespace_size",
        "pg_lock_status",
        "pg_current_wal_lsn",
        "pg_current_wal_flush_lsn",
        "pg_current_wal_insert_lsn",
        "pg_last_wal_receive_lsn",
        "pg_last_wal_replay_lsn",
        "pg_last_xact_replay_timestamp",
        "pg_last_committed_xact",
        "pg_control_checkpoint",
        "pg_control_init",
        "pg_control_recovery",
        "pg_control_system",
        "pg_partition_tree",
        "pg_partition_ancestors",
        "pg_notification_queue_usage",
        "pg_jit_available",
        "pg_xact_commit_timestamp",
        "pg_xact_commit_timestamp_origin",
        "pg_xact_status",
        "txid_status",
        "pg_sequence_last_value",
        "pg_collation_actual_version",
        "pg_database_collation_actual_version",
        "pg_get_multixact_members",
        "pg_stat_have_stats",
        "pg_stat_clear_snapshot",
        "pg_stat_get_xact_blocks_fetched",
        "pg_stat_get_xact_blocks_hit",
        "pg_stat_get_xact_function_calls",
        "pg_stat_get_xact_function_self_time",
        "pg_stat_get_xact_function_total_time",
        "pg_stat_get_xact_numscans",
        "pg_stat_get_xact_tuples_deleted",
        "pg_stat_get_xact_tuples_fetched",
        "pg_stat_get_xact_tuples_hot_updated",
        "pg_stat_get_xact_tuples_inserted",
        "pg_stat_get_xact_tuples_returned",
        "pg_stat_get_xact_tuples_updated",
        # Built-ins of PostgreSQL 16 and 17 that only compute.
        "any_value",
        "array_sample",
        "array_shuffle",
        "date_add",
        "date_subtract",
        "pg_input_is_valid",
        "pg_input_error_info",
        "to_bin",
        "to_oct",
        "uuid_extract_timestamp",
        "uuid_extract_version",
    }
)
"""Volatile built-ins that only read: with the non-volatile ones, the
functions a statement may call and still count as what it otherwise is."""


BUILTIN_OPERATORS = frozenset(
    {
        "!!",
        "!~",
        "!~*",
        "!~~",
        "!~~*",
        "#",
        "##",
        "#-",
        "#>",
        "#>>",
        "%",
        "&",
        "&&",
        "&<",
        "&<|",
        "&>",
        "*",
        "*<",
        "*<=",
        "*<>",
        "*=",
        "*>",
        "*>=",
        "+",
        "-",
        "->",
        "->>",
        "-|-",
        "/",
        "<",
        "<->",
        "<<",
        "<<=",
        "<<|",
        "<=",
        "<>",
        "<@",
        "<^",
        "=",
        ">",
        ">=",
        ">>",
        ">>=",
        ">^",
        "?",
        "?#",
        "?&",
        "?-",
        "?-|",
        "?|",
        "?||",
        "@",
        "@-@",
        "@>",
        "@?",
        "@@",
        "@@@",
        "^",
        "^@",
        "|",
        "|&>",
        "|/",
        "|>>",
        "||",
        "||/",
        "~",
        "~*",
        "~<=~",
        "~<~",
        "~=",
        "~>=~",
        "~>~",
        "~~",
        "~~*",
    }
)
"""The operators of PostgreSQL's pg_catalog (read off PostgreSQL 15); none
runs a volatile function. Another operator runs a function of its own."""

_OPERATOR_KINDS = frozenset(
    {
        enums.A_Expr_Kind.AEXPR_OP,
        enums.A_Expr_Kind.AEXPR_OP_ANY,
        enums.A_Expr_Kind.AEXPR_OP_ALL,
        enums.A_Expr_Kind.AEXPR_DISTINCT,
        enums.A_Expr_Kind.AEXPR_NOT_DISTINCT,
        enums.A_Expr_Kind.AEXPR_NULLIF,
        enums.A_Expr_Kind.AEXPR_IN,
    }
)


@functools.cache
def builtin_read_functions() -> frozenset[str]:
    """Built-in functions that leave the database as it is (see builtin_functions.txt)."""
    text = resources.files("sluice.policy").joinpath("builtin_functions.txt").read_text()
    names = (line.strip() for line in text.splitlines())
    return frozenset(n for n in names if n and not n.startswith("#")) | READ_ONLY_VOLATILE_FUNCTIONS


def _vetted(parts: list[str], name: str) -> bool:
    """Whether a call of `parts` (as written) is of a built-in that only reads."""
    if len(parts) > 2 or (len(parts) == 2 and parts[0].lower() != "pg_catalog"):
        return False  # another schema's function of that name
    return name in builtin_read_functions()


def _function_category(name: str, call: ast.FuncCall) -> Category | None:
    if name in FILE_PROGRAM_FUNCTIONS or name.startswith(FILE_PROGRAM_FUNCTION_PREFIXES):
        return Category.FILE_PROGRAM
    if name in ADMIN_FUNCTIONS or name.startswith(ADMIN_FUNCTION_PREFIXES):
        return Category.ADMIN
    if name in DYNAMIC_SQL_FUNCTIONS:
        return Category.PROCEDURAL
    if name in WRITE_FUNCTIONS:
        return Category.WRITE
    if name == "set_config":
        setting = _string_constant(call.args[0] if call.args else None)
        if setting is None or setting.lower() in ADMIN_SETTINGS:
            return Category.ADMIN  # a computed setting name could be anything
        return Category.SESSION
    return None


def _string_constant(node: Any) -> str | None:
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
        return node.val.sval
    if isinstance(node, ast.TypeCast):
        return _string_constant(node.arg)
    return None


def _classify_statement(node: ast.Node | None, facts: _Facts) -> None:
    """Set the statement-level kind and category, then walk the tree."""
    if node is None:
        facts.categories.add(Category.UNKNOWN)
        return
    if isinstance(node, ast.ExplainStmt):
        if _explain_analyzes(node):
            facts.via.append("explain_analyze")
            _classify_statement(node.query, facts)
            return
        facts.kind = "explain"
        facts.categories.add(Category.READ)
        _walk(node.query, facts, executing=False)
        return
    if isinstance(node, ast.PrepareStmt):
        facts.via.append("prepare")
        _classify_statement(node.query, facts)
        facts.effect = Prepare(name=node.name or "")
        return
    facts.kind, categories = _statement_kind(node, facts)
    facts.categories.update(categories)
    _walk(node, facts, executing=True)


def _explain_analyzes(node: ast.ExplainStmt) -> bool:
    for option in node.options or ():
        if isinstance(option, ast.DefElem) and option.defname == "analyze":
            return _option_enabled(option.arg)
    return False


def _option_enabled(arg: Any) -> bool:
    """An EXPLAIN option's value; anything unrecognised counts as on."""
    if isinstance(arg, ast.String):
        return (arg.sval or "").lower() not in {"false", "off", "0", "no"}
    if isinstance(arg, ast.Integer):
        return arg.ival != 0
    if isinstance(arg, ast.Boolean):
        return bool(arg.boolval)
    return True


def _statement_kind(node: ast.Node, facts: _Facts) -> tuple[str, tuple[Category, ...]]:
    if isinstance(node, ast.SelectStmt):
        if node.intoClause is not None:
            return "select_into", (Category.DDL, Category.WRITE)
        return "select", (Category.READ,)
    if isinstance(node, tuple(_DML_KINDS)):
        return _DML_KINDS[type(node)], (Category.WRITE,)
    if isinstance(node, ast.CopyStmt):
        direction = Category.WRITE if node.is_from else Category.READ
        if node.is_program or node.filename is not None:
            return "copy", (Category.FILE_PROGRAM, direction)
        return "copy", (direction,)
    if isinstance(node, ast.ExecuteStmt):
        facts.effect = Execute(name=node.name or "")
        return "execute", ()
    if isinstance(node, ast.DeallocateStmt):
        facts.effect = Deallocate(name=None if node.isall else node.name)
        return "deallocate", (Category.SESSION,)
    if isinstance(node, ast.DiscardStmt):
        if node.target == enums.DiscardMode.DISCARD_ALL:
            facts.effect = Deallocate(name=None)
        return "discard", (Category.SESSION,)
    if isinstance(node, ast.CreateTableAsStmt):
        if node.is_select_into:
            return "select_into", (Category.DDL, Category.WRITE)
        if node.objtype == enums.ObjectType.OBJECT_MATVIEW:
            return "create_materialized_view", (Category.DDL, Category.WRITE)
        return "create_table_as", (Category.DDL, Category.WRITE)
    if isinstance(node, ast.VariableSetStmt):
        if (node.name or "").lower() == "search_path":
            facts.changes_search_path = True
        return _set_kind(node)
    if isinstance(node, ast.TransactionStmt):
        return _TRANSACTION_KINDS.get(node.kind, "transaction"), (Category.TRANSACTION,)
    if isinstance(node, ast.GrantStmt | ast.GrantRoleStmt):
        return ("grant" if node.is_grant else "revoke"), (Category.DCL,)
    if isinstance(node, ast.CreateRoleStmt):
        return _ROLE_KINDS.get(node.stmt_type, "create_role"), (Category.DCL,)
    if isinstance(node, ast.CreateFunctionStmt):
        kind = "create_procedure" if node.is_procedure else "create_function"
        return kind, (Category.PROCEDURAL, Category.DDL)
    if isinstance(node, ast.DropStmt):
        return _drop_kind(node, facts)
    if isinstance(node, ast.VacuumStmt):
        return ("vacuum" if node.is_vacuumcmd else "analyze"), (Category.MAINTENANCE,)
    if isinstance(node, ast.FetchStmt):
        return ("move" if node.ismove else "fetch"), (Category.READ,)
    fixed = _FIXED.get(type(node))
    if fixed is not None:
        return fixed
    name = type(node).__name__
    if name.startswith(_DDL_PREFIXES):
        return _snake(name), (Category.DDL,)
    return _snake(name), (Category.UNKNOWN,)


def _set_kind(node: ast.VariableSetStmt) -> tuple[str, tuple[Category, ...]]:
    setting = (node.name or "").lower()
    resetting = node.kind in {enums.VariableSetKind.VAR_RESET, enums.VariableSetKind.VAR_RESET_ALL}
    if setting in ADMIN_SETTINGS:
        base = _SET_ADMIN_KINDS.get(setting, "set")
        kind = base.replace("set_", "reset_", 1) if resetting and base != "set" else base
        return kind, (Category.ADMIN,)
    return ("reset" if resetting else "set"), (Category.SESSION,)


def _drop_kind(node: ast.DropStmt, facts: _Facts) -> tuple[str, tuple[Category, ...]]:
    object_type = node.removeType
    if object_type is None:
        return "drop", (Category.UNKNOWN,)
    kind = "drop_" + object_type.name.removeprefix("OBJECT_").lower()
    if object_type in _RELATION_DROPS:
        for names in node.objects or ():
            parts = [n.sval for n in names if isinstance(n, ast.String) and n.sval]
            if parts:
                schema = parts[-2] if len(parts) >= 2 else None
                facts.extra_written.add(TableRef(schema=schema, name=parts[-1]))
    elif object_type == enums.ObjectType.OBJECT_SCHEMA:
        for schema_name in node.objects or ():
            if isinstance(schema_name, ast.String) and schema_name.sval:
                facts.extra_written.add(TableRef(schema=schema_name.sval, name="*"))
    if object_type in _ADMIN_DROPS:
        return kind, (Category.ADMIN,)
    if object_type == enums.ObjectType.OBJECT_ROLE:
        return kind, (Category.DCL,)
    return kind, (Category.DDL,)


_WRITTEN_ATTRS: dict[type[ast.Node], tuple[str, ...]] = {
    ast.InsertStmt: ("relation",),
    ast.UpdateStmt: ("relation",),
    ast.DeleteStmt: ("relation",),
    ast.MergeStmt: ("relation",),
    ast.TruncateStmt: ("relations",),
    ast.LockStmt: ("relations",),
    ast.IntoClause: ("rel",),
    ast.CreateStmt: ("relation",),
    ast.AlterTableStmt: ("relation",),
    ast.IndexStmt: ("relation",),
    ast.RenameStmt: ("relation",),
    ast.CreateTrigStmt: ("relation",),
    ast.RuleStmt: ("relation",),
    ast.ViewStmt: ("view",),
    ast.RefreshMatViewStmt: ("relation",),
    ast.ClusterStmt: ("relation",),
    ast.ReindexStmt: ("relation",),
}


def _children(node: ast.Node) -> Iterator[Any]:
    for attr in node:
        value = getattr(node, attr)
        if isinstance(value, ast.Node | tuple):
            yield value


def _walk(root: Any, facts: _Facts, *, executing: bool) -> None:
    """Collect relations, calls and nested DML anywhere under `root`.

    Iterative, so deeply nested expressions cannot exhaust the Python stack.
    With `executing` false (plain EXPLAIN) only names are collected.
    """
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):
            stack.extend(node)
            continue
        if not isinstance(node, ast.Node):
            continue
        stack.extend(_children(node))
        if isinstance(node, ast.RangeVar):
            facts.relations.append(node)
        elif isinstance(node, ast.CommonTableExpr) and node.ctename:
            facts.cte_names.add(node.ctename)
        elif isinstance(node, ast.FuncCall):
            _note_call(node, facts, executing=executing)
        elif isinstance(node, ast.A_Expr) and executing and node.kind in _OPERATOR_KINDS:
            _note_operator(node.name, facts)
        elif isinstance(node, ast.SortBy) and executing and node.useOp:
            _note_operator(node.useOp, facts)  # ORDER BY x USING op
        elif isinstance(node, ast.SubLink) and executing and node.operName:
            _note_operator(node.operName, facts)  # x op ANY (SELECT ...)
        if not executing:
            continue
        _note_written(node, facts)
        if isinstance(node, ast.CopyStmt) and node.is_from and node.relation is not None:
            facts.written_ids.add(id(node.relation))
        if isinstance(node, ast.ExecuteStmt):
            facts.effect = Execute(name=node.name or "")
        elif isinstance(node, ast.LockingClause):
            facts.nested_kinds.append("select_for_update")
            facts.categories.add(Category.WRITE)
        elif isinstance(node, ast.AlterTableCmd):
            if node.subtype == enums.AlterTableType.AT_DropColumn:
                facts.nested_kinds.append("drop_column")
        elif type(node) in _DML_KINDS:
            _note_dml(node, facts)


def _note_call(call: ast.FuncCall, facts: _Facts, *, executing: bool) -> None:
    parts = [p.sval for p in call.funcname or () if isinstance(p, ast.String) and p.sval]
    if not parts:
        return
    name = parts[-1].lower()
    facts.functions.add(name)
    if name == "set_config":  # its setting is a string literal: judged per text
        facts.reads_literals = True
    if executing and name == "set_config":
        setting = _string_constant(call.args[0] if call.args else None)
        if setting is None or setting.lower() == "search_path":
            facts.changes_search_path = True
    if executing and name in SIDE_CHANNEL_FUNCTIONS:
        args = call.args or ()
        if len(args) > 1 and _reads_data(args[1]):
            facts.side_channel_data = True
    if executing:
        category = _function_category(name, call)
        if category is not None:
            facts.categories.add(category)
        elif not _vetted(parts, name):
            facts.unvetted_functions.add(".".join(p.lower() for p in parts))
        elif len(parts) == 1:
            facts.builtin_calls.add(name)


def _reads_data(expr: Any) -> bool:
    """Whether an expression refers to a column or holds a subquery."""
    return _holds(expr, (ast.ColumnRef, ast.SubLink))


def _note_operator(name: tuple[Any, ...] | None, facts: _Facts) -> None:
    """An operator (its qualified name as parsed) runs a function too."""
    parts = [p.sval for p in name or () if isinstance(p, ast.String) and p.sval]
    if not parts:
        return
    schema_ok = len(parts) == 1 or (len(parts) == 2 and parts[0].lower() == "pg_catalog")
    if not schema_ok or parts[-1] not in BUILTIN_OPERATORS:
        facts.unvetted_functions.add(f"operator({'.'.join(parts)})")
    elif len(parts) == 1:
        facts.builtin_calls.add(f"operator({parts[0]})")


def _note_written(node: ast.Node, facts: _Facts) -> None:
    for attr in _WRITTEN_ATTRS.get(type(node), ()):
        value = getattr(node, attr)
        for rel in value if isinstance(value, tuple) else (value,):
            if isinstance(rel, ast.RangeVar):
                facts.written_ids.add(id(rel))


def _note_dml(node: ast.Node, facts: _Facts) -> None:
    kind = _DML_KINDS[type(node)]
    if kind != facts.kind or facts.nested_kinds:
        facts.nested_kinds.append(kind)
    facts.categories.add(Category.WRITE)
    if isinstance(node, ast.UpdateStmt | ast.DeleteStmt):
        facts.where_checks.append(is_restricting(node.whereClause))
    elif isinstance(node, ast.MergeStmt):
        facts.where_checks.append(is_restricting(node.joinCondition))


def is_restricting(expr: Any) -> bool:
    """Whether a WHERE (or MERGE ON) condition can restrict rows.

    A heuristic that errs towards "not restricting": a condition without any
    column reference (``true``, ``1=1``, ``random() < 2``, ``$1``) and a
    comparison of an expression with itself (``id = id``) do not restrict;
    OR restricts only if every branch does, AND if any branch does.
    """
    if expr is None:
        return False
    if isinstance(expr, ast.BoolExpr):
        args = expr.args or ()
        if expr.boolop == enums.BoolExprType.OR_EXPR:
            return bool(args) and all(is_restricting(a) for a in args)
        if expr.boolop == enums.BoolExprType.AND_EXPR:
            return any(is_restricting(a) for a in args)
    if (
        isinstance(expr, ast.A_Expr)
        and expr.lexpr is not None
        and expr.rexpr is not None
        and _without_numbers(expr.lexpr) == _without_numbers(expr.rexpr)
    ):
        # Numbers and string literals are ignored: `id + 1 = id + 2` counts
        # like `id + 1 = id + 1`, so a verdict never depends on a literal's
        # value (verdicts are shared by texts that differ only in literals).
        return False
    return _mentions_column(expr)


def _without_numbers(node: Any) -> Any:
    """A comparable form of an expression: numbers, string literals and
    offsets left out."""
    if isinstance(node, ast.Node):
        node = node(skip_none=True)
    if isinstance(node, dict):
        kind = node.get("@")
        out = {}
        for key, value in node.items():
            if key == "location" or key.endswith(("_list_start", "_list_end")):
                continue
            if (kind == "Integer" and key == "ival") or (kind == "Float" and key == "fval"):
                value = 0
            elif (
                kind == "A_Const" and isinstance(value, dict) and value.get("@") == "String"
            ):  # a string literal (names are String nodes too, but not in an A_Const)
                value = {"@": "String", "sval": ""}
            out[key] = _without_numbers(value)
        return out
    if isinstance(node, list | tuple):
        return [_without_numbers(v) for v in node]
    return node


def _mentions_column(root: Any) -> bool:
    return _holds(root, (ast.ColumnRef, ast.CurrentOfExpr))


def _holds(root: Any, kinds: tuple[type[ast.Node], ...]) -> bool:
    """Whether a node of one of `kinds` is anywhere under `root` (iterative)."""
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):
            stack.extend(node)
        elif isinstance(node, kinds):
            return True
        elif isinstance(node, ast.Node):
            stack.extend(_children(node))
    return False


def _known_kinds() -> frozenset[str]:
    kinds = {
        "select",
        "select_into",
        "select_for_update",
        "copy",
        "explain",
        "execute",
        "prepare",
        "create_table_as",
        "create_materialized_view",
        "set",
        "reset",
        "grant",
        "revoke",
        "create_function",
        "create_procedure",
        "vacuum",
        "analyze",
        "fetch",
        "move",
        "drop_column",
        "drop",
        "transaction",
        "unparsable",
        "unknown",
    }
    kinds.update(_DML_KINDS.values())
    kinds.update(kind for kind, _ in _FIXED.values())
    kinds.update(_TRANSACTION_KINDS.values())
    kinds.update(_ROLE_KINDS.values())
    kinds.update(_SET_ADMIN_KINDS.values())
    kinds.update(k.replace("set_", "reset_", 1) for k in _SET_ADMIN_KINDS.values())
    kinds.update("drop_" + t.name.removeprefix("OBJECT_").lower() for t in enums.ObjectType)
    for name in dir(ast):
        if name.endswith("Stmt"):
            kinds.add(_snake(name))
    return frozenset(kinds)


KNOWN_KINDS = _known_kinds()
"""Every kind `classify` can report; policy rejects kind patterns matching none."""


# Client encodings whose multibyte characters may hold ASCII bytes (a trail
# byte of 0x40-0x7E, such as a backslash): PostgreSQL accepts them from
# clients only. A text read as UTF-8 here can be read otherwise there.
CLIENT_ONLY_ENCODINGS: Final = frozenset(
    {"SJIS", "SHIFT_JIS_2004", "BIG5", "GBK", "UHC", "GB18030", "JOHAB"}
)


def reads_backslashes(sql: str) -> bool:
    """Whether a plain `'...'` string literal of `sql` holds a backslash.

    That is the one place where PostgreSQL's lexer reads a text differently
    when the session has standard_conforming_strings off: a backslash then
    escapes the next character, so `'\\''` no longer ends where it ends with
    the setting on (as the policy's parser reads it). Texts without such a
    literal lex the same either way; E'', dollar-quoted strings, identifiers
    and comments do not depend on the setting. A text the lexer rejects
    counts as holding one.
    """
    if "\\" not in sql:
        return False
    try:
        tokens = scan(sql)
    except Exception:  # pglast raises its own parse errors
        return True
    for token in tokens:
        if token.name == "SCONST":
            text = sql[token.start : token.end + 1]  # the lexer's offsets count characters
            if text.startswith("'") and "\\" in text:
                return True
    return False
