"""The store: tokens, sessions, credentials and approvals, behind one class.

SQLite (the default, embedded) or PostgreSQL (`--store postgresql://...`).
Calls are synchronous; the gateway runs them on the store's own threads, so
the event loop never waits on disk.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    Connection,
    Engine,
    Row,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from sluice.errors import AuthenticationError, StoreError
from sluice.events import Identity
from sluice.identity.tokens import generate_token, hash_token, token_id_of
from sluice.store.direct import DirectConnections, DirectStatement
from sluice.store.models import Base, CredentialRow, SessionRow, TokenRow

LAST_USED_PRECISION = dt.timedelta(minutes=1)

# The statements of every client session, built once: SQLAlchemy then reuses
# their cache keys and compiled forms (a session's three calls cost about
# 0.3 ms of CPU instead of 1 ms with statements built per call).
_TOKENS = Base.metadata.tables[TokenRow.__tablename__]
_SESSIONS = Base.metadata.tables[SessionRow.__tablename__]
_TOKEN_BY_HASH = select(_TOKENS).where(_TOKENS.c.secret_hash == bindparam("secret_hash"))
_TOKEN_USED = (
    update(_TOKENS)
    .where(_TOKENS.c.id == bindparam("token_id"))
    .values(last_used_at=bindparam("last_used_at"))
)
_SESSION_START = insert(_SESSIONS)
_SESSION_END = (
    update(_SESSIONS)
    .where(_SESSIONS.c.id == bindparam("session_id"))
    .values(
        ended_at=bindparam("ended_at"),
        bytes_from_client=bindparam("bytes_from_client"),
        bytes_to_client=bindparam("bytes_to_client"),
        statements=bindparam("statements"),
        end_reason=bindparam("end_reason"),
        end_detail=bindparam("end_detail"),
    )
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite returns naive datetimes; everything stored is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenInfo:
    token_id: str
    user: str
    groups: tuple[str, ...]
    description: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= utcnow():
            return "expired"
        return "active"

    @classmethod
    def of(cls, row: TokenRow | Row[Any] | _Token) -> TokenInfo:
        return cls(
            token_id=row.id,
            user=row.user,
            groups=tuple(row.groups),
            description=row.description,
            created_at=aware(row.created_at) or utcnow(),
            expires_at=aware(row.expires_at),
            revoked_at=aware(row.revoked_at),
            last_used_at=aware(row.last_used_at),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionInfo:
    session_id: str
    user: str
    groups: tuple[str, ...]
    connection: str
    protocol: str
    client_addr: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    bytes_from_client: int
    bytes_to_client: int
    statements: int
    end_reason: str | None
    end_detail: str | None

    @classmethod
    def of(cls, row: SessionRow) -> SessionInfo:
        return cls(
            session_id=row.id,
            user=row.user,
            groups=tuple(row.groups),
            connection=row.connection,
            protocol=row.protocol,
            client_addr=row.client_addr,
            started_at=aware(row.started_at) or utcnow(),
            ended_at=aware(row.ended_at),
            bytes_from_client=row.bytes_from_client,
            bytes_to_client=row.bytes_to_client,
            statements=row.statements,
            end_reason=row.end_reason,
            end_detail=row.end_detail,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.session_id,
            "user": self.user,
            "groups": list(self.groups),
            "connection": self.connection,
            "protocol": self.protocol,
            "client_addr": self.client_addr,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "bytes_from_client": self.bytes_from_client,
            "bytes_to_client": self.bytes_to_client,
            "statements": self.statements,
            "end_reason": self.end_reason,
            "end_detail": self.end_detail,
        }


def _migrations_dir() -> str:
    return str(resources.files("sluice.store") / "migrations")


class Store:
    """All persistent state of the gateway."""

    def __init__(self, url: str):
        # A plain postgresql:// URL means psycopg 3, the driver Sluice ships with.
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                url = "postgresql+psycopg://" + url.removeprefix(prefix)
        self.url = url
        try:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(url, future=True)
        except (SQLAlchemyError, OSError, ValueError) as exc:
            raise StoreError(f"cannot open the store {self._safe_url()}: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # The per-session calls skip SQLAlchemy's execution machinery on a
        # SQLite file (see sluice.store.direct); elsewhere they use Core.
        self._direct: _DirectCalls | None = (
            _DirectCalls(self.engine) if _is_sqlite_file(self.engine) else None
        )

    def _safe_url(self) -> str:
        return (
            self.engine.url.render_as_string(hide_password=True)
            if hasattr(self, "engine")
            else self.url.split("@")[-1]
        )

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", _migrations_dir())
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot migrate the store {self._safe_url()}: {exc}") from exc

    def close(self) -> None:
        if self._direct is not None:
            self._direct.connections.close()
        self.engine.dispose()

    def after_fork(self) -> None:
        """In a forked worker: leave the parent's database connections to the
        parent (closing or reusing them would break its transactions)."""
        self.engine.dispose(close=False)
        if self._direct is not None:
            self._direct.connections.forget()

    @property
    def writer_threads(self) -> int:
        """Threads worth giving the store's calls: SQLite has one writer at a
        time, and threads waiting on its lock only add contention."""
        return 1 if self.engine.dialect.name == "sqlite" else 4

    @contextmanager
    def _core(self) -> Iterator[Connection]:
        """A transaction without the ORM: for the per-session writes of the hot path."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"store error: {exc.__class__.__name__}: {exc}") from exc

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"store error: {exc.__class__.__name__}: {exc}") from exc

    # Tokens

    def create_token(
        self,
        *,
        user: str,
        groups: Sequence[str] = (),
        description: str = "",
        expires_at: dt.datetime | None = None,
    ) -> tuple[TokenInfo, str]:
        """Create a token; the plaintext is returned once and never stored."""
        new = generate_token()
        row = TokenRow(
            id=new.token_id,
            secret_hash=new.secret_hash,
            user=user,
            groups=list(groups),
            description=description,
            created_at=utcnow(),
            expires_at=expires_at,
        )
        with self._tx() as s:
            s.add(row)
        return TokenInfo.of(row), new.plaintext

    def list_tokens(self, *, include_inactive: bool = True) -> list[TokenInfo]:
        with self._tx() as s:
            rows = s.scalars(select(TokenRow).order_by(TokenRow.created_at)).all()
            infos = [TokenInfo.of(r) for r in rows]
        return [t for t in infos if include_inactive or t.status == "active"]

    def revoke_token(self, token_id: str) -> TokenInfo | None:
        with self._tx() as s:
            row = s.get(TokenRow, token_id)
            if row is None:
                return None
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            return TokenInfo.of(row)

    def authenticate(self, plaintext: str) -> tuple[Identity, TokenInfo]:
        """Resolve a presented token to an identity, or raise AuthenticationError."""
        if token_id_of(plaintext) is None:
            raise AuthenticationError(
                "the password is not a Sluice token",
                hint="pass a token from `sluice tokens create` as the password",
            )
        digest = hash_token(plaintext)
        if self._direct is not None:
            info = self._direct.authenticate(digest)
        else:
            with self._core() as conn:
                info = usable_token(conn.execute(_TOKEN_BY_HASH, {"secret_hash": digest}).first())
                now = utcnow()
                if needs_last_used(info, now):
                    conn.execute(_TOKEN_USED, {"token_id": info.token_id, "last_used_at": now})
        identity = Identity(user=info.user, groups=info.groups, token_id=info.token_id)
        return identity, info

    # Sessions

    def start_session(
        self,
        *,
        session_id: str,
        identity: Identity,
        connection: str,
        protocol: str,
        client_addr: str,
        started_at: dt.datetime,
    ) -> None:
        values = {
            "id": session_id,
            "user": identity.user,
            "groups": list(identity.groups),
            "connection": connection,
            "protocol": protocol,
            "client_addr": client_addr,
            "started_at": started_at,
            "bytes_from_client": 0,
            "bytes_to_client": 0,
            "statements": 0,
        }
        if self._direct is not None:
            self._direct.execute(self._direct.session_start, values)
            return
        with self._core() as conn:
            conn.execute(_SESSION_START, values)

    def end_session(
        self,
        session_id: str,
        *,
        ended_at: dt.datetime,
        bytes_from_client: int,
        bytes_to_client: int,
        statements: int,
        end_reason: str,
        end_detail: str | None = None,
    ) -> None:
        values = {
            "session_id": session_id,
            "ended_at": ended_at,
            "bytes_from_client": bytes_from_client,
            "bytes_to_client": bytes_to_client,
            "statements": statements,
            "end_reason": end_reason,
            "end_detail": end_detail,
        }
        if self._direct is not None:
            self._direct.execute(self._direct.session_end, values)
            return
        with self._core() as conn:
            conn.execute(_SESSION_END, values)

    def list_sessions(
        self,
        *,
        limit: int = 50,
        user: str | None = None,
        connection: str | None = None,
        active_only: bool = False,
    ) -> list[SessionInfo]:
        query = select(SessionRow).order_by(SessionRow.started_at.desc()).limit(limit)
        if user:
            query = query.where(SessionRow.user == user)
        if connection:
            query = query.where(SessionRow.connection == connection)
        if active_only:
            query = query.where(SessionRow.ended_at.is_(None))
        with self._tx() as s:
            return [SessionInfo.of(r) for r in s.scalars(query).all()]

    def get_session(self, session_id: str) -> SessionInfo | None:
        with self._tx() as s:
            row = s.get(SessionRow, session_id)
            if row is None and session_id:
                # autoescape: '%' and '_' in a prefix are literal, not LIKE wildcards.
                rows = s.scalars(
                    select(SessionRow)
                    .where(SessionRow.id.startswith(session_id, autoescape=True))
                    .limit(2)
                ).all()
                row = rows[0] if len(rows) == 1 else None
            return SessionInfo.of(row) if row else None

    def delete_sessions_before(self, cutoff: dt.datetime) -> list[str]:
        with self._tx() as s:
            rows = s.scalars(
                select(SessionRow).where(
                    SessionRow.ended_at.is_not(None), SessionRow.ended_at < cutoff
                )
            ).all()
            ids = [r.id for r in rows]
            for row in rows:
                s.delete(row)
        return ids

    # Credentials

    def put_credential(self, name: str, ciphertext: bytes) -> None:
        now = utcnow()
        with self._tx() as s:
            row = s.get(CredentialRow, name)
            if row is None:
                s.add(
                    CredentialRow(name=name, ciphertext=ciphertext, created_at=now, updated_at=now)
                )
            else:
                row.ciphertext = ciphertext
                row.updated_at = now

    def get_credential(self, name: str) -> bytes | None:
        with self._tx() as s:
            row = s.get(CredentialRow, name)
            return row.ciphertext if row else None

    def list_credentials(self) -> list[tuple[str, dt.datetime]]:
        with self._tx() as s:
            rows = s.scalars(select(CredentialRow).order_by(CredentialRow.name)).all()
            return [(r.name, aware(r.updated_at) or utcnow()) for r in rows]

    def delete_credential(self, name: str) -> bool:
        with self._tx() as s:
            row = s.get(CredentialRow, name)
            if row is None:
                return False
            s.delete(row)
            return True

    # Approvals (rows are managed by sluice.approvals)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._tx() as s:
            yield s


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def usable_token(row: TokenRow | Row[Any] | _Token | None) -> TokenInfo:
    """The token of a row found by its hash, or AuthenticationError: unknown,
    revoked or expired."""
    if row is None:
        raise AuthenticationError(
            "unknown Sluice token",
            hint="check the token, or create one with `sluice tokens create`",
        )
    info = TokenInfo.of(row)
    if info.status == "revoked":
        raise AuthenticationError(
            f"Sluice token {info.token_id} was revoked",
            hint="ask for a new token",
        )
    if info.status == "expired":
        raise AuthenticationError(
            f"Sluice token {info.token_id} expired at {info.expires_at:%Y-%m-%d %H:%M} UTC",
            hint="ask for a new token",
        )
    return info


def needs_last_used(info: TokenInfo, now: dt.datetime) -> bool:
    """Whether to write the token's "last used" time: a write per connection
    would serialise logins on the store, and to the minute is what an
    operator needs."""
    return info.last_used_at is None or now - info.last_used_at > LAST_USED_PRECISION


def _is_sqlite_file(engine: Engine) -> bool:
    database = engine.url.database or ""
    return (
        engine.dialect.name == "sqlite"
        and database not in ("", ":memory:")
        and "mode=memory" not in database
        and engine.url.query.get("mode") != "memory"
    )


class _Token:
    """A fetched token row by column name, as `TokenInfo.of` reads it."""

    id: str
    user: str
    groups: list[str]
    description: str
    created_at: dt.datetime | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    def __init__(self, values: Sequence[Any]) -> None:
        for column, value in zip(_TOKENS.columns.keys(), values, strict=True):
            setattr(self, column, value)


class _DirectCalls:
    """The per-session statements on DB-API connections (sluice.store.direct)."""

    def __init__(self, engine: Engine) -> None:
        self.connections = DirectConnections(engine)
        self.token_by_hash = DirectStatement(
            _TOKEN_BY_HASH, engine, result_types=[c.type for c in _TOKENS.columns]
        )
        self.token_used = DirectStatement(_TOKEN_USED, engine)
        self.session_start = DirectStatement(
            _SESSION_START,
            engine,
            parameters=[
                "id",
                "user",
                "groups",
                "connection",
                "protocol",
                "client_addr",
                "started_at",
                "bytes_from_client",
                "bytes_to_client",
                "statements",
            ],
        )
        self.session_end = DirectStatement(_SESSION_END, engine)

    def execute(self, statement: DirectStatement, values: dict[str, Any]) -> None:
        self.connections.run(
            lambda cursor: cursor.execute(statement.sql, statement.parameters(values))
        )

    def authenticate(self, digest: str) -> TokenInfo:
        def work(cursor: Any) -> TokenInfo:
            find = self.token_by_hash
            cursor.execute(find.sql, find.parameters({"secret_hash": digest}))
            raw = cursor.fetchone()
            info = usable_token(None if raw is None else _Token(find.row(raw)))
            now = utcnow()
            if needs_last_used(info, now):
                used = self.token_used
                values = {"token_id": info.token_id, "last_used_at": now}
                cursor.execute(used.sql, used.parameters(values))
            return info

        info: TokenInfo = self.connections.run(work)
        return info
