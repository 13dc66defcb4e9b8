"""Protocol-neutral semantic events.

Each protocol codec turns wire messages into these events; the policy engine,
the recorder and the audit trail only ever see these, never protocol bytes.
PostgreSQL's simple and extended query, and later MySQL's COM_QUERY and
COM_STMT_EXECUTE, all become one `QueryRequested`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluice.policy.database import DatabaseCode


class Protocol(StrEnum):
    POSTGRES = "postgres"
    MYSQL = "mysql"
    SSH = "ssh"
    HTTP = "http"
    KUBERNETES = "kubernetes"
    MCP = "mcp"


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who is acting, as established by a Sluice token (later OIDC)."""

    user: str
    groups: tuple[str, ...] = ()
    token_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionContext:
    """What policy needs to know about the session an event belongs to."""

    session_id: str
    identity: Identity
    connection: str
    protocol: Protocol
    client_addr: str


class QueryOrigin(StrEnum):
    """How a statement reached the gateway; policy may treat paths differently."""

    SIMPLE = "simple"  # PostgreSQL Query ('Q'), MySQL COM_QUERY
    PARSE = "parse"  # PostgreSQL Parse ('P'), MySQL COM_STMT_PREPARE
    EXECUTE = "execute"  # Bind/Execute of a named statement, COM_STMT_EXECUTE
    FUNCTION_CALL = "function_call"  # PostgreSQL FunctionCall ('F')
    ONE_SHOT = "one_shot"  # `sluice exec`


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryRequested:
    """A client asked the backend to run SQL text (one or more statements)."""

    context: SessionContext
    sql: str
    origin: QueryOrigin
    statement_name: str | None = None
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    search_path_changed: bool = False
    """The session changed its search_path earlier: unqualified table names
    may resolve to any schema (policy judges them by the strictest rule)."""
    database: DatabaseCode | None = None
    """What the target database's catalog shows of the functions statements
    may run (see DatabaseCode); None when it was not read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRequested:
    """A client asked to run a shell or kubectl command (SSH, Kubernetes)."""

    context: SessionContext
    argv: tuple[str, ...]
    raw: str
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRequested:
    """An HTTP request (HTTP, Kubernetes API, MCP over HTTP)."""

    context: SessionContext
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


Event = QueryRequested | CommandRequested | HttpRequested
