"""The store's per-session statements, run straight on the DB-API connection.

Every client session makes three store calls (authenticate its token, record
its start, record its end). Through SQLAlchemy Core each cost about 60 µs of
CPU on SQLite, of which the database's own work was about 10: the rest went
to the connection pool, the execution context and result objects, all while
holding the interpreter lock that the event loop waits for. Here each
statement is compiled once by SQLAlchemy for the engine's dialect, and run on
a DB-API connection kept by the calling thread, with the column types' own
conversions (`bind_processor`, `result_processor`): the same SQL and the
same stored values, without the machinery around them.

Only for SQLite files: the embedded default, where the store's one thread
makes every call. Other databases keep SQLAlchemy's pool, which also
replaces connections a server dropped.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from sluice.errors import StoreError

_Convert = Callable[[Any], Any]


class DirectStatement:
    """One Core statement compiled for a dialect: its SQL text, the order of
    its parameters and the conversions of their values."""

    __slots__ = ("_binds", "_results", "sql")

    def __init__(
        self,
        statement: ClauseElement,
        engine: Engine,
        *,
        parameters: Sequence[str] = (),
        result_types: Sequence[Any] = (),
    ) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect, column_keys=list(parameters) or None)
        if not isinstance(compiled, SQLCompiler) or compiled.positiontup is None:
            raise ValueError(f"dialect {dialect.name} does not use positional parameters")
        self.sql = compiled.string
        self._binds: tuple[tuple[str, _Convert | None], ...] = tuple(
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup
        )
        self._results: tuple[_Convert | None, ...] = tuple(
            kind.dialect_impl(dialect).result_processor(dialect, None) for kind in result_types
        )

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The DB-API parameters for `values` (by name), converted as SQLAlchemy does."""
        return tuple(
            values[name] if convert is None else convert(values[name])
            for name, convert in self._binds
        )

    def row(self, raw: Sequence[Any]) -> list[Any]:
        """A fetched row with its values converted to the columns' Python types."""
        return [
            value if convert is None else convert(value)
            for value, convert in zip(raw, self._results, strict=True)
        ]


class DirectConnections:
    """A DB-API connection per calling thread, from the engine's own pool (so
    its connect-time settings apply), returned to it on `close()`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[Any] = []
        self._closed = False

    def run(self, work: Callable[[Any], Any]) -> Any:
        """`work(cursor)` in one transaction: committed when it returns, rolled
        back when it raises. A database error becomes StoreError, and the
        connection is replaced by the next call."""
        if self._closed:
            raise StoreError("the store is closed")
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
        dbapi_error = self._engine.dialect.loaded_dbapi.Error
        try:
            cursor = connection.cursor()
            try:
                result = work(cursor)
            finally:
                cursor.close()
            connection.commit()
            return result
        except dbapi_error as exc:
            self._discard(connection)
            raise StoreError(f"store error: {exc.__class__.__name__}: {exc}") from exc
        except BaseException:  # the caller's own error (a refused token): undo, keep it
            try:
                connection.rollback()
            except dbapi_error:
                self._discard(connection)
            raise

    def _connect(self) -> Any:
        with self._lock:
            if self._closed:
                raise StoreError("the store is closed")
            try:
                connection = self._engine.raw_connection()
            except Exception as exc:
                raise StoreError(f"cannot connect to the store: {exc}") from exc
            self._open.append(connection)
        self._local.connection = connection
        return connection

    def _discard(self, connection: Any) -> None:
        """Roll back and drop a connection a call failed on."""
        self._local.connection = None
        with self._lock:
            if connection in self._open:
                self._open.remove(connection)
        with contextlib.suppress(Exception):  # it may be the connection that failed
            connection.rollback()
        connection.invalidate()

    def forget(self) -> None:
        """In a forked child: drop the parent's connections without touching
        them (they stay the parent's); the child's calls open their own."""
        self._local = threading.local()
        self._lock = threading.Lock()  # another parent thread may have held it
        self._open = []

    def close(self) -> None:
        """Give every thread's connection back; later calls raise StoreError."""
        with self._lock:
            self._closed = True
            connections, self._open = self._open, []
        for connection in connections:
            connection.close()
