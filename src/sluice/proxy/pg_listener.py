"""The PostgreSQL listener: TLS, token authentication, backend connection.

A client connects with its own tools (`psql "host=... port=15432
dbname=<connection> user=<user> password=<sluice token>"`). The gateway
answers SSLRequest with TLS, refuses GSSENCRequest, asks for the token in
cleartext (only over TLS or loopback), resolves it to an identity, picks the
connection by dbname, connects to the backend with the real credential and
hands both sockets to the data phase (`PgSession`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import re
import resource
import socket
import time
import uuid
from collections.abc import Callable
from typing import Final

from sluice.audit import AuthFailed
from sluice.config import ConnectionSpec, EnvCredential
from sluice.errors import AuthenticationError, CredentialError, SluiceError, StoreError
from sluice.events import Identity, Protocol, QueryOrigin, SessionContext
from sluice.policy.verdict import Allow, RequireApproval
from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.backend_auth import BackendAuthError, BackendHandshake
from sluice.protocols.postgres.errors import PgProtocolError, RemoteProtocolError
from sluice.protocols.postgres.settings import (
    UnreadableOptions,
    as_set_statement,
    startup_settings,
)
from sluice.proxy.cancel import CancelTarget
from sluice.proxy.gateway import Gateway
from sluice.proxy.governance import SessionGovernance
from sluice.proxy.pg_session import BackendSide, ClientSide, PgSession
from sluice.proxy.pool import PooledBackend
from sluice.proxy.slots import SessionSlots, SlotsUnavailable
from sluice.proxy.wire import FrameReceiver, PeerClosed
from sluice.tls import backend_context

log = logging.getLogger(__name__)

FILES_PER_SESSION: Final = 3
"""Descriptors a session holds: its client's socket, its backend's, its log."""
FILES_RESERVED: Final = 64
"""Descriptors kept for the rest: listeners, the store, audit, pooled backends."""
CAPACITY_WARNING_INTERVAL: Final = 10.0
"""Seconds between two warnings that clients were refused at the session cap."""


def session_capacity() -> int | None:
    """The connections one process can hold at once: what its open-file limit
    leaves room for (None: no limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, (soft - FILES_RESERVED) // FILES_PER_SESSION)


# Startup parameters the gateway sets itself or never passes to the backend.
_RESERVED_PARAMETERS = frozenset({"user", "database", "replication"})


class ClientRejected(SluiceError):
    """The client is told why, in its protocol, and the connection closes."""

    identity: Identity | None = None


def _is_loopback(peer: object) -> bool:
    if isinstance(peer, tuple) and peer:
        try:
            return ipaddress.ip_address(str(peer[0]).split("%")[0]).is_loopback
        except ValueError:
            return False
    return isinstance(peer, str)  # a Unix socket path


def _format_peer(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "unix")


class _ClientReceiver(FrameReceiver):
    def __init__(self, *, max_message: int, on_connect: Callable[[_ClientReceiver], None]):
        super().__init__(max_message=max_message)
        self._on_connect = on_connect

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._on_connect(self)


class PostgresListener:
    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.sessions: set[PgSession] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.capacity: int | None = None
        self._refused_at_capacity = 0
        self._warned_at = -CAPACITY_WARNING_INTERVAL

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        limits = self.gateway.config.limits
        self.capacity = session_capacity()
        return await loop.create_server(
            lambda: _ClientReceiver(max_message=limits.max_startup_message, on_connect=self._spawn),
            host,
            port,
            reuse_port=reuse_port or None,
            backlog=1024,
        )

    def _spawn(self, receiver: _ClientReceiver) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(receiver))
        self._tasks.add(task)
        self.gateway.memory.opened()
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.gateway.memory.closed()

    async def close(self) -> None:
        for session in list(self.sessions):
            session.fail_client("57P01", "the gateway is shutting down", reason="gateway_shutdown")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # One client connection

    async def _handle(self, client: _ClientReceiver) -> None:
        counted = _Counted()
        try:
            await self._handle_counted(client, counted)
        finally:
            counted.give_back(self.gateway.session_slots)

    async def _handle_counted(self, client: _ClientReceiver, counted: _Counted) -> None:
        assert client.transport is not None
        peer = client.transport.get_extra_info("peername")
        sock = client.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client_addr = _format_peer(peer)
        limits = self.gateway.config.limits
        startup: m.StartupMessage | None = None
        try:
            async with asyncio.timeout(limits.auth_timeout):
                startup = await self._startup(client, peer)
                if startup is None:
                    return
                self._check_capacity(counted)
                identity, conn = await self._authenticate(client, startup)
                sets_search_path = self._judge_startup(identity, conn, startup, client_addr)
                self._claim_user_slot(identity, counted)
        except TimeoutError:
            self._reject(
                client,
                "08006",
                "authentication timed out",
                hint=f"finish the startup within {limits.auth_timeout:.0f}s",
            )
            return
        except ClientRejected as exc:
            self._reject(client, exc.sqlstate, exc.message, hint=exc.hint)
            self._audit_refusal(client_addr, startup, exc)
            return
        except RemoteProtocolError as exc:
            self._reject(client, "08P01", f"invalid startup: {exc.message}")
            return
        except PeerClosed:
            client.close()
            return
        except Exception as exc:
            log.exception("startup failed")
            self._reject(client, "XX000", f"the gateway failed during startup: {exc}")
            return
        await self._run_session(
            client, client_addr, startup, identity, conn, sets_search_path=sets_search_path
        )

    def _check_capacity(self, counted: _Counted) -> None:
        """Refuse a connection past a session cap (cancel requests never get here:
        they are how a runaway query is stopped).

        Each process serves what its open-file limit leaves room for, counting
        every connection it holds; `limits.max_sessions` caps the gateway,
        counted across its worker processes.
        """
        if self.capacity is not None and len(self._tasks) > self.capacity:
            self._refuse_at_capacity(self.capacity, "the open-file limit (ulimit -n, LimitNOFILE=)")
        configured = self.gateway.config.limits.max_sessions
        if configured is not None:
            counted.session = self._shared_count(
                lambda slots: slots.try_enter(configured), "limits.max_sessions"
            )
            if not counted.session:
                self._refuse_at_capacity(configured, "limits.max_sessions")

    def _refuse_at_capacity(self, cap: int, setting: str) -> None:
        self._refused_at_capacity += 1
        now = time.monotonic()
        if now - self._warned_at >= CAPACITY_WARNING_INTERVAL:
            self._warned_at = now
            log.warning(
                "refused a client: %d sessions is the cap set by %s (%d refused so far)",
                cap,
                setting,
                self._refused_at_capacity,
            )
        raise ClientRejected(
            f"the gateway is serving its maximum of {cap} sessions",
            sqlstate="53300",
            hint=f"try again shortly; the operator can raise {setting}",
        )

    def _claim_user_slot(self, identity: Identity, counted: _Counted) -> None:
        cap = self.gateway.config.limits.max_sessions_per_user
        if cap is None:
            return
        try:
            entered = self._shared_count(
                lambda slots: slots.try_enter_user(identity.user, cap),
                "limits.max_sessions_per_user",
            )
        except ClientRejected as exc:
            raise _rejected_as(identity, exc) from exc
        if not entered:
            raise _rejected_as(
                identity,
                ClientRejected(
                    f"user {identity.user!r} already has {cap} sessions through the gateway",
                    sqlstate="53300",
                    hint="close a session first (limits.max_sessions_per_user)",
                ),
            )
        counted.user = identity.user

    def _shared_count(self, enter: Callable[[SessionSlots], bool], setting: str) -> bool:
        try:
            return enter(self.gateway.session_slots)
        except SlotsUnavailable as exc:
            log.error("cannot check %s: %s", setting, exc.message)
            raise ClientRejected(
                f"the gateway cannot check {setting} ({exc.message})",
                sqlstate="53300",
                hint="try again shortly",
            ) from exc

    def _audit_refusal(
        self, client_addr: str, startup: m.StartupMessage | None, exc: ClientRejected
    ) -> None:
        services = self.gateway.governor.services
        if services is None:
            return
        try:
            services.audit.emit(
                AuthFailed(
                    identity=exc.identity,
                    connection=startup.database if startup else None,
                    client_addr=client_addr,
                    protocol=Protocol.POSTGRES.value,
                    claimed_user=startup.user if startup else "",
                    sqlstate=exc.sqlstate,
                    reason=exc.message,
                )
            )
        except Exception:
            log.exception("auditing a refused client failed")

    async def _startup(self, client: _ClientReceiver, peer: object) -> m.StartupMessage | None:
        while True:
            packet = m.decode_startup(await client.read_startup())
            if isinstance(packet, m.SSLRequest):
                if client.peer_ssl:
                    raise RemoteProtocolError("SSLRequest on a connection that is already TLS")
                client.write(b"S")
                await client.start_tls(self.gateway.client_tls, server_side=True)
            elif isinstance(packet, m.GSSENCRequest):
                client.write(b"N")
            elif isinstance(packet, m.CancelRequest):
                await self._cancel(packet)
                client.close()
                return None
            else:
                if "replication" in packet.parameters:
                    raise ClientRejected(
                        "replication connections are not allowed through the gateway",
                        sqlstate="28000",
                        hint="connect without the replication parameter",
                    )
                if not client.peer_ssl and not _is_loopback(peer):
                    raise ClientRejected(
                        "the gateway accepts tokens only over TLS on non-loopback connections",
                        sqlstate="28000",
                        hint='connect with sslmode=require (e.g. psql "... sslmode=require")',
                    )
                return packet

    async def _authenticate(
        self, client: _ClientReceiver, startup: m.StartupMessage
    ) -> tuple[Identity, ConnectionSpec]:
        client.write(m.authentication(m.AUTH_CLEARTEXT))
        client.begin_typed()
        kind, body = await client.read_frame()
        if kind != m.PASSWORD:
            raise RemoteProtocolError(f"expected a password message, got {chr(kind)!r}")
        token = m.decode_password(body)
        try:
            identity, _ = await self.gateway.in_store(self.gateway.store.authenticate, token)
        except AuthenticationError as exc:
            raise ClientRejected(exc.message, sqlstate="28P01", hint=exc.hint) from exc
        except StoreError as exc:
            log.error("store unavailable during authentication: %s", exc)
            raise ClientRejected(
                "the gateway cannot check tokens right now",
                sqlstate="08006",
                hint="try again; the operator should check the store",
            ) from exc
        if startup.user != identity.user:
            raise _rejected_as(
                identity,
                ClientRejected(
                    f"this token belongs to user {identity.user!r}, not {startup.user!r}",
                    sqlstate="28P01",
                    hint=f"connect with user={identity.user}",
                ),
            )
        config = self.gateway.config
        allowed = [
            c.name for c in config.connections if c.access.permits(identity.user, identity.groups)
        ]
        conn = config.connection(startup.database)
        if conn is None or conn.name not in allowed:
            choices = ", ".join(allowed) if allowed else "none"
            raise _rejected_as(
                identity,
                ClientRejected(
                    f'connection "{startup.database}" does not exist or you may not use it',
                    sqlstate="3D000",
                    hint=f"set dbname to one of the connections you may use: {choices}",
                ),
            )
        return identity, conn

    def _reject(
        self, client: FrameReceiver, sqlstate: str, message: str, hint: str | None = None
    ) -> None:
        with contextlib.suppress(PeerClosed):
            client.write(m.error_response(sqlstate, message, severity="FATAL", hint=hint))
        client.close()

    async def _cancel(self, request: m.CancelRequest) -> None:
        target = self.gateway.cancels.lookup(request.process_id, request.secret_key)
        if target is None:
            return  # PostgreSQL itself says nothing about unknown keys.
        for session in self.sessions:
            if (
                session.governance.context.session_id == target.session_id
                and session.cancel_requested()
            ):
                return
        conn = target.connection
        try:
            async with asyncio.timeout(conn.connect_timeout):
                reader, writer = await asyncio.open_connection(conn.host, conn.port)
                try:
                    if await _cancel_tls(reader, writer, conn):
                        writer.write(m.encode_cancel_request(target.process_id, target.secret_key))
                        await writer.drain()
                finally:
                    writer.close()
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.warning("could not forward a cancel request to %s: %s", conn.name, exc)

    # The established session

    def _judge_startup(
        self, identity: Identity, conn: ConnectionSpec, startup: m.StartupMessage, client_addr: str
    ) -> bool:
        """Judge the settings the startup applies as the `SET`s they amount to;
        raise ClientRejected for one the policy does not allow. Returns
        whether they set search_path."""
        try:
            settings = startup_settings(startup.parameters)
        except UnreadableOptions as exc:
            if conn.policy is None and not conn.masking:
                return False  # nothing is judged or masked by schema here
            raise _rejected_as(
                identity,
                ClientRejected(
                    f"the gateway cannot judge the startup options: {exc}",
                    sqlstate="42501",
                    hint="pass settings in options as -c name=value (or run SET after connecting)",
                ),
            ) from None
        services = self.gateway.governor.services
        if conn.policy is not None and services is not None:
            context = SessionContext(
                session_id="startup",
                identity=identity,
                connection=conn.name,
                protocol=Protocol.POSTGRES,
                client_addr=client_addr,
            )
            for name, value in settings:
                sql = as_set_statement(name, value)
                verdict = services.engine.decide_query(
                    context, sql, QueryOrigin.SIMPLE, None, policy_name=conn.policy
                )
                if isinstance(verdict, Allow):
                    continue
                waits = isinstance(verdict, RequireApproval)
                outcome = "needs approval, which a startup cannot wait for" if waits else "blocked"
                later = " and run the SET in the session, where it can be approved" if waits else ""
                raise _rejected_as(
                    identity,
                    ClientRejected(
                        f"the startup setting {name} is {outcome}: {verdict.reason}",
                        sqlstate="42501",
                        hint=f"policy rule: {verdict.rule}; connect without it{later}",
                    ),
                )
        return any(name.lower() == "search_path" for name, _ in settings)

    async def _run_session(
        self,
        client: _ClientReceiver,
        client_addr: str,
        startup: m.StartupMessage,
        identity: Identity,
        conn: ConnectionSpec,
        *,
        sets_search_path: bool,
    ) -> None:
        gateway = self.gateway
        session_id = str(uuid.uuid4())
        context = SessionContext(
            session_id=session_id,
            identity=identity,
            connection=conn.name,
            protocol=Protocol.POSTGRES,
            client_addr=client_addr,
        )
        started = dt.datetime.now(dt.UTC)
        # The backend session is set up while the store records the session
        # (one latency instead of two); the client's messages reach the
        # backend only once both are done.
        backend_setup = asyncio.ensure_future(self._backend_for(conn, startup))
        try:
            await gateway.in_store(
                gateway.store.start_session,
                session_id=session_id,
                identity=identity,
                connection=conn.name,
                protocol="postgres",
                client_addr=client_addr,
                started_at=started,
            )
        except StoreError as exc:
            log.error("cannot record session start: %s", exc)
            self._reject(
                client,
                "58030",
                "the gateway cannot record this session",
                hint="the operator should check the store",
            )
            _discard(backend_setup)
            return
        except BaseException:  # a bug or cancellation: the backend must not linger
            _discard(backend_setup)
            raise
        end = _SessionEnd(gateway, session_id)
        governance: SessionGovernance | None = None
        try:
            try:
                governance = gateway.governor.session(context, conn)
            except BaseException:
                _discard(backend_setup)
                raise
            backend, handshake = await backend_setup
            catalog_steps = (
                (
                    governance.start_policy,
                    "read the catalog its policy needs for",
                    "try again; if it persists, the operator should check that the "
                    "connection's user can read pg_catalog",
                ),
                (
                    governance.start_masking,
                    "set up masking for",
                    "the operator should check the masking configuration",
                ),
            )
            for start, what, hint in catalog_steps:
                try:
                    await start(lambda sql: self._side_query(conn, sql))
                except Exception as exc:
                    backend.close()
                    log.exception("cannot %s connection %s", what, conn.name)
                    raise ClientRejected(
                        f"the gateway cannot {what} connection {conn.name!r}: {exc}",
                        sqlstate="58000",
                        hint=hint,
                    ) from exc
            if sets_search_path:
                governance.search_path_set()
        except ClientRejected as exc:
            self._reject(client, exc.sqlstate, exc.message, hint=exc.hint)
            await end.record(reason="backend_unavailable", detail=exc.message)
            if governance is not None:
                governance.close(reason="backend_unavailable", detail=exc.message)
            return
        except SluiceError as exc:
            self._reject(client, exc.sqlstate, exc.message, hint=exc.hint)
            await end.record(reason="gateway_error", detail=exc.message)
            return
        except Exception as exc:
            log.exception("cannot start session governance")
            self._reject(client, "58030", f"the gateway cannot govern this session: {exc}")
            await end.record(reason="gateway_error", detail=str(exc))
            return

        key = gateway.cancels.register(
            CancelTarget(
                connection=conn,
                process_id=handshake.key.process_id if handshake.key else 0,
                secret_key=handshake.key.secret_key if handshake.key else 0,
                session_id=session_id,
            )
        )
        hello = bytearray(m.authentication(m.AUTH_OK))
        for name, value in handshake.parameters.items():
            hello += m.parameter_status(name, value)
        hello += m.backend_key_data(*key)
        for notice in handshake.notices:
            hello += notice
        hello += m.ready_for_query(handshake.transaction_status)

        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_finish(session: PgSession) -> None:
            if not finished.done():
                finished.set_result(None)

        assert client.transport is not None
        assert backend.transport is not None
        session = PgSession(
            client=client.transport,
            backend=backend.transport,
            governance=governance,
            limits=gateway.config.limits,
            transaction_status=handshake.transaction_status,
            on_finish=on_finish,
            release_backend=self._releaser(conn, handshake),
            parameters=handshake.parameters,
            on_idle_release=gateway.memory.idle_release,
        )
        self.sessions.add(session)
        client_leftover = client.detach()
        backend_leftover = backend.detach()
        client.transport.set_protocol(ClientSide(session))
        backend.transport.set_protocol(BackendSide(session))
        session.bytes_to_client += len(hello)
        client.transport.write(bytes(hello))
        if client.transport.is_closing():
            session.finish("client_disconnected")
        if backend_leftover:
            session.backend_data(backend_leftover)
        if client_leftover:
            session.client_data(client_leftover)
        try:
            await finished
        except asyncio.CancelledError:
            session.fail_client("57P01", "the gateway is shutting down", reason="gateway_shutdown")
        finally:
            self.sessions.discard(session)
            gateway.cancels.unregister(key)
            reason = session.end_reason or "unknown"
            try:
                # Seals the recording; its fsync runs on a finisher thread.
                governance.close(
                    reason=reason,
                    detail=session.end_detail,
                    bytes_in=session.bytes_from_client,
                    bytes_out=session.bytes_to_client,
                    statements=session.statements,
                )
            except Exception:
                log.exception("closing session governance failed")
            await end.record(
                reason=reason,
                detail=session.end_detail,
                bytes_from_client=session.bytes_from_client,
                bytes_to_client=session.bytes_to_client,
                statements=session.statements,
            )

    async def _connect_backend(
        self, conn: ConnectionSpec, startup: m.StartupMessage
    ) -> tuple[FrameReceiver, BackendHandshake]:
        try:
            if conn.password is None or isinstance(conn.password, EnvCredential):
                password = self.gateway.backend_password(conn)  # no I/O: no thread hop
            else:
                password = await self.gateway.in_store(self.gateway.backend_password, conn)
        except CredentialError as exc:
            log.error("credential for %s: %s", conn.name, exc.message)
            raise ClientRejected(
                f"the gateway cannot read the credential of connection {conn.name!r}",
                sqlstate="08001",
                hint="the operator should check the credential reference",
            ) from exc
        parameters = {k: v for k, v in startup.parameters.items() if k not in _RESERVED_PARAMETERS}
        parameters = {"database": conn.database, **parameters}
        handshake = BackendHandshake(user=conn.user, password=password, parameters=parameters)
        loop = asyncio.get_running_loop()
        limit = self.gateway.config.limits.max_client_message
        backend: FrameReceiver | None = None
        try:
            async with asyncio.timeout(conn.connect_timeout):
                try:
                    _, proto = await loop.create_connection(
                        lambda: FrameReceiver(max_message=limit), conn.host, conn.port
                    )
                except OSError as exc:
                    raise ClientRejected(
                        f"cannot reach the backend of connection {conn.name!r}: "
                        f"{exc.strerror or exc}",
                        sqlstate="08001",
                        hint="the backend may be down; try again later",
                    ) from exc
                backend = proto
                assert backend.transport is not None
                sock = backend.transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await self._backend_tls(backend, conn)
                backend.write(handshake.startup)
                backend.begin_typed()
                while not handshake.done:
                    kind, body = await backend.read_frame()
                    reply = handshake.handle(kind, body)
                    if reply:
                        backend.write(reply)
        except TimeoutError as exc:
            if backend is not None:
                backend.close()
            raise ClientRejected(
                f"the backend of connection {conn.name!r} did not answer within "
                f"{conn.connect_timeout:.0f}s",
                sqlstate="08001",
            ) from exc
        except BackendAuthError as exc:
            if backend is not None:
                backend.close()
            log.error("backend refused %s: %s", conn.name, exc.message)
            code = exc.fields.get("C", "08001")
            raise ClientRejected(
                f"the backend of connection {conn.name!r} refused the gateway: "
                f"{exc.fields.get('M', exc.message)}",
                sqlstate="08006" if code.startswith("08") is False else code,
                hint="the operator should check the connection's user and credential",
            ) from exc
        except (PeerClosed, PgProtocolError) as exc:
            if backend is not None:
                backend.close()
            raise ClientRejected(
                f"the backend of connection {conn.name!r} closed or broke the connection "
                f"during startup: {exc}",
                sqlstate="08006",
            ) from exc
        return backend, handshake

    async def _backend_for(
        self, conn: ConnectionSpec, startup: m.StartupMessage
    ) -> tuple[FrameReceiver, BackendHandshake]:
        """A backend session for a new client: from the pool when it can, else a new one."""
        pool = self.gateway.pool_for(conn)
        if pool is not None and _poolable_startup(startup):
            while (pooled := pool.take()) is not None:
                adopted = await self._adopt(pooled, conn, startup)
                if adopted is not None:
                    return adopted
        return await self._connect_backend(conn, startup)

    async def _adopt(
        self, pooled: PooledBackend, conn: ConnectionSpec, startup: m.StartupMessage
    ) -> tuple[FrameReceiver, BackendHandshake] | None:
        """Apply the client's startup settings to a pooled session; None if that fails."""
        receiver = FrameReceiver(max_message=self.gateway.config.limits.max_client_message)
        receiver.transport = pooled.transport
        pooled.transport.set_protocol(receiver)
        receiver.begin_typed()
        handshake = BackendHandshake(user=conn.user, password=None, parameters={})
        handshake.parameters = dict(pooled.parameters)
        handshake.key = pooled.key
        handshake.done = True
        settings = {k: v for k, v in startup.parameters.items() if k not in _RESERVED_PARAMETERS}
        if not settings:
            return receiver, handshake
        sql = "; ".join(f"SET {name} = {_quote_literal(value)}" for name, value in settings.items())
        failed = False
        try:
            receiver.write(m.encode_query(sql))
            async with asyncio.timeout(conn.connect_timeout):
                while True:
                    kind, body = await receiver.read_frame()
                    if kind == m.PARAMETER_STATUS:
                        name, value = m.decode_parameter_status(body)
                        handshake.parameters[name] = value
                    elif kind == m.ERROR_RESPONSE:
                        failed = True
                    elif kind == m.READY_FOR_QUERY:
                        failed = failed or body != b"I"
                        break
        except (TimeoutError, PeerClosed, PgProtocolError):
            failed = True
        if failed:
            receiver.close()
            return None
        return receiver, handshake

    def _releaser(
        self, conn: ConnectionSpec, handshake: BackendHandshake
    ) -> Callable[[asyncio.Transport], bool] | None:
        pool = self.gateway.pool_for(conn)
        if pool is None:
            return None

        def release(transport: asyncio.Transport) -> bool:
            task = asyncio.get_running_loop().create_task(
                pool.give_back(transport, handshake.parameters, handshake.key)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return True

        return release

    async def _side_query(self, conn: ConnectionSpec, sql: str) -> list[list[list[bytes | None]]]:
        """Run SQL on a connection of the gateway's own (e.g. to read the catalog).

        Returns the rows of each result; raises on an error.
        """
        startup = m.StartupMessage(
            protocol=m.PROTOCOL_3_0,
            parameters={"user": conn.user, "application_name": "sluice-gateway"},
        )
        backend, _ = await self._connect_backend(conn, startup)
        results: list[list[list[bytes | None]]] = []
        error: str | None = None
        try:
            backend.write(m.encode_query(sql))
            async with asyncio.timeout(conn.connect_timeout * 3):
                while True:
                    kind, body = await backend.read_frame()
                    if kind == m.ROW_DESCRIPTION:
                        results.append([])
                    elif kind == m.DATA_ROW:
                        results[-1].append(m.decode_data_row(body))
                    elif kind == m.ERROR_RESPONSE:
                        error = m.decode_fields(body).get("M", "error")
                    elif kind == m.READY_FOR_QUERY:
                        break
            backend.write(m.TERMINATE_MESSAGE)
        finally:
            backend.close()
        if error is not None:
            raise ClientRejected(f"the backend refused a gateway query: {error}")
        return results

    async def _backend_tls(self, backend: FrameReceiver, conn: ConnectionSpec) -> None:
        mode = conn.tls.mode
        if mode == "disable":
            return
        backend.write(m.encode_ssl_request())
        answer = await backend.read_exact_byte()
        if answer == b"S":
            hostname = conn.tls.server_name or conn.host
            ctx = backend_context(mode, conn.tls.ca_file)
            try:
                await backend.start_tls(
                    ctx,
                    server_side=False,
                    server_hostname=hostname,
                    handshake_timeout=conn.connect_timeout,
                )
            except (OSError, ValueError) as exc:
                raise ClientRejected(
                    f"TLS to the backend of connection {conn.name!r} failed: {exc}",
                    sqlstate="08001",
                    hint="check tls.mode, tls.ca_file and tls.server_name",
                ) from exc
        elif answer == b"N":
            if mode != "prefer":
                raise ClientRejected(
                    f"the backend of connection {conn.name!r} does not support TLS "
                    f"but tls.mode is {mode}",
                    sqlstate="08001",
                    hint="enable ssl on the server, or set tls.mode: prefer / disable",
                )
        else:
            raise RemoteProtocolError(f"unexpected answer {answer!r} to SSLRequest")


async def _cancel_tls(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: ConnectionSpec
) -> bool:
    """Negotiate TLS for a cancel request as the sessions' own connections do.

    The backend's cancel key goes over TLS whenever the connection uses it.
    Returns False (logged) when TLS is required and the backend declines it.
    """
    mode = conn.tls.mode
    if mode == "disable":
        return True
    writer.write(m.encode_ssl_request())
    await writer.drain()
    answer = await reader.readexactly(1)
    if answer == b"S":
        await writer.start_tls(
            backend_context(mode, conn.tls.ca_file),
            server_hostname=conn.tls.server_name or conn.host,
            ssl_handshake_timeout=conn.connect_timeout,
        )
        return True
    if answer == b"N" and mode == "prefer":
        return True
    log.warning(
        "cancel request for %s not sent: the backend answered %r to SSLRequest and tls.mode is %s",
        conn.name,
        answer,
        mode,
    )
    return False


_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,62}$")


def _discard(backend_setup: asyncio.Future[tuple[FrameReceiver, BackendHandshake]]) -> None:
    """Close the backend session being set up for a client that will not use it,
    as soon as it is set up (without waiting for that here)."""

    def close(done: asyncio.Future[tuple[FrameReceiver, BackendHandshake]]) -> None:
        if not done.cancelled() and done.exception() is None:
            backend, _ = done.result()
            backend.close()

    backend_setup.add_done_callback(close)


def _poolable_startup(startup: m.StartupMessage) -> bool:
    """Startup settings a pooled session can take with SET (not `options`)."""
    return "options" not in startup.parameters and all(
        _SETTING_NAME.match(name) for name in startup.parameters
    )


def _quote_literal(value: str) -> str:
    """An E'' string literal: means the same whatever standard_conforming_strings is."""
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _rejected_as(identity: Identity, exc: ClientRejected) -> ClientRejected:
    exc.identity = identity
    return exc


class _Counted:
    """What one connection counts in the gateway's shared session slots,
    given back when it ends."""

    __slots__ = ("session", "user")

    def __init__(self) -> None:
        self.session = False
        self.user: str | None = None

    def give_back(self, slots: SessionSlots) -> None:
        try:
            if self.session:
                slots.leave()
            if self.user is not None:
                slots.leave_user(self.user)
        except SlotsUnavailable as exc:
            log.error("cannot count a session out: %s", exc.message)


class _SessionEnd:
    """Writes the end of a session to the store, once."""

    def __init__(self, gateway: Gateway, session_id: str):
        self.gateway = gateway
        self.session_id = session_id
        self.done = False

    async def record(
        self,
        *,
        reason: str,
        detail: str | None,
        bytes_from_client: int = 0,
        bytes_to_client: int = 0,
        statements: int = 0,
    ) -> None:
        if self.done:
            return
        self.done = True
        try:
            await self.gateway.in_store(
                self.gateway.store.end_session,
                self.session_id,
                ended_at=dt.datetime.now(dt.UTC),
                bytes_from_client=bytes_from_client,
                bytes_to_client=bytes_to_client,
                statements=statements,
                end_reason=reason,
                end_detail=detail,
            )
        except StoreError as exc:
            log.error("cannot record the end of session %s: %s", self.session_id, exc)
