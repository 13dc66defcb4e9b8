"""Masking of PostgreSQL results: the bridge from `sluice.masking` to the data path.

Every server message that can carry data passes here when masking applies to
a session: DataRow (text and binary formats), CopyData of COPY TO (text and
CSV; binary COPY is refused), ErrorResponse and NoticeResponse fields, and
NotificationResponse payloads. Any exception means the message must not pass
(the session reports 58000 and ends): masking fails closed.

Column rules need to know where a result column comes from. The
RowDescription names the table OID and column number of plain column
references; lineage (from the statement's parse tree) covers expressions.
Both need the catalog (OIDs to names, `SELECT *`, view definitions), which is
read from the backend once per connection and cached briefly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import pglast
from mypy_extensions import mypyc_attr
from pglast import ast
from pglast.stream import RawStream
from pydantic import ValidationError

from sluice.audit import AuditLog, EventLines, MaskingApplied, MaskingCount, context_fields
from sluice.config import Config, section_error
from sluice.errors import ConfigError
from sluice.events import SessionContext
from sluice.masking import (
    OPAQUE,
    ColumnLineage,
    ColumnOrigin,
    CopyFormat,
    CopyMasker,
    Masker,
    MaskingEngine,
    MaskingError,
    MaskingSpec,
    MaskStats,
    ResultColumn,
    RowMasker,
    StaticCatalog,
    analyze,
    result_lineage,
)
from sluice.masking.pgtypes import (
    JSON_TYPES,
    is_text_like,
    mask_whole_value,
    needs_decoding,
)
from sluice.masking.strategies import Strategy
from sluice.policy.prepared import mentions_words
from sluice.policy.sql import SIDE_CHANNEL_FUNCTIONS, classify
from sluice.policy.textkeys import text_keys
from sluice.policy.verdict import Allow
from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.framing import frame
from sluice.protocols.postgres.rows import (
    datarow_run,
    decode_rows,
    rewrite_rows,
    splice_columns,
)
from sluice.protocols.postgres.tracker import ResultShape
from sluice.recording.spec import resolve_key_ref

# Enum members bound once: compiled, `Enum.MEMBER` is an attribute lookup
# through the enum's metaclass at every use (about 800 instructions on 3.11).
_STRATEGY_NULL: Final = Strategy.NULL
_STRATEGY_REDACT: Final = Strategy.REDACT

log = logging.getLogger(__name__)

# How long a catalog snapshot is trusted before it is read again.
CATALOG_TTL_SECONDS: Final = 60.0

FORMAT_SETTINGS: Final = frozenset(
    {
        "server_version",
        "server_encoding",
        "client_encoding",
        "datestyle",
        "intervalstyle",
        "timezone",
        "integer_datetimes",
        "standard_conforming_strings",
        "is_superuser",
        "session_authorization",
        "default_transaction_read_only",
        "in_hot_standby",
        "scram_iterations",
    }
)
"""Reported settings whose values are formats, flags and names clients read
to decode results: they carry no data and go unmasked."""

REDACTED: Final = "[REDACTED]"
# Distinct statement texts whose result lineage a session keeps.
LINEAGE_CACHE_SIZE: Final = 256

# A batch where at least 3/4 of at least this many rows are pre-check
# candidates is PII-dense: the result's next DENSE_SKIP_BATCHES batches skip
# the pre-check (measured here: 34-41k -> 45-60k rows/s with PII in every
# row), then it runs again in case the data changed.
DENSE_MIN_ROWS: Final = 32
DENSE_SKIP_BATCHES: Final = 8

# Error and notice fields that can quote data (message, detail, hint, context,
# internal query); the others name objects or positions.
_TEXT_FIELDS: Final = frozenset("MDHWq")

_SIDE_CHANNELS_RE: Final = re.compile("|".join(SIDE_CHANNEL_FUNCTIONS), re.IGNORECASE)
_PROCEDURAL_MESSAGE: Final = (
    f"{REDACTED} (raised by procedural code, which may put any value in it, under column masking)"
)


def _raised_by_procedural_code(fields: dict[str, str]) -> bool:
    """Whether a notice or error comes from a procedural language's code (its
    innermost context line names a PL/pgSQL, PL/Python, ... function or block):
    RAISE, ASSERT and their kin write whatever values the code gives them."""
    return fields.get("W", "").startswith("PL/")


_QUOTING_CLASSES: Final = frozenset({"22", "23"})
"""SQLSTATE classes whose messages quote the values they failed on: data
exceptions (`invalid input syntax for type date: "..."`) and integrity
violations (`Key (salary)=(120000) already exists`)."""

_QUOTED: Final = re.compile(r'"(?:[^"]|"")*"')


def _redact_quoted_values(fields: dict[str, str]) -> None:
    """Take out what a data or integrity error quotes of a value. Under column
    rules the value may come from a masked column in any shape (a salary, an
    internal code) that detectors cannot recognise: the message keeps its
    words, the detail (`Key (...)=(...)`, `Failing row contains (...)`) goes."""
    for code in ("M", "W"):
        if code in fields:
            fields[code] = _QUOTED.sub(f'"{REDACTED}"', fields[code])
    if "D" in fields:
        fields["D"] = REDACTED


CATALOG_SQL = """
SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND a.attnum > 0 AND NOT a.attisdropped
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'
ORDER BY c.oid, a.attnum;
SELECT pg_catalog.array_to_string(pg_catalog.current_schemas(false), ',');
SELECT DISTINCT c.relname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('pg_catalog', 'information_schema')
"""


def masking_engine(config: Config) -> MaskingEngine | None:
    """Validate the masking section; None when no profile is declared.

    Every profile a connection names must exist: a typo must not leave data
    unmasked.
    """
    try:
        spec = MaskingSpec.model_validate(config.masking)
    except ValidationError as exc:
        raise section_error("masking", exc) from exc
    declared = {p.name for p in spec.profiles}
    for conn in config.connections:
        for name in conn.masking:
            if name not in declared:
                raise ConfigError(
                    f"connection {conn.name!r} uses masking profile {name!r}, "
                    "which is not declared",
                    hint="declare it under masking.profiles",
                )
    for policy in config.policies:
        for rule in policy.get("rules", ()) or ():
            for name in rule.get("mask_profiles", ()) or ():
                if name not in declared:
                    raise ConfigError(
                        f"policy {policy.get('name')!r} rule {rule.get('name')!r} uses masking "
                        f"profile {name!r}, which is not declared",
                        hint="declare it under masking.profiles",
                    )
    if not spec.profiles:
        return None
    ref = spec.hmac_key
    key = resolve_key_ref(ref, setting="masking.hmac_key") if ref is not None else None
    engine = MaskingEngine(spec, hmac_key=key)
    engine.validate()
    return engine


# Catalog


@dataclass(slots=True)
class PgCatalog:
    """A snapshot of the backend's tables, columns and views."""

    static: StaticCatalog
    by_oid: dict[int, tuple[str, str, dict[int, str]]]

    def origin(self, table_oid: int, attnum: int) -> ColumnOrigin | None:
        found = self.by_oid.get(table_oid)
        if found is None or attnum <= 0:
            return None
        schema, table, columns = found
        column = columns.get(attnum)
        return ColumnOrigin(schema=schema, table=table, column=column) if column else None


def parse_catalog(
    rows: list[list[bytes | None]],
    search_path: str,
    *,
    system_relations: frozenset[str] | None = None,
) -> PgCatalog:
    """The catalog of these rows; with `system_relations`, a complete one (see
    StaticCatalog): a relation it does not list is opaque to lineage."""
    by_oid: dict[int, tuple[str, str, dict[int, str]]] = {}
    tables: dict[tuple[str, str], list[str]] = {}
    views: dict[tuple[str, str], str] = {}
    for oid_b, schema_b, table_b, attnum_b, name_b, view_b in rows:
        if not (oid_b and schema_b and table_b and attnum_b and name_b):
            raise MaskingError("the catalog query returned an incomplete row")
        oid, schema, table = int(oid_b), schema_b.decode(), table_b.decode()
        entry = by_oid.setdefault(oid, (schema, table, {}))
        entry[2][int(attnum_b)] = name_b.decode()
        tables.setdefault((schema, table), []).append(name_b.decode())
        if view_b is not None:
            views[(schema, table)] = view_b.decode()
    path = tuple(s for s in search_path.split(",") if s) or ("public",)
    return PgCatalog(
        static=StaticCatalog(
            tables=tables,
            views=views,
            search_path=path,
            complete=system_relations is not None,
            system_relations=system_relations or frozenset(),
        ),
        by_oid=by_oid,
    )


_LENGTH: Final = struct.Struct("!I")
NULL_VALUE: Final = b"\xff\xff\xff\xff"  # a DataRow value's length -1: SQL NULL

QueryRunner = Callable[[str], Awaitable[list[list[list[bytes | None]]]]]
Snapshot = TypeVar("Snapshot")


class CatalogCache(Generic[Snapshot]):
    """What `load` reads from a connection's catalog (with the gateway's own
    credential), kept per connection and read again after CATALOG_TTL_SECONDS."""

    def __init__(self, load: Callable[[QueryRunner], Awaitable[Snapshot]]) -> None:
        self._load = load
        self._snapshots: dict[str, tuple[float, Snapshot]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, connection: str, run: QueryRunner) -> Snapshot:
        async with self._locks.setdefault(connection, asyncio.Lock()):
            kept = self._snapshots.get(connection)
            if kept is not None and time.monotonic() - kept[0] < CATALOG_TTL_SECONDS:
                return kept[1]
            snapshot = await self._load(run)
            self._snapshots[connection] = (time.monotonic(), snapshot)
            return snapshot


async def load_catalog(run: QueryRunner) -> PgCatalog:
    """The tables, columns and views masking needs, the search_path, and the
    names of the system relations."""
    rows, path_rows, system_rows = await run(CATALOG_SQL)
    path = (path_rows[0][0] or b"public").decode() if path_rows else "public"
    system = frozenset(row[0].decode() for row in system_rows if row[0] is not None)
    return parse_catalog(rows, path, system_relations=system)


# COPY TO STDOUT and COPY FROM STDIN


def copy_format(sql: str, *, inbound: bool = False) -> tuple[CopyFormat | None, bool]:
    """The format of the COPY TO (with `inbound`, COPY FROM) in `sql`:
    (format, is_binary). Unknown: (None, False)."""
    try:
        statements = pglast.parse_sql(sql)
    except Exception:
        return None, False
    for raw in statements:
        stmt = raw.stmt
        if not isinstance(stmt, ast.CopyStmt) or bool(stmt.is_from) != inbound:
            continue
        options: dict[str, Any] = {}
        for opt in stmt.options or ():
            if isinstance(opt, ast.DefElem) and opt.defname:
                value = opt.arg
                if isinstance(value, ast.String):
                    options[opt.defname] = value.sval
                elif isinstance(value, ast.Boolean):
                    options[opt.defname] = value.boolval
                elif isinstance(value, ast.Integer):
                    options[opt.defname] = bool(value.ival)
                else:
                    options[opt.defname] = True
        kind = str(options.get("format", "text")).lower()
        if kind == "binary":
            return None, True
        csv = kind == "csv"

        fmt = CopyFormat(
            kind="csv" if csv else "text",
            delimiter=_option_bytes(options, "delimiter") or b"",
            null=_option_bytes(options, "null"),
            quote=_option_bytes(options, "quote") or b'"',
            escape=_option_bytes(options, "escape"),
            header=bool(options.get("header", False)),
        )
        return fmt, False
    return None, False


def _option_bytes(options: dict[str, Any], name: str) -> bytes | None:
    value = options.get(name)
    return value.encode() if isinstance(value, str) else None


# The session bridge


@mypyc_attr(allow_interpreted_subclasses=True)  # tests take out one step in a subclass
class PgSessionMasking:
    """Masking of one session's results (implements governance's SessionMasking)."""

    def __init__(
        self,
        *,
        engine: MaskingEngine,
        profiles: Sequence[str],
        context: SessionContext,
        audit: AuditLog,
        catalog: PgCatalog | None,
    ):
        self.engine = engine
        self.context = context
        self.audit = audit
        self.catalog = catalog
        self._profiles: tuple[str, ...] = tuple(dict.fromkeys(profiles))
        self.masker: Masker = engine.masker(self._profiles)
        self._applied_lines = self._masking_applied_lines()
        self._precheck = self.masker.region_precheck
        self._shape: ResultShape | None = None
        self._shape_prechecks = False
        self._precheck_skips = 0  # batches of the current result that go without it
        self._plan: RowMasker | None = None
        self._plan_columns: list[ResultColumn] | None = None
        self._constant_plan: RowMasker | None = None
        # By exact text and by `_lineage_text_key`: (text, n) or (kind, key, n).
        self._lineages: dict[tuple[str | int, ...], list[ColumnLineage]] = {}
        self._static: StaticCatalog | None = catalog.static if catalog else None
        self._replacements: tuple[bytes | None, ...] | None = None
        self._columns: list[ResultColumn] = []
        self._stats: MaskStats | None = None
        self._copy: CopyMasker | None = None
        self._copy_in: CopyMasker | None = None

    @property
    def profiles(self) -> tuple[str, ...]:
        return self._profiles

    def _masking_applied_lines(self) -> EventLines:
        """A result's masking counts as audit lines, without event objects
        (see EventLines), for the session's current profiles."""
        return EventLines(MaskingApplied, **context_fields(self.context), profiles=self._profiles)

    def search_path_changed(self) -> None:
        """The session changed its search_path: from now on an unqualified table
        resolves to no known schema, so its columns' lineage is unresolved and
        column rules for that table name in any schema apply (fail closed)."""
        if self.catalog is not None:
            self._static = dataclasses.replace(self.catalog.static, search_path=())
        self._lineages.clear()
        self._shape = None  # the next result is planned afresh
        self._plan_columns = None
        self._constant_plan = None

    def statement_allowed(self, sql: str, verdict: Allow) -> None:
        """Profiles a policy rule attached stay on for the rest of the session.

        Masking more than asked never leaks; binding profiles to exactly one
        statement across pipelined results is not worth that risk.

        Raises MaskingError for a statement that would carry values out of
        masked columns past masking: under column rules, a set_config or
        pg_notify whose value is computed from data (`SHOW` or `LISTEN`
        reads it back with no column behind it).
        """
        extra = verdict.mask.profiles if verdict.mask else ()
        if any(p not in self._profiles for p in extra):
            self._profiles = tuple(dict.fromkeys((*self._profiles, *extra)))
            self._applied_lines = self._masking_applied_lines()
            self.masker = self.engine.masker(self._profiles)
            self._precheck = self.masker.region_precheck
            self._shape = None
            self._plan_columns = None
            self._constant_plan = None
        if (
            self.masker.has_column_rules
            and mentions_words(sql, SIDE_CHANNEL_FUNCTIONS, _SIDE_CHANNELS_RE)
            and any(s.side_channel_data for s in classify(sql).statements)
        ):
            raise MaskingError(
                "set_config or pg_notify with a value computed from columns is refused under "
                "column masking: it could be read back unmasked; pass a constant"
            )

    def may_need_masking(self, data: bytes) -> bool:
        """False only when no detector can fire anywhere in `data` (raw bytes
        that hold values, such as a Bind's): its values may then go unscanned."""
        check = self._precheck
        return check is None or check.may_contain(data)

    def mask_statement(self, sql: str) -> str:
        """A statement's text as recordings and audit may keep it (literals masked).

        The pre-check's scan goes first: it stops at the first possible match
        and collects nothing, so a text with none (most statements' are, their
        literals numbers) skips the scanner's costlier one; a text with one
        pays both.
        """
        check = self._precheck
        if check is not None:
            try:
                clean = not check.may_contain(sql.encode("utf-8", "surrogatepass"))
            except Exception as exc:  # a masking failure, as mask_text reports its own
                raise MaskingError(f"masking failed: {type(exc).__name__}") from exc
            if clean:
                return sql
        masked, _ = self.masker.mask_text(sql)
        return masked

    # Rows

    def _result_columns(self, shape: ResultShape) -> list[ResultColumn]:
        last = self._shape
        if shape is last:
            return self._columns
        if (
            last is not None
            and shape.fields is last.fields  # descriptions are shared (tracker cache)
            and (not self.masker.has_column_rules or shape.sql == last.sql)
        ):
            # The same columns again (the next query of the same kind): only
            # column rules depend on the statement text, through lineage.
            self._shape = shape
            self._precheck_skips = 0
            return self._columns
        lineage: list[ColumnLineage] | None = None
        if self.masker.has_column_rules:
            lineage = self._lineage(shape)
        columns = []
        for index, f in enumerate(shape.fields):
            origin = self.catalog.origin(f.table_oid, f.column) if self.catalog else None
            columns.append(
                ResultColumn(
                    name=f.name,
                    type_oid=f.type_oid,
                    format=f.format,
                    origin=origin,
                    lineage=lineage[index] if lineage is not None else None,
                )
            )
        self._shape, self._columns = shape, columns
        # The raw-buffer pre-check stands in for per-value scanning only when
        # content detectors are all that applies and every value's bytes are
        # what the detectors would read (no binary number or address, or text
        # bytea, to decode).
        self._shape_prechecks = (
            self._precheck is not None
            and not self.masker.has_column_rules
            and not any(needs_decoding(f.type_oid, f.format) for f in shape.fields)
        )
        self._precheck_skips = 0
        return columns

    def _lineage(self, shape: ResultShape) -> list[ColumnLineage]:
        """Lineage of a result's columns; parsed once per statement text, up
        to its numbers and string literals (which lineage never reads)."""
        n = len(shape.fields)
        key = (shape.sql, n)
        lineages = self._lineages
        cached = lineages.get(key)
        if cached is not None:
            return cached
        shape_key = (*_lineage_text_key(shape.sql), n)
        lineage = lineages.get(shape_key)
        if lineage is None:
            lineage = [OPAQUE] * n
            if shape.sql:
                catalog = self._static
                statements = analyze(shape.sql, catalog)  # never raises; opaque on failure
                # With several statements, which one produced this result is not
                # known for sure: every column is then of unknown origin.
                if len(statements) == 1:
                    lineage = statements[0].for_result(n)
        if len(lineages) >= LINEAGE_CACHE_SIZE:
            lineages.clear()
        lineages[key] = lineages[shape_key] = lineage
        return lineage

    def mask_rows(
        self,
        shape: ResultShape | None,
        region: bytes | memoryview,
        count: int,
        starts: list[int] | None = None,
    ) -> bytes | None:
        """Mask a run of `count` DataRow frames; `starts`: where each begins, if known."""
        if shape is None:
            raise MaskingError("rows arrived for a result whose columns are unknown")
        columns = self._result_columns(shape)
        if columns is self._plan_columns:
            plan = self._plan
        else:
            plan = self._plan = self.masker.prepare(columns)
            self._plan_columns = columns
        if plan is None:
            return None
        if starts is None:
            walked, starts = datarow_run(region, 0, len(region))
            if walked != len(region):
                raise MaskingError("the rows of a result do not match their framing")
        if len(starts) != count:
            raise MaskingError("the rows of a result do not match their framing")
        replacements = self._constant_columns(plan)
        if replacements is not None:
            try:
                spliced, masked_values = splice_columns(region, starts, replacements)
            except ValueError as exc:
                raise MaskingError(str(exc)) from None
            if masked_values:
                replaced = [i for i, new in enumerate(replacements) if new is not None]
                stats = MaskStats.of(
                    masked_values,
                    Counter(),
                    Counter({shape.fields[i].name: masked_values for i in replaced}),
                )
                self._stats = stats if self._stats is None else self._stats + stats
            return spliced if masked_values else None
        chosen: list[int] | None = None
        if self._shape_prechecks and self._precheck_skips:
            self._precheck_skips -= 1
        elif self._shape_prechecks:
            assert self._precheck is not None
            chosen = self._precheck.candidate_rows(region, starts)
            if chosen is not None and not chosen:
                return None
            if chosen is not None and count >= DENSE_MIN_ROWS and 4 * len(chosen) >= 3 * count:
                # Nearly every row may hold PII: for the next batches of this
                # result the pre-check would only add a pass (and a hit per
                # item); every row goes to the exact scan, as without it.
                self._precheck_skips = DENSE_SKIP_BATCHES
        indexes = chosen if chosen is not None else list(range(count))
        try:
            rows = decode_rows(region, starts, indexes)
        except ValueError as exc:
            raise MaskingError(str(exc)) from None
        masked, stats = plan.mask_rows(rows)
        if stats.values:
            self._stats = stats if self._stats is None else self._stats + stats
        if len(masked) != len(rows):
            raise MaskingError("masking returned a different number of rows")
        changed = [(indexes[j], masked[j]) for j in range(len(rows)) if rows[j] is not masked[j]]
        if not changed:
            return None
        try:
            return rewrite_rows(region, starts, changed)
        except ValueError as exc:
            raise MaskingError(str(exc)) from None

    def _constant_columns(self, plan: RowMasker) -> tuple[bytes | None, ...] | None:
        """Replacements of a plan that only swaps whole columns for fixed values.

        Column rules with `null`, or `redact` on a text column, replace every
        value with the same bytes: such rows are rewritten by splicing bytes,
        without decoding the other columns. None: the plan needs the full path.
        """
        if plan is not self._constant_plan:
            self._constant_plan = plan
            self._replacements = self._plan_constants(plan)
        return self._replacements

    def _plan_constants(self, plan: Any) -> tuple[bytes | None, ...] | None:
        """Per column up to the last replaced one: None (kept) or the new value
        with its length in front (-1 for NULL), as `splice_columns` takes them."""
        whole = getattr(plan, "_whole", ())
        if getattr(plan, "_scan", ()) or not whole:
            return None
        constants: dict[int, bytes] = {}
        for rule in whole:
            col = rule.column
            if rule.action.strategy is _STRATEGY_NULL:
                constants[rule.index] = NULL_VALUE
            elif (
                rule.action.strategy is _STRATEGY_REDACT
                and is_text_like(col.type_oid, col.format)
                and col.type_oid not in JSON_TYPES
            ):
                replacer = self.masker._replacer
                value = mask_whole_value(b"x", col.type_oid, col.format, rule.action, replacer)
                constants[rule.index] = (
                    NULL_VALUE if value is None else _LENGTH.pack(len(value)) + value
                )
            else:
                return None
        return tuple(constants.get(i) for i in range(max(constants) + 1))

    def result_done(self) -> None:
        """Audit what one result had masked: counts only, never values."""
        stats, self._stats = self._stats, None
        if stats is None or not stats.values:
            return
        counts = tuple(
            MaskingCount(column=column, detector=detector, count=n)
            for (column, detector), n in _pairs(stats)
        )
        self.audit.emit_lines(self._applied_lines, {"counts": counts})

    # Messages

    def mask_parameter_status(self, body: bytes) -> bytes | None:
        """A ParameterStatus to send instead of `body` (None: it goes as it is).

        A reported setting may carry data: `set_config('application_name',
        email, false)` reports the value to the client. Settings whose values
        are formats and flags go as they are; any other value is masked like
        message text, and redacted whole under column rules, which cannot
        tell whether it came from a masked column.
        """
        name, value = m.decode_parameter_status(body)
        if name.lower() in FORMAT_SETTINGS or not value:
            return None
        if self.masker.has_column_rules:
            masked = REDACTED
        else:
            masked, _ = self.masker.mask_text(value)
        return None if masked == value else m.parameter_status(name, masked)

    def mask_message(self, kind: int, body: bytes) -> bytes:
        if kind in (m.ERROR_RESPONSE, m.NOTICE_RESPONSE):
            fields = m.decode_fields(body)
            if self.masker.has_column_rules:
                if _raised_by_procedural_code(fields):
                    for code in ("M", "D", "H"):
                        if code in fields:
                            fields[code] = _PROCEDURAL_MESSAGE
                elif fields.get("C", "")[:2] in _QUOTING_CLASSES:
                    _redact_quoted_values(fields)
            for code in fields.keys() & _TEXT_FIELDS:
                fields[code], _ = self.masker.mask_text(fields[code])
            return m.encode_fields(bytes((kind,)), fields)[5:]
        if kind == m.NOTIFICATION_RESPONSE:
            pid, channel, payload = m.decode_notification(body)
            payload, _ = self.masker.mask_text(payload)
            return m.encode_notification(pid, channel, payload)[5:]
        return body

    # COPY TO STDOUT

    def copy_started(self, body: bytes, sql: str) -> None:
        """A CopyOutResponse: set up the masker for the data that follows."""
        masker, binary = self._copy_masker(body, sql, inbound=False)
        if binary:
            raise MaskingError(
                "binary COPY cannot be masked; use COPY ... TO STDOUT in text or CSV format"
            )
        self._copy = masker

    def _copy_masker(
        self, body: bytes, sql: str, *, inbound: bool
    ) -> tuple[CopyMasker | None, bool]:
        """The masker for the COPY a CopyOut/CopyInResponse (`body`) starts
        (None when nothing applies), and whether it is binary (no masker)."""
        overall = body[0] if body else 0
        ncols = struct.unpack_from("!h", body, 1)[0] if len(body) >= 3 else 0
        fmt, binary = copy_format(sql, inbound=inbound)
        if overall == 1 or binary:
            return None, True
        lineage = self._copy_lineage(sql, ncols)
        columns = [
            ResultColumn(name=f"column{i + 1}", type_oid=25, format=0, lineage=lineage[i])
            for i in range(ncols)
        ]
        masker = self.masker.copy_masker(columns, fmt or CopyFormat(kind="text"), self._precheck)
        return masker, False

    def _copy_lineage(self, sql: str, ncols: int) -> list[ColumnLineage]:
        if not self.masker.has_column_rules:
            return [OPAQUE] * ncols
        catalog = self._static
        try:
            stmt = pglast.parse_sql(sql)[0].stmt
        except Exception:
            return [OPAQUE] * ncols
        if isinstance(stmt, ast.CopyStmt) and stmt.query is not None:
            inner = RawStream()(stmt.query)
            return result_lineage(inner, ncols, catalog)
        if isinstance(stmt, ast.CopyStmt) and stmt.relation is not None:
            rel = stmt.relation
            names = [c.sval for c in (stmt.attlist or ()) if isinstance(c, ast.String)]
            cols = ", ".join(f'"{n}"' for n in names) if names else "*"
            target = (
                f'"{rel.schemaname}"."{rel.relname}"' if rel.schemaname else (f'"{rel.relname}"')
            )
            # Names come from the parse tree of the client's COPY, quoted; this
            # text is only parsed for lineage, never sent anywhere.
            query = f"SELECT {cols} FROM {target}"  # noqa: S608
            return result_lineage(query, ncols, catalog)
        return [OPAQUE] * ncols

    # COPY FROM STDIN: the server gets the client's data; the session log a masked copy

    def copy_in_started(self, body: bytes, sql: str) -> str | None:
        """A CopyInResponse: set up masking of the data for the session log.

        Returns why the data cannot be kept in the log (binary COPY), or None.
        """
        self._copy_in, binary = self._copy_masker(body, sql, inbound=True)
        return "binary COPY data cannot be masked, so it is not kept" if binary else None

    def mask_copy_in(self, body: bytes) -> bytes:
        """The masked form of every COPY record completed by `body`, for the log."""
        return body if self._copy_in is None else self._copy_in.feed(body)

    def copy_in_done(self) -> bytes:
        """The masked last record of a COPY FROM (one without a newline)."""
        copy, self._copy_in = self._copy_in, None
        return b"" if copy is None else copy.finish()

    def mask_copy(self, body: bytes) -> bytes:
        if self._copy is None:
            raise MaskingError("COPY data arrived without a CopyOutResponse")
        return self._copy.feed(body)

    def copy_done(self) -> bytes:
        """The rest of a masked COPY (a last line without its newline)."""
        copy, self._copy = self._copy, None
        if copy is None:
            return b""
        tail = copy.finish()
        stats = copy.stats
        if stats.values:
            self._stats = stats if self._stats is None else self._stats + stats
        self.result_done()
        return frame(b"d", tail) if tail else b""


def _pairs(stats: MaskStats) -> list[tuple[tuple[str, str], int]]:
    """Counts per (column, detector) for audit: from the per-column and per-detector tallies."""
    pairs: list[tuple[tuple[str, str], int]] = []
    for column, n in sorted(stats.by_column.items()):
        pairs.append(((column, "*"), n))
    for detector, n in sorted(stats.by_detector.items()):
        pairs.append((("*", detector), n))
    return pairs


def explain_masking(
    config: Config, connection: str, sql: str, verdict: object
) -> list[dict[str, str]]:
    """Which output columns of `sql` would be masked on `connection`, by what and why.

    Offline: no catalog, so `*` cannot be expanded (a note says so) and plain
    columns are judged by name and lineage only.
    """
    engine = masking_engine(config)
    conn = config.connection(connection)
    if engine is None or conn is None:
        return []
    profiles = list(conn.masking)
    if isinstance(verdict, Allow) and verdict.mask is not None:
        profiles += [p for p in verdict.mask.profiles if p not in profiles]
    if not profiles:
        return []
    masker = engine.masker(profiles)
    out: list[dict[str, str]] = []
    for statement in analyze(sql):
        columns = statement.columns
        if columns is None:
            if masker.has_column_rules:
                out.append(
                    {
                        "column": "(every column)",
                        "strategy": "column rules",
                        "why": "lineage unknown for this statement: rules apply to all",
                    }
                )
            continue
        for item in columns:
            if item.star:
                out.append(
                    {
                        "column": item.name or "*",
                        "strategy": "per column",
                        "why": "expanded from the catalog when the statement runs",
                    }
                )
                continue
            name = item.name or "?column?"
            action = masker.column_action(
                ResultColumn(name=name, type_oid=25, lineage=item.lineage)
            )
            if action is None:
                continue
            origins = ", ".join(
                sorted(
                    f"{o.schema + '.' if o.schema else ''}{o.table}.{o.column}"
                    for o in item.lineage.origins
                )
            )
            why = (
                "lineage unknown"
                if item.lineage.opaque
                else (f"column rule on {origins}" if origins else "column rule on its name")
            )
            out.append({"column": name, "strategy": action.strategy.value, "why": why})
    if masker.content and masker.has_detectors:
        names = ", ".join(sorted(d.name for d in masker.scanner.detectors))
        out.append(
            {
                "column": "(every text value)",
                "strategy": "detectors",
                "why": f"content rule of profile(s) {', '.join(profiles)}: {names}",
            }
        )
    return out


def _lineage_text_key(sql: str) -> tuple[str, str]:
    """`sql` up to the values of its numbers and string literals, with its kind.

    Column lineage follows names only (relations, columns, functions), never a
    literal's value, so texts that share this key share their columns' lineage;
    a text the lexer cannot read is its own key.
    """
    keys = text_keys(sql)
    if keys is None:
        return "text", sql
    exact, literals = keys
    return literals if literals is not None else exact
