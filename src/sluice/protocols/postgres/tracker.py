"""Which request each server response answers, for the extended protocol.

The server answers client messages strictly in order, so a FIFO of the
messages the gateway forwarded tells what a response belongs to: which
statement's RowDescription arrived, which portal's rows are flowing (and in
which formats), and where an error's discard-until-Sync ends. This is what
lets masking know the columns of rows that arrive with no RowDescription in
front of them (a Bind/Execute of a statement described earlier).

Sans-IO: the caller reports forwarded client messages and received server
message types; the tracker never touches bytes beyond the few it decodes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Final, Protocol

from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.errors import TooManyPendingRequests
from sluice.protocols.postgres.messages import FieldDescription

# A client may pipeline without limit in principle; a gateway must not track
# unboundedly. libpq and drivers pipeline far fewer messages than this.
MAX_PENDING_REQUESTS = 100_000

# Decoded RowDescriptions by their bytes: a session (and every session running
# the same queries) sees the same few descriptions over and over. The lists
# are shared and never modified.
ROW_DESCRIPTION_CACHE_SIZE: Final = 2048
FORMATS_CACHE_SIZE: Final = 64
MAX_CACHED_ROW_DESCRIPTION_BYTES: Final = 4096
_row_descriptions: Final[dict[bytes, list[FieldDescription]]] = {}


def row_description(body: bytes) -> list[FieldDescription]:
    """`decode_row_description`, remembered for descriptions seen before."""
    fields = _row_descriptions.get(body)
    if fields is None:
        fields = m.decode_row_description(body)
        if len(body) <= MAX_CACHED_ROW_DESCRIPTION_BYTES:
            if len(_row_descriptions) >= ROW_DESCRIPTION_CACHE_SIZE:
                _row_descriptions.clear()
            _row_descriptions[body] = fields
    return fields


class Pending(Enum):
    QUERY = auto()
    PARSE = auto()
    BIND = auto()
    DESCRIBE_STATEMENT = auto()
    DESCRIBE_PORTAL = auto()
    EXECUTE = auto()
    CLOSE = auto()
    SYNC = auto()
    FUNCTION_CALL = auto()


# Enum members bound once: compiled, `Enum.MEMBER` is an attribute lookup
# through the enum's metaclass at every use (about 800 instructions on 3.11).
_PENDING_BIND: Final = Pending.BIND
_PENDING_CLOSE: Final = Pending.CLOSE
_PENDING_DESCRIBE_PORTAL: Final = Pending.DESCRIBE_PORTAL
_PENDING_DESCRIBE_STATEMENT: Final = Pending.DESCRIBE_STATEMENT
_PENDING_EXECUTE: Final = Pending.EXECUTE
_PENDING_FUNCTION_CALL: Final = Pending.FUNCTION_CALL
_PENDING_PARSE: Final = Pending.PARSE
_PENDING_QUERY: Final = Pending.QUERY
_PENDING_SYNC: Final = Pending.SYNC


# The per-request classes below are plain classes, not dataclasses: compiled,
# their constructors are native, where a dataclass's generated `__init__` runs
# as interpreted Python (about 4x slower), and these are made per message.


class ResultShape:
    """The columns of the rows currently flowing, and the SQL behind them."""

    __slots__ = ("fields", "sql", "statement_index")

    def __init__(
        self, *, fields: list[FieldDescription], sql: str, statement_index: int = 0
    ) -> None:
        self.fields = fields
        self.sql = sql
        self.statement_index = statement_index


class StatementChange(Protocol):
    """A change to the server's prepared statements riding on a request.

    The tracker tells it whether the server ran it: a Parse or Close by its
    completion message, an Execute by its CommandComplete, a simple Query's
    statement at `index` by the query's count of CommandCompletes; an error
    (and the discard up to Sync) means it did not run.
    """

    @property
    def index(self) -> int: ...

    def settle(self, applied: bool) -> None: ...


_NO_CHANGES: Final[tuple[StatementChange, ...]] = ()


class _Request:
    __slots__ = ("changes", "formats", "kind", "name", "sql")

    def __init__(
        self,
        *,
        kind: Pending,
        name: str = "",
        sql: str = "",
        formats: tuple[int, ...] = (),
        changes: tuple[StatementChange, ...] = _NO_CHANGES,
    ) -> None:
        self.kind = kind
        self.name = name
        self.sql = sql
        self.formats = formats
        self.changes = changes


class _Portal:
    __slots__ = ("fields", "formats", "generation", "sql", "statement")

    def __init__(
        self,
        *,
        statement: str,
        formats: tuple[int, ...],
        sql: str = "",
        fields: list[FieldDescription] | None = None,
        generation: int = 0,
    ) -> None:
        self.statement = statement
        self.formats = formats
        # The statement as it was when the portal was bound: a later Parse that
        # reuses the statement's name must not change what this portal returns.
        self.sql = sql
        self.fields = fields
        self.generation = generation


@dataclass(slots=True)
class QueryTracker:
    statements: dict[str, tuple[str, list[FieldDescription] | None]] = field(default_factory=dict)
    portals: dict[str, _Portal] = field(default_factory=dict)
    pending: deque[_Request] = field(default_factory=deque)
    current: ResultShape | None = None
    _query_sql: str = ""
    _query_results: int = 0
    _query_completes: int = 0
    _discarding: bool = False
    # Each ParseComplete gets a new generation, so a portal can tell whether
    # the statement under its name is still the one it was bound to.
    _generation: int = 0
    _statement_generations: dict[str, int] = field(default_factory=dict)
    _formats_cache: dict[
        tuple[int, tuple[int, ...]], tuple[list[FieldDescription], list[FieldDescription]]
    ] = field(default_factory=dict)

    # Client side

    def _push(self, request: _Request) -> None:
        if self._discarding:
            # After an error in the extended protocol the server ignores every
            # message up to the next Sync; so does the tracker.
            if request.kind is not _PENDING_SYNC:
                _settle(request, False)
                return
            self._discarding = False
        if len(self.pending) >= MAX_PENDING_REQUESTS:
            raise TooManyPendingRequests("too many pipelined requests awaiting responses")
        self.pending.append(request)

    def on_query(self, sql: str, changes: tuple[StatementChange, ...] = _NO_CHANGES) -> None:
        self._push(_Request(kind=_PENDING_QUERY, sql=sql, changes=changes))

    def on_parse(
        self, name: str, sql: str, changes: tuple[StatementChange, ...] = _NO_CHANGES
    ) -> None:
        self._push(_Request(kind=_PENDING_PARSE, name=name, sql=sql, changes=changes))

    def on_bind(self, portal: str, statement: str, formats: tuple[int, ...]) -> None:
        self._push(_Request(kind=_PENDING_BIND, name=portal, sql=statement, formats=formats))

    def on_describe(self, kind: str, name: str) -> None:
        pending = _PENDING_DESCRIBE_STATEMENT if kind == "S" else _PENDING_DESCRIBE_PORTAL
        self._push(_Request(kind=pending, name=name))

    def on_execute(self, portal: str, changes: tuple[StatementChange, ...] = _NO_CHANGES) -> None:
        self._push(_Request(kind=_PENDING_EXECUTE, name=portal, changes=changes))

    def on_close(
        self, kind: str, name: str, changes: tuple[StatementChange, ...] = _NO_CHANGES
    ) -> None:
        self._push(_Request(kind=_PENDING_CLOSE, name=f"{kind}{name}", changes=changes))

    def on_sync(self) -> None:
        self._push(_Request(kind=_PENDING_SYNC))

    def on_function_call(self, result_format: int = 0) -> None:
        self._push(_Request(kind=_PENDING_FUNCTION_CALL, formats=(result_format,)))

    def function_result_format(self) -> int:
        """The format (0 text, 1 binary) of the fast-path result arriving now."""
        head = self._head()
        if head is None or head.kind is not _PENDING_FUNCTION_CALL or not head.formats:
            return 0
        return head.formats[0]

    def statement_sql(self, name: str) -> str | None:
        entry = self.statements.get(name)
        return entry[0] if entry else None

    def portal_statement(self, portal: str) -> str | None:
        found = self.portals.get(portal)
        return found.statement if found else None

    # Server side

    def _head(self) -> _Request | None:
        return self.pending[0] if self.pending else None

    def _pop(self, *kinds: Pending) -> _Request | None:
        if self.pending and self.pending[0].kind in kinds:
            return self.pending.popleft()
        return None

    def on_server(self, kind: int, body: bytes | None = None) -> None:
        """Advance on one server message; `body` is needed for 'T' only."""
        if kind == m.PARSE_COMPLETE:
            req = self._pop(_PENDING_PARSE)
            if req is not None:
                _settle(req, True)
                self.statements[req.name] = (req.sql, None)
                self._generation += 1
                self._statement_generations[req.name] = self._generation
        elif kind == m.BIND_COMPLETE:
            req = self._pop(_PENDING_BIND)
            if req is not None:
                sql, fields = self.statements.get(req.sql, ("", None))
                self.portals[req.name] = _Portal(
                    statement=req.sql,
                    formats=req.formats,
                    sql=sql,
                    fields=fields,
                    generation=self._statement_generations.get(req.sql, -1),
                )
        elif kind == m.CLOSE_COMPLETE:
            req = self._pop(_PENDING_CLOSE)
            if req is not None:
                _settle(req, True)
                target, name = req.name[:1], req.name[1:]
                if target == "S":
                    self.statements.pop(name, None)
                    self._statement_generations.pop(name, None)
                else:
                    self.portals.pop(name, None)
        elif kind == m.PARAMETER_DESCRIPTION:
            pass
        elif kind == m.ROW_DESCRIPTION:
            self._on_row_description(row_description(body or b""))
        elif kind == m.NO_DATA:
            self._pop(_PENDING_DESCRIBE_STATEMENT, _PENDING_DESCRIBE_PORTAL)
        elif kind in (m.COMMAND_COMPLETE, m.EMPTY_QUERY, m.PORTAL_SUSPENDED):
            head = self._head()
            if head is not None:
                if head.kind is _PENDING_EXECUTE:
                    _settle(self.pending.popleft(), kind == m.COMMAND_COMPLETE)
                elif head.kind is _PENDING_QUERY:
                    self._query_completes += kind == m.COMMAND_COMPLETE
            self.current = None
        elif kind == m.FUNCTION_CALL_RESPONSE:
            pass  # the FunctionCall is answered when its ReadyForQuery arrives
        elif kind == m.ERROR_RESPONSE:
            self._on_error()
        elif kind == m.READY_FOR_QUERY:
            req = self._pop(_PENDING_SYNC, _PENDING_QUERY, _PENDING_FUNCTION_CALL)
            if req is not None and req.changes:
                # A simple Query's statements run in order up to the first error.
                for change in req.changes:
                    change.settle(change.index < self._query_completes)
            self.current = None
            self._query_results = 0
            self._query_completes = 0
            self.portals.pop("", None)

    def _on_row_description(self, fields: list[FieldDescription]) -> None:
        head = self._head()
        if head is None:
            return
        if head.kind is _PENDING_QUERY:
            self.current = ResultShape(
                fields=fields, sql=head.sql, statement_index=self._query_results
            )
            self._query_results += 1
        elif head.kind is _PENDING_DESCRIBE_STATEMENT:
            self.pending.popleft()
            sql = self.statement_sql(head.name) or ""
            self.statements[head.name] = (sql, fields)
        elif head.kind is _PENDING_DESCRIBE_PORTAL:
            self.pending.popleft()
            portal = self.portals.get(head.name)
            if portal is not None:
                # The portal's own description carries its columns and real formats.
                portal.fields = fields
                portal.formats = tuple(f.format for f in fields)

    def current_sql(self) -> str:
        """The SQL whose response is arriving now (a simple query's whole text)."""
        head = self._head()
        if head is None:
            return ""
        if head.kind is _PENDING_QUERY:
            return head.sql
        if head.kind is _PENDING_EXECUTE:
            portal = self.portals.get(head.name)
            return portal.sql if portal is not None else ""
        return ""

    def rows_shape(self) -> ResultShape | None:
        """The shape of DataRows arriving now (simple or extended protocol)."""
        if self.current is not None:
            return self.current
        head = self._head()
        if head is None or head.kind is not _PENDING_EXECUTE:
            return None
        portal = self.portals.get(head.name)
        if portal is None:
            return None
        fields = portal.fields
        if (
            fields is None
            and self._statement_generations.get(portal.statement) == portal.generation
        ):
            # Described after the Bind (Parse, Bind, Describe S, Execute).
            fields = self.statements[portal.statement][1]
        if fields is None:
            return None
        self.current = ResultShape(fields=self._formatted(fields, portal.formats), sql=portal.sql)
        return self.current

    def _formatted(
        self, fields: list[FieldDescription], formats: tuple[int, ...]
    ) -> list[FieldDescription]:
        """`fields` in the result formats of a Bind; the same list for the same inputs.

        Shapes that compare by identity let masking and recording reuse their
        per-result work across executions of a prepared statement.
        """
        key = (id(fields), formats)
        found = self._formats_cache.get(key)
        if found is not None and found[0] is fields:
            return found[1]
        chosen = _with_formats(fields, formats)
        if len(self._formats_cache) >= FORMATS_CACHE_SIZE:
            self._formats_cache.clear()
        self._formats_cache[key] = (fields, chosen)
        return chosen

    def _on_error(self) -> None:
        self.current = None
        head = self._head()
        if head is None or head.kind in (_PENDING_QUERY, _PENDING_FUNCTION_CALL, _PENDING_SYNC):
            return  # ReadyForQuery still follows and answers the head
        # Extended protocol: the server discards every message up to Sync,
        # a simple Query or FunctionCall among them included.
        while self.pending and self.pending[0].kind is not _PENDING_SYNC:
            _settle(self.pending.popleft(), False)
        if not self.pending:
            self._discarding = True


def _settle(request: _Request, applied: bool) -> None:
    for change in request.changes:
        change.settle(applied)


def _with_formats(
    fields: list[FieldDescription], formats: tuple[int, ...]
) -> list[FieldDescription]:
    if all(f.format == 0 for f in fields) and not any(formats):
        return fields
    if not formats:
        chosen = [0] * len(fields)
    elif len(formats) == 1:
        chosen = [formats[0]] * len(fields)
    else:
        chosen = list(formats[: len(fields)]) + [0] * (len(fields) - len(formats))
    return [
        FieldDescription(
            name=f.name,
            table_oid=f.table_oid,
            column=f.column,
            type_oid=f.type_oid,
            type_size=f.type_size,
            type_modifier=f.type_modifier,
            format=chosen[i],
        )
        for i, f in enumerate(fields)  # `chosen` has one code per field
    ]
