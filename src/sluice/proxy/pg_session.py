"""The data phase of a PostgreSQL session: the gateway's hot path.

Two `asyncio.Protocol`s (client side, backend side) feed one `PgSession`.
Client messages are framed, judged by governance and forwarded (or replaced);
the server's stream is walked frame by frame from a buffer, without awaiting
per message, and forwarded in as few writes as possible.

A blocked statement is not answered by the gateway itself: it is replaced by
one that fails on the backend with a unique marker, so the backend keeps its
own protocol and transaction state (error recovery until Sync, an aborted
transaction block) exactly as if the statement had failed there, and the
gateway rewrites that one error into its own 42501. The client's view of the
transaction state therefore always matches the backend's.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sluice.config import Limits
from sluice.events import QueryOrigin
from sluice.masking import MaskingError
from sluice.policy.engine import UNKNOWN_PREPARED_RULE
from sluice.policy.prepared import mentions_prepared
from sluice.policy.sql import CLIENT_ONLY_ENCODINGS, MAX_CACHED_SQL_CHARS, reads_backslashes
from sluice.policy.verdict import Allow, Block, RequireApproval, Verdict
from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.errors import FrameTooLarge, PgProtocolError, RemoteProtocolError
from sluice.protocols.postgres.framing import (
    MIN_LENGTH,
    frame,
    frame_end,
    frame_kind,
    header_length,
)
from sluice.protocols.postgres.rows import copydata_run, datarow_run, walk_frames
from sluice.protocols.postgres.tracker import QueryTracker, StatementChange
from sluice.proxy.governance import ApprovalOutcome, SessionGovernance
from sluice.proxy.pg_statements import BackendStatements
from sluice.proxy.tls_pages import release_read_buffer
from sluice.recording import RecordingError

# Enum members bound once: compiled, `Enum.MEMBER` is an attribute lookup
# through the enum's metaclass at every use (about 800 instructions on 3.11).
_ORIGIN_EXECUTE: Final = QueryOrigin.EXECUTE
_ORIGIN_FUNCTION_CALL: Final = QueryOrigin.FUNCTION_CALL
_ORIGIN_PARSE: Final = QueryOrigin.PARSE
_ORIGIN_SIMPLE: Final = QueryOrigin.SIMPLE

log = logging.getLogger(__name__)


# The largest server message the gateway buffers whole (a DataRow with a big
# value, say). PostgreSQL's own ceiling is 1 GiB; beyond this limit the session
# fails closed rather than hold an unbounded message in memory.
MAX_SERVER_MESSAGE: Final = 256 * 1024 * 1024

# Client messages that may arrive in the data phase, and what they are.
_CLIENT_KINDS: Final = frozenset(b"QPBEDCSHXFdcf")

# The client's COPY FROM messages: CopyData, CopyDone, CopyFail.
_COPY_IN_KINDS: Final = frozenset(b"dcf")

# Server message kinds the query tracker must see.
_TRACKED: Final = frozenset(b"123TnCIsVEZ")

# The most handed to a transport in one write. uvloop's TLS transport
# encrypts each write into an OpenSSL memory BIO, and that buffer keeps the
# size of the largest write for the connection's life: a 4 MB row written
# at once stayed 4 MB per session, resident until the session ended.
SEND_SLICE: Final = 256 * 1024

# A read this large touched that much of its TLS read buffer (uvloop's, 256
# KiB per connection); once the session has been idle for the limit
# `idle_release_seconds` the buffers' pages of both legs go back to the OS
# (see tls_pages).
IDLE_RELEASE_READ: Final = 64 * 1024

# Settings the backend reports (ParameterStatus) that change how it reads text.
STANDARD_STRINGS: Final = "standard_conforming_strings"
CLIENT_ENCODING: Final = "client_encoding"


@dataclass(frozen=True, slots=True)
class _GatewayError:
    sqlstate: str
    message: str
    hint: str | None
    sync_index: int


class PgSession:
    """One established session between a client and its backend."""

    def __init__(
        self,
        *,
        client: asyncio.Transport,
        backend: asyncio.Transport,
        governance: SessionGovernance,
        limits: Limits,
        transaction_status: str,
        on_finish: Callable[[PgSession], None],
        release_backend: Callable[[asyncio.Transport], bool] | None = None,
        parameters: Mapping[str, str] | None = None,
        on_idle_release: Callable[[int], None] | None = None,
    ):
        self.client = client
        self.backend = backend
        self.governance = governance
        self.limits = limits
        self.transaction_status = transaction_status
        self._on_finish = on_finish
        self._release_backend = release_backend
        self.loop = asyncio.get_running_loop()
        self.bytes_from_client = 0
        self.bytes_to_client = 0
        self.statements = 0
        self.end_reason: str | None = None
        self.end_detail: str | None = None
        self._cbuf = bytearray()  # client bytes not handled yet
        self._sbuf = bytearray()
        # Nothing to judge, mask or record in responses, no pool: responses
        # are only walked for their frame boundaries (see _process_backend_light).
        self._light = (
            not governance.wants_rows
            and not governance.masks_messages
            and not governance.handles_copy
            and not governance.judges
            and release_backend is None
        )
        self._tracker: QueryTracker = _NoTracking() if self._light else QueryTracker()
        # What the backend holds under each statement name, followed from its
        # answers (a light session does not read them: it takes the prediction).
        self._statements = governance.prepared = BackendStatements(answered=not self._light)
        # Portals whose statement creates or drops prepared statements when executed.
        self._portal_changes: dict[str, str] = {}
        # The unnamed statement's verdict at its Parse, and whether it was
        # bound since (a second execution of it is audited on its own).
        self._unnamed_verdict: Allow = _NO_VERDICT
        self._unnamed_bound = False
        self._gateway_errors: dict[str, _GatewayError] = {}
        self._syncs_sent = 0
        self._syncs_done = 0
        # How the backend reads statement text, as it last reported; and
        # whether an Execute went since the last Sync (its effects are not
        # reported until that Sync's ReadyForQuery).
        reported = parameters or {}
        self._standard_strings = reported.get(STANDARD_STRINGS)
        self._client_encoding = reported.get(CLIENT_ENCODING)
        self._executed_since_sync = False
        self._held: tuple[int, bytes] | None = None
        self._approval_task: asyncio.Task[None] | None = None
        self._client_paused_by_backend = False
        self._stall_timer: asyncio.TimerHandle | None = None
        self._last_client_data = 0.0
        # Set after a large read: hands the TLS read buffers' pages back once idle.
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_mark = 0
        self._on_idle_release = on_idle_release
        self._closed = False

    # Lifecycle

    def finish(self, reason: str, detail: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self.end_reason = reason
        self.end_detail = detail
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._approval_task is not None and not self._approval_task.done():
            self._approval_task.cancel()
        if not self.backend.is_closing():
            if (
                self._poolable(reason)
                and self._release_backend is not None
                and self._release_backend(self.backend)
            ):
                self.backend = _Released()
            if not self.backend.is_closing():
                if reason not in ("backend_disconnected",):
                    self.backend.write(m.TERMINATE_MESSAGE)
                self.backend.close()
        if not self.client.is_closing():
            self.client.close()
        self._on_finish(self)

    def _poolable(self, reason: str) -> bool:
        """A backend session may serve another client only after a clean end."""
        return (
            reason == "client_terminated"
            and self.transaction_status == "I"
            and not self._tracker.pending
            and not self._sbuf
            and self._held is None
        )

    def fail_client(
        self,
        sqlstate: str,
        message: str,
        *,
        reason: str,
        hint: str | None = None,
        severity: str = "FATAL",
    ) -> None:
        """Tell the client why the session ends, then end it."""
        if not self.client.is_closing():
            data = m.error_response(sqlstate, message, severity=severity, hint=hint)
            self.bytes_to_client += len(data)
            self.client.write(data)
        self.finish(reason, f"{sqlstate}: {message}")

    # Client to backend

    def client_data(self, data: bytes) -> None:
        """Judge and forward the client's messages, walked from `data` itself.

        Only what cannot be handled yet is copied into `_cbuf`: the start of a
        message split across reads, or messages behind one held for approval.
        A read holding one whole message that goes on unchanged is forwarded
        as the very object that arrived.
        """
        if self._closed:
            return
        self.bytes_from_client += len(data)
        if len(data) >= IDLE_RELEASE_READ and self._idle_timer is None:
            self._arm_idle_release()
        if self._cbuf or self._held is not None:
            if not self._buffer_client(data):
                return
            if self._held is None:
                self._process_client()
        else:
            consumed = self._client_frames(data)
            rest = len(data) - consumed
            if rest and not self._closed and not self._buffer_client(memoryview(data)[consumed:]):
                return
        self._watch_stall()

    def _buffer_client(self, data: bytes | memoryview) -> bool:
        try:
            self._cbuf += data
        except MemoryError:
            self.fail_client(
                "53200", "out of memory buffering the client's message", reason="gateway_error"
            )
            return False
        return True

    def _process_client(self) -> None:
        """Handle the messages buffered in `_cbuf` (after a split read or an approval)."""
        pending = self._cbuf
        consumed = self._client_frames(pending)
        if not self._closed:
            del pending[:consumed]

    def _client_frames(self, buf: bytes | bytearray) -> int:
        """Handle the complete messages at the start of `buf`; return how far it got.

        Stops early at a message held for approval or one that ends the session.
        """
        size = len(buf)
        pos = 0
        out: list[bytes] = []
        limit = self.limits.max_client_message
        try:
            while size - pos >= 5:
                kind = frame_kind(buf, pos)
                length = header_length(buf, pos)
                if length < MIN_LENGTH:
                    raise RemoteProtocolError(f"invalid message length {length} for type {kind!r}")
                if length > limit:
                    raise FrameTooLarge(
                        f"message of type {chr(kind)!r} declares {length} bytes, "
                        f"over the limit of {limit}"
                    )
                end = pos + 1 + length
                if end > size:
                    break
                if kind not in _CLIENT_KINDS:
                    raise RemoteProtocolError(
                        f"unexpected message type {chr(kind)!r} from the client"
                    )
                raw = _bytes_of(buf, pos, end)  # a whole `bytes` read: itself, no copy
                pos = end
                if not self._client_frame(kind, raw[5:], raw, out):
                    break
        except FrameTooLarge as exc:
            self._flush_backend(out)
            self.fail_client(
                exc.sqlstate,
                exc.message,
                reason="protocol_error",
                hint="split large data (e.g. COPY in smaller messages)",
            )
            return size
        except RemoteProtocolError as exc:
            self._flush_backend(out)
            self.fail_client(
                "08P01", f"invalid message from the client: {exc.message}", reason="protocol_error"
            )
            return size
        except Exception as exc:
            # A bug of ours: nothing more of this batch reaches the backend.
            log.exception("handling the client's messages failed; closing the session")
            self.fail_client(
                "XX000",
                f"the gateway failed on the client's message ({exc})",
                reason="gateway_error",
            )
            return size
        self._flush_backend(out)
        return pos

    def _flush_backend(self, out: list[bytes]) -> None:
        if out and not self.backend.is_closing():
            data = out[0] if len(out) == 1 else b"".join(out)
            if len(data) > SEND_SLICE:
                _write_sliced(self.backend, data)
            else:
                self.backend.write(data)
        out.clear()

    def _client_frame(self, kind: int, body: bytes, raw: bytes, out: list[bytes]) -> bool:
        """Handle one client message (`raw` is all of it, `body` after its header).

        What goes to the backend is appended to `out`; False stops processing
        (held for approval, or the session ended).
        """
        if self._light and kind in _UNJUDGED:
            if kind == m.SYNC:
                self._syncs_sent += 1
            out.append(raw)
            return True
        if kind == m.QUERY:
            text = m.query_text(body)
            self.statements += 1
            verdict = self._judge(text, _ORIGIN_SIMPLE, None)
            return self._act(verdict, kind, body, raw, out, sql=text)
        if kind == m.PARSE:
            parse = m.decode_parse(body)
            verdict = self._judge(parse.sql, _ORIGIN_PARSE, parse.name or None)
            return self._act(verdict, kind, body, raw, out, sql=parse.sql, parse=parse)
        if kind == m.BIND:
            bind = m.decode_bind(body)
            name = bind.statement
            sql = self._statements.text(name)
            refused = self._unknown_statement(name, sql)
            if refused is not None:
                return self._act(refused, kind, body, raw, out, sql=sql or "", bind=bind)
            if sql is not None:
                if name:
                    verdict = self._judge(sql, _ORIGIN_EXECUTE, name)
                    if not isinstance(verdict, Allow):
                        return self._act(verdict, kind, body, raw, out, sql=sql, bind=bind)
                else:  # the unnamed statement was judged at its Parse
                    verdict = self._unnamed_verdict
                # Each execution is recorded and audited; the first of the
                # unnamed statement is its Parse's, already audited.
                audit = bool(name) or self._unnamed_bound
                self._unnamed_bound = self._unnamed_bound or not name
                if not self._bind_allowed(sql, verdict, bind, body, audit=audit):
                    refused = Block(
                        rule="recording-required",
                        reason="its execution could not be recorded; nothing was sent",
                    )
                    return self._act(refused, kind, body, raw, out, sql=sql, bind=bind)
            self._bound(bind, sql)
        elif kind == m.EXECUTE:
            portal = m.execute_portal(body)
            self.statements += 1
            self._executed_since_sync = True
            runs = self._portal_changes.get(portal) if self._portal_changes else None
            changes = self._statements.query(runs, self._syncs_sent) if runs else ()
            self._tracker.on_execute(portal, changes)
        elif kind == m.DESCRIBE:
            target, name = m.describe_target(body)
            self._tracker.on_describe(target, name)
        elif kind == m.CLOSE:
            close = m.decode_close(body)
            closed: tuple[StatementChange, ...] = ()
            if close.kind == "S":
                closed = (self._statements.close(close.name, self._syncs_sent),)
                self.governance.statement_closed(close.name)
            else:
                self._portal_changes.pop(close.name, None)
            self._tracker.on_close(close.kind, close.name, closed)
        elif kind == m.SYNC:
            self._syncs_sent += 1
            self._executed_since_sync = False
            self._tracker.on_sync()
        elif kind == m.FUNCTION_CALL:
            self.statements += 1
            call = m.decode_function_call(body)
            sql = f"-- fast-path function call of function oid {call.oid}"
            verdict = self._judge(sql, _ORIGIN_FUNCTION_CALL, None)
            if isinstance(verdict, Allow) and self.governance.masking is not None:
                # Its result comes back as one bare value, outside any masking.
                verdict = Block(
                    rule="masking-required",
                    reason="the result of a fast-path function call cannot be masked; "
                    "call the function with SELECT instead",
                )
            return self._act(verdict, kind, body, raw, out, sql=sql, call=call)
        elif kind == m.TERMINATE:
            self._flush_backend(out)
            self.finish("client_terminated")
            return False
        elif kind in _COPY_IN_KINDS and self.governance.handles_copy:
            return self._copy_in(kind, body, raw, out)
        out.append(raw)
        return True

    def _copy_in(self, kind: int, body: bytes, raw: bytes, out: list[bytes]) -> bool:
        """COPY FROM data, done or fail: recorded before it goes to the server.

        If the log cannot keep it, the session ends and the server never gets
        it (nor the CopyDone that would commit the COPY).
        """
        try:
            if kind == m.COPY_DATA:
                self.governance.record_copy_in(body)
            else:
                self.governance.copy_in_done()
        except (RecordingError, MaskingError) as exc:
            log.error("COPY data could not be recorded; ending the session: %s", exc)
            self.fail_client(
                exc.sqlstate,
                f"the COPY data could not be recorded ({exc.message}); the COPY was aborted",
                reason="recording_failed" if isinstance(exc, RecordingError) else "masking_failed",
            )
            return False
        out.append(raw)
        return True

    def _bind_allowed(
        self, sql: str, verdict: Allow, bind: m.Bind, body: bytes, *, audit: bool
    ) -> bool:
        """Record and audit an allowed execution; False if that could not be done."""
        try:
            self.governance.bind_allowed(
                sql, verdict, bind.statement or None, bind.portal, body, audit=audit
            )
        except PgProtocolError:
            raise  # a malformed Bind: the session's protocol error
        except Exception:
            log.exception("recording or auditing an execution failed; refusing it")
            return False
        return True

    def _unknown_statement(self, name: str, sql: str | None) -> Block | None:
        """Why a Bind of statement `name` (holding `sql`, if known) cannot be
        judged, or None. Without a policy nothing is judged."""
        if not self.governance.judges:
            return None
        if sql is None:
            return Block(
                rule=UNKNOWN_PREPARED_RULE,
                reason=f"prepared statement {name!r} is unknown to Sluice (never prepared, "
                "closed, or its PREPARE failed); blocked",
            )
        if self._statements.ambiguous(name, self._syncs_sent):
            return Block(rule=AMBIGUOUS_STATEMENT_RULE, reason=_ambiguous_reason(name))
        return None

    def _bound(self, bind: m.Bind, sql: str | None) -> None:
        """A Bind goes on to the backend: its portal runs `sql` when executed."""
        if sql is not None and _runs_changes(sql):
            self._portal_changes[bind.portal] = sql
        elif self._portal_changes:
            self._portal_changes.pop(bind.portal, None)
        self._tracker.on_bind(bind.portal, bind.statement, bind.result_formats)

    def _judge(self, sql: str, origin: QueryOrigin, name: str | None) -> Verdict:
        if (not sql.isascii() or "\\" in sql) and origin is not _ORIGIN_EXECUTE:
            ambiguous = self._read_otherwise(sql)
            if ambiguous is not None:
                return Block(rule="ambiguous-sql", reason=ambiguous)
        if origin is not _ORIGIN_EXECUTE and self.governance.judges:
            unsettled = self._statements.ambiguous_in(sql, self._syncs_sent)
            if unsettled is not None:
                return Block(rule=AMBIGUOUS_STATEMENT_RULE, reason=_ambiguous_reason(unsettled))
        try:
            return self.governance.judge(sql, origin, name)
        except Exception as exc:
            log.exception("governance failed; blocking the statement")
            return Block(rule="gateway-error", reason=f"the gateway could not judge it ({exc})")

    def _read_otherwise(self, sql: str) -> str | None:
        """Why the backend may read `sql` otherwise than the policy's parser
        (which reads it as UTF-8 with standard_conforming_strings on), or None.

        Only a backslash in a plain string literal depends on
        standard_conforming_strings, and only non-ASCII text on a client-only
        client_encoding. Both settings are known for sure only once the
        backend has answered everything sent before: a statement in flight
        may change them (SET, set_config, a function), and the backend reads
        a text with the settings in force when it arrives.
        """
        governance = self.governance
        if not governance.judges and governance.masking is None:
            return None  # nothing is decided from the parse
        backslash = reads_backslashes(sql)
        foreign = not sql.isascii()
        if not backslash and not foreign:
            return None
        if self._syncs_done < self._syncs_sent or self._executed_since_sync:
            settings = " and ".join(
                name
                for name, depends in ((STANDARD_STRINGS, backslash), (CLIENT_ENCODING, foreign))
                if depends
            )
            return (
                f"its text may read otherwise under the session's {settings}, which the "
                "statements still running before it may change; send it once their results "
                "are in"
            )
        if backslash and self._standard_strings != "on":
            return (
                f"standard_conforming_strings is {self._standard_strings or 'not reported'} "
                "in this session, so a backslash in a '...' string escapes what follows it; "
                "write such strings as E'...', or SET standard_conforming_strings = on"
            )
        encoding = self._client_encoding
        if foreign and (encoding is None or encoding.upper() in CLIENT_ONLY_ENCODINGS):
            return (
                f"client_encoding is {encoding or 'not reported'}, whose characters may hold "
                "ASCII bytes, so its non-ASCII text may read otherwise; SET client_encoding = "
                "'UTF8'"
            )
        return None

    def _act(
        self,
        verdict: Verdict,
        kind: int,
        body: bytes,
        raw: bytes,
        out: list[bytes],
        *,
        sql: str,
        parse: m.Parse | None = None,
        bind: m.Bind | None = None,
        call: m.FunctionCall | None = None,
    ) -> bool:
        origin, name = _origin_of(kind, parse, bind)
        if isinstance(verdict, Allow):
            try:
                self.governance.before_forward(sql, verdict, origin, name)
                if call is not None:
                    self.governance.function_call_allowed(call)
            except MaskingError as exc:
                log.error("masking cannot be applied; refusing the statement: %s", exc)
                verdict = Block(rule="masking-required", reason=f"{exc.message}; nothing was sent")
            except Exception as exc:
                log.exception("recording or audit failed; refusing the statement")
                verdict = Block(
                    rule="recording-required",
                    reason=f"it could not be recorded ({exc}); nothing was sent",
                )
            else:
                self._forward(
                    kind, raw, out, sql=sql, verdict=verdict, parse=parse, bind=bind, call=call
                )
                return True
        if isinstance(verdict, RequireApproval):
            self._flush_backend(out)
            self._hold(verdict, kind, body, sql)
            return False
        message = f"blocked by Sluice: {verdict.reason}"
        self._refuse(
            kind,
            body,
            out,
            sql,
            verdict,
            "42501",
            message,
            hint=f"policy rule: {verdict.rule}",
            parse=parse,
            bind=bind,
        )
        return True

    def _refuse(
        self,
        kind: int,
        body: bytes,
        out: list[bytes],
        sql: str,
        verdict: Block | RequireApproval,
        sqlstate: str,
        message: str,
        *,
        hint: str | None,
        parse: m.Parse | None,
        bind: m.Bind | None,
    ) -> None:
        origin, name = _origin_of(kind, parse, bind)
        try:
            self.governance.on_blocked(sql, origin, name, verdict, sqlstate, message)
        except Exception:
            log.exception("recording a refused statement failed")
        self._substitute_error(
            kind, body, out, sqlstate, message, hint=hint, parse=parse, bind=bind
        )

    def _forward(
        self,
        kind: int,
        raw: bytes,
        out: list[bytes],
        *,
        sql: str,
        verdict: Allow,
        parse: m.Parse | None,
        bind: m.Bind | None,
        call: m.FunctionCall | None = None,
    ) -> None:
        if kind == m.QUERY:
            changes = self._statements.query(sql, self._syncs_sent)
            self._syncs_sent += 1
            self._tracker.on_query(sql, changes)
        elif kind == m.PARSE and parse is not None:
            change = self._statements.parse(parse.name, parse.sql, self._syncs_sent)
            if not parse.name:
                self._unnamed_bound = False
                self._unnamed_verdict = verdict
            self._tracker.on_parse(parse.name, parse.sql, (change,))
        elif kind == m.BIND and bind is not None:
            self._bound(bind, sql)
        elif kind == m.FUNCTION_CALL:
            self._syncs_sent += 1
            self._tracker.on_function_call(call.result_format if call is not None else 0)
        out.append(raw)

    def _substitute_error(
        self,
        kind: int,
        body: bytes,
        out: list[bytes],
        sqlstate: str,
        message: str,
        *,
        hint: str | None,
        parse: m.Parse | None = None,
        bind: m.Bind | None = None,
    ) -> None:
        """Send the backend a message that fails with a marker we rewrite on return."""
        marker = f"sluice-{secrets.token_hex(10)}"
        if kind in (m.QUERY, m.FUNCTION_CALL):
            # A simple query (or a fast-path call, which also ends in ReadyForQuery).
            sync_index = self._syncs_sent
            self._syncs_sent += 1
            sql = f'SELECT "{marker}"'
            self._tracker.on_query(sql)
            out.append(m.encode_query(sql))
        elif kind == m.PARSE:
            assert parse is not None
            sync_index = self._syncs_sent
            sql = f'SELECT "{marker}"'
            self._tracker.on_parse(parse.name, sql)
            out.append(frame(b"P", parse.name.encode() + b"\0" + sql.encode() + b"\0\0\0"))
        else:
            assert bind is not None
            sync_index = self._syncs_sent
            self._tracker.on_bind(bind.portal, marker, bind.result_formats)
            out.append(frame(b"B", b"\0" + marker.encode() + b"\0\0\0\0\0\0\0"))
        self._gateway_errors[marker] = _GatewayError(sqlstate, message, hint, sync_index)

    # Approval

    def _hold(self, verdict: RequireApproval, kind: int, body: bytes, sql: str) -> None:
        self._held = (kind, body)
        self.client.pause_reading()
        self._approval_task = self.loop.create_task(self._await_approval(verdict, kind, body, sql))
        self._approval_task.add_done_callback(_log_task_error)

    async def _await_approval(
        self, verdict: RequireApproval, kind: int, body: bytes, sql: str
    ) -> None:
        def notify(message: str, hint: str) -> None:
            if not self.client.is_closing():
                data = m.notice_response(message, hint=hint)
                self.bytes_to_client += len(data)
                self.client.write(data)

        try:
            outcome = await self.governance.request_approval(sql, verdict, notify=notify)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("approval flow failed; denying the statement")
            outcome = ApprovalOutcome(
                approved=False, sqlstate="42501", message=f"approval could not be obtained ({exc})"
            )
        if self._closed:
            return
        self._held = None
        self.governance.approval_settled()
        out: list[bytes] = []
        parse = m.decode_parse(body) if kind == m.PARSE else None
        bind = m.decode_bind(body) if kind == m.BIND else None
        origin, name = _origin_of(kind, parse, bind)
        if outcome.approved:
            allowed = Allow(rule=verdict.rule, reason="approved", mask=verdict.mask)
            try:
                self.governance.before_forward(
                    sql, allowed, origin, name, approval_id=outcome.approval_id
                )
                if bind is not None:  # its parameters, as for any execution
                    self.governance.bind_allowed(sql, allowed, name, bind.portal, body, audit=False)
            except Exception as exc:
                log.exception("recording failed after approval; refusing the statement")
                self._refuse(
                    kind,
                    body,
                    out,
                    sql,
                    verdict,
                    "58030",
                    f"blocked by Sluice: it could not be recorded ({exc})",
                    hint=None,
                    parse=parse,
                    bind=bind,
                )
            else:
                self._forward(
                    kind,
                    frame(bytes((kind,)), body),
                    out,
                    sql=sql,
                    verdict=allowed,
                    parse=parse,
                    bind=bind,
                )
        else:
            self._refuse(
                kind,
                body,
                out,
                sql,
                verdict,
                outcome.sqlstate,
                outcome.message,
                hint=outcome.hint,
                parse=parse,
                bind=bind,
            )
        self._flush_backend(out)
        if not self._client_paused_by_backend:
            self.client.resume_reading()
        self._process_client()

    def cancel_requested(self) -> bool:
        """Ctrl-C while a statement is held withdraws the approval request."""
        if self._approval_task is not None and not self._approval_task.done() and self._held:
            self.governance.withdraw_approval()
            return True
        return False

    # Stalled clients

    def _watch_stall(self) -> None:
        if self._cbuf and not self._closed:
            self._last_client_data = self.loop.time()
            if self._stall_timer is None:
                self._stall_timer = self.loop.call_later(
                    self.limits.message_stall_timeout, self._check_stall
                )
        elif self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _check_stall(self) -> None:
        self._stall_timer = None
        if self._closed or not self._cbuf or self._held is not None:
            return
        idle = self.loop.time() - self._last_client_data
        if idle >= self.limits.message_stall_timeout:
            self.fail_client(
                "08P01",
                f"the client sent part of a message and stalled for {idle:.0f}s",
                reason="client_stalled",
            )
        else:
            self._stall_timer = self.loop.call_later(
                self.limits.message_stall_timeout - idle, self._check_stall
            )

    # Buffers of idle sessions

    def _arm_idle_release(self) -> None:
        self._idle_mark = self.bytes_from_client + self.bytes_to_client
        self._idle_timer = self.loop.call_later(
            self.limits.idle_release_seconds, self._release_if_idle
        )

    def _release_if_idle(self) -> None:
        """After a large read: once no byte has passed for a while, the TLS
        read buffers of both legs give their pages back."""
        self._idle_timer = None
        if self._closed:
            return
        if self.bytes_from_client + self.bytes_to_client != self._idle_mark:
            self._arm_idle_release()  # still busy: look again later
            return
        released = release_read_buffer(self.client) + release_read_buffer(self.backend)
        if self._on_idle_release is not None:
            self._on_idle_release(released)

    # Backend to client

    def backend_data(self, data: bytes) -> None:
        """Forward the server's bytes, walked from `data` itself where it can be.

        Only a frame split across reads is copied into `_sbuf`, completed from
        the head of the next read and handled alone; the rest of each read is
        walked in place, and when nothing in it is replaced it goes to the
        client as the very object that arrived.
        """
        if self._closed:
            return
        if len(data) >= IDLE_RELEASE_READ and self._idle_timer is None:
            self._arm_idle_release()
        head: bytes | memoryview = b""
        try:
            start = 0
            if self._sbuf:
                start, head = self._complete_split_frame(data)
                if self._sbuf or self._closed:
                    return  # still not a whole frame (wait for more), or the session ended
            size = len(data)
            if start < size:
                out, consumed = self._process(data, start)
                if consumed < size:
                    self._sbuf += memoryview(data)[consumed:]
            else:
                out = b""
        except MaskingError as exc:
            log.error("masking failed in session %s: %s", self.governance.context.session_id, exc)
            self.fail_client(
                exc.sqlstate,
                f"masking failed ({exc.message}); the rest of the result was not sent",
                reason="masking_failed",
            )
            return
        except PgProtocolError as exc:
            self.fail_client(
                "08P01",
                f"invalid message from the backend: {exc.message}",
                reason="backend_protocol_error",
            )
            return
        except Exception as exc:
            log.exception("processing the backend's response failed; closing the session")
            self.fail_client(
                "XX000",
                f"the gateway could not process the response ({exc}); nothing more was sent",
                reason="gateway_error",
            )
            return
        if head and out and len(head) <= SEND_SLICE and len(out) <= SEND_SLICE:
            # One send for both: the completed frame is not a write (a TLS
            # record and a system call) of its own. A read is at most 256 KiB
            # (uvloop's), so this is the common case on large results.
            self.bytes_to_client += len(head) + len(out)
            self.client.writelines((head, out))
        else:
            self._send_client(head)
            self._send_client(out)

    def _send_client(self, data: bytes | memoryview) -> None:
        if data:
            self.bytes_to_client += len(data)
            if len(data) > SEND_SLICE:
                _write_sliced(self.client, data)
            else:
                self.client.write(data)

    def _process(self, buf: bytes | bytearray, start: int) -> tuple[bytes | memoryview, int]:
        if self._light:
            return self._process_backend_light(buf, start)
        return self._process_backend(buf, start)

    def _complete_split_frame(self, data: bytes) -> tuple[int, bytes | memoryview]:
        """Complete the frame buffered in `_sbuf` from the head of `data`.

        Returns how many bytes of `data` it took and what of the frame goes to
        the client (nothing until it is whole). Once the frame is whole it is
        processed, and `_sbuf` is empty again.
        """
        pending = self._sbuf
        taken = 0
        if len(pending) < 5:
            taken = min(5 - len(pending), len(data))
            pending += data[:taken]
            if len(pending) < 5:
                return taken, b""
        # Raises on an invalid length, or one over the limit (fail closed).
        frame_end(pending, 0, len(pending), MAX_SERVER_MESSAGE)
        length = header_length(pending, 0)
        missing = 1 + length - len(pending)
        if missing > 0:
            more = min(missing, len(data) - taken)
            pending += memoryview(data)[taken : taken + more]
            taken += more
            if more < missing:
                return taken, b""
        out, consumed = self._process(pending, 0)
        del pending[:consumed]  # all of it: it held one whole frame
        return taken, out

    def _process_backend(
        self, buf: bytes | bytearray, start: int
    ) -> tuple[bytes | memoryview, int]:
        """Walk complete frames in buf; return what to send and how much was used.

        Runs of DataRows are walked by their headers only and handed to
        governance as one region of bytes: no object is made per row unless
        masking or recording needs the values.
        """
        size = len(buf)
        pos = start
        copied = start
        parts: list[bytes | memoryview] = []
        tracker = self._tracker
        governance = self.governance
        rows_wanted = governance.wants_rows
        while size - pos >= 5:
            kind = frame_kind(buf, pos)
            end = frame_end(buf, pos, size, MAX_SERVER_MESSAGE)
            if end < 0:
                break
            if kind == 68:  # 'D' DataRow: take the whole run of them
                run_start = pos
                # Each frame's offset in the run (for masking); the walk stops
                # at the first frame that is not a complete DataRow.
                pos, starts = datarow_run(buf, pos, size)
                if rows_wanted:
                    replaced = governance.process_rows(
                        tracker.rows_shape(), _span(buf, run_start, pos), len(starts), starts
                    )
                    if replaced is not None:
                        parts.append(_span(buf, copied, run_start))
                        parts.append(replaced)
                        copied = pos
                continue
            if kind in _TRACKED:
                if kind == 84:  # 'T'
                    tracker.on_server(kind, _bytes_of(buf, pos + 5, end))
                else:
                    if kind == 90:  # 'Z'
                        self._on_ready(buf[pos + 5 : end])
                    elif kind == 69:  # 'E'
                        replacement = self._on_error(_bytes_of(buf, pos + 5, end))
                        if replacement is not None:
                            parts.append(_span(buf, copied, pos))
                            parts.append(replacement)
                            copied = end
                    elif kind == 86:  # 'V' FunctionCallResponse
                        governance.function_result(
                            _bytes_of(buf, pos + 5, end), tracker.function_result_format()
                        )
                    tracker.on_server(kind)
                    if kind in (67, 73, 115):  # 'C', 'I', 's'
                        governance.result_done(_bytes_of(buf, pos + 5, end))
            elif kind in (78, 65) and governance.masks_messages:  # 'N', 'A'
                replacement = governance.process_message(kind, _bytes_of(buf, pos + 5, end))
                parts.append(_span(buf, copied, pos))
                parts.append(replacement)
                copied = end
            elif kind == 100 and governance.handles_copy:  # 'd' CopyData (COPY TO)
                # The whole run at once: PostgreSQL sends a message per row, and
                # COPY data may be cut into messages anywhere.
                run_start = pos
                pos, payloads = copydata_run(buf, pos, size)
                if not governance.masks_copy:  # recorded only: forwarded unchanged
                    governance.record_copy_out(payloads)
                    continue
                parts.append(_span(buf, copied, run_start))
                parts.append(governance.process_copy_data(payloads))  # one message, or none
                copied = pos
                continue
            elif kind == 72 and governance.handles_copy:  # 'H' CopyOutResponse
                governance.copy_out_started(_bytes_of(buf, pos + 5, end), tracker.current_sql())
            elif kind == 71 and governance.handles_copy:  # 'G' CopyInResponse
                governance.copy_in_started(_bytes_of(buf, pos + 5, end), tracker.current_sql())
            elif kind == 99 and governance.handles_copy:  # 'c' CopyDone
                tail = governance.copy_out_done()
                if tail:
                    parts.append(_span(buf, copied, pos))
                    parts.append(tail)
                    copied = pos
            elif kind == 83:  # 'S' ParameterStatus
                status = _bytes_of(buf, pos + 5, end)
                self._parameter_status(status)
                replacement = governance.mask_parameter_status(status)
                if replacement is not None:
                    parts.append(_span(buf, copied, pos))
                    parts.append(replacement)
                    copied = end
            pos = end
        return _joined(buf, parts, copied, pos)

    def _process_backend_light(
        self, buf: bytes | bytearray, start: int
    ) -> tuple[bytes | memoryview, int]:
        """Walk frame boundaries only: for ReadyForQuery and the gateway's own errors."""
        size = len(buf)
        pos = start
        copied = start
        parts: list[bytes | memoryview] = []
        while True:
            # Compiled: skips whole frames, counting ReadyForQuery; stops at an
            # ErrorResponse only while the gateway has errors of its own pending.
            pos, readies, status = walk_frames(
                buf, pos, size, b"E" if self._gateway_errors else b""
            )
            if readies:
                self._ready(readies, status)
            if size - pos < 5:
                break
            end = frame_end(buf, pos, size, MAX_SERVER_MESSAGE)  # raises on a bad length
            if end < 0:
                break
            replacement = self._on_error(_bytes_of(buf, pos + 5, end))  # the one stop kind
            if replacement is not None:
                parts.append(_span(buf, copied, pos))
                parts.append(replacement)
                copied = end
            pos = end
        return _joined(buf, parts, copied, pos)

    def _parameter_status(self, body: bytes) -> None:
        name, value = m.decode_parameter_status(body)
        if name == STANDARD_STRINGS:
            self._standard_strings = value
        elif name == CLIENT_ENCODING:
            self._client_encoding = value

    def _ready(self, count: int, status: int) -> None:
        """`count` ReadyForQuery frames passed, the last with `status`."""
        self.transaction_status = chr(status)
        self._syncs_done += count
        if self._gateway_errors:
            done = self._syncs_done
            for marker in [k for k, v in self._gateway_errors.items() if v.sync_index < done]:
                del self._gateway_errors[marker]

    def _on_ready(self, body: bytes | bytearray) -> None:
        self._ready(1, body[0] if body else 73)  # 'I'

    def _on_error(self, body: bytes) -> bytes | None:
        fields = m.decode_fields(body)
        if self._gateway_errors:
            text = fields.get("M", "")
            for marker, error in self._gateway_errors.items():
                if marker in text:
                    del self._gateway_errors[marker]
                    return m.error_response(error.sqlstate, error.message, hint=error.hint)
        if self.governance.masks_messages:
            return self.governance.process_message(m.ERROR_RESPONSE, body)
        return None

    # Backpressure

    def client_paused_writing(self) -> None:
        self.backend.pause_reading()

    def client_resumed_writing(self) -> None:
        if not self.backend.is_closing():
            self.backend.resume_reading()

    def backend_paused_writing(self) -> None:
        self._client_paused_by_backend = True
        self.client.pause_reading()

    def backend_resumed_writing(self) -> None:
        self._client_paused_by_backend = False
        if self._held is None and not self.client.is_closing():
            self.client.resume_reading()


def _joined(
    buf: bytes | bytearray, parts: list[bytes | memoryview], copied: int, pos: int
) -> tuple[bytes | memoryview, int]:
    """What to send for what was walked: the replaced parts and the rest after `copied`."""
    if not parts:
        return _span(buf, copied, pos), pos
    parts.append(_span(buf, copied, pos))
    return b"".join(parts), pos


def _span(buf: bytes | bytearray, start: int, end: int) -> bytes | memoryview:
    """Bytes `start:end` of a read, to forward or to hand to governance.

    Of an immutable `bytes` read, the read itself or a view of it: the
    server's data is not copied by the gateway on its way through (a
    10,000-row result's reads were copied twice, as rows and as output). Of
    the split-frame buffer, which is reused, a copy.
    """
    if type(buf) is bytes:
        return buf if start == 0 and end == len(buf) else memoryview(buf)[start:end]
    return _bytes_of(buf, start, end)


def _bytes_of(buf: bytes | bytearray, start: int, end: int) -> bytes:
    if type(buf) is bytes:
        # All of a read is the read itself (compiled code copies any slice).
        return buf if start == 0 and end == len(buf) else buf[start:end]
    with memoryview(buf) as view:
        return bytes(view[start:end])


# Client messages that need no judging when nothing is judged, masked or recorded.
# (A Bind is judged: every execution is audited.)
_UNJUDGED: Final = frozenset(b"EDCSHdcf")
AMBIGUOUS_STATEMENT_RULE: Final = "ambiguous-statement"

_RUNS_CHANGES: Final[dict[str, bool]] = {}
_RUNS_CHANGES_SIZE: Final = 1024


def _runs_changes(sql: str) -> bool:
    """`mentions_prepared` of a prepared text, remembered: it is asked at every Bind."""
    if len(sql) > MAX_CACHED_SQL_CHARS:
        return mentions_prepared(sql)
    found = _RUNS_CHANGES.get(sql)
    if found is None:
        if len(_RUNS_CHANGES) >= _RUNS_CHANGES_SIZE:
            _RUNS_CHANGES.clear()
        found = _RUNS_CHANGES[sql] = mentions_prepared(sql)
    return found


def _ambiguous_reason(name: str) -> str:
    return (
        f"prepared statement {name!r} may hold another text than the policy would judge: "
        "statements still running before it create or drop it; send it once their results "
        "are in"
    )


_NO_VERDICT: Final = Allow(rule="no-policy")


class _NoTracking(QueryTracker):
    """The tracker of a light session: nothing needs to know result shapes.

    The calls the light path makes (for the messages it forwards through
    `_forward`) return at once, without building the request a tracker would
    queue; any other reaches the no-op `_push`.
    """

    def _push(self, request: Any) -> None:
        return None

    def on_query(self, sql: str, changes: tuple[StatementChange, ...] = ()) -> None:
        return None

    def on_parse(self, name: str, sql: str, changes: tuple[StatementChange, ...] = ()) -> None:
        return None

    def on_bind(self, portal: str, statement: str, formats: tuple[int, ...]) -> None:
        return None

    def on_function_call(self, result_format: int = 0) -> None:
        return None


class _Released(asyncio.Transport):
    """Stands in for a backend transport handed to the pool: it is closed here."""

    def is_closing(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    def close(self) -> None:
        return None

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


def _origin_of(
    kind: int, parse: m.Parse | None, bind: m.Bind | None
) -> tuple[QueryOrigin, str | None]:
    if kind == m.PARSE:
        return _ORIGIN_PARSE, (parse.name if parse else None) or None
    if kind == m.BIND:
        return _ORIGIN_EXECUTE, (bind.statement if bind else None) or None
    if kind == m.FUNCTION_CALL:
        return _ORIGIN_FUNCTION_CALL, None
    return _ORIGIN_SIMPLE, None


def _log_task_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("approval task failed: %s", task.exception())


class ClientSide(asyncio.Protocol):
    def __init__(self, session: PgSession):
        self.session = session

    def data_received(self, data: bytes) -> None:
        self.session.client_data(data)

    def eof_received(self) -> bool | None:
        self.session.finish("client_disconnected")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.finish("client_disconnected", str(exc) if exc else None)

    def pause_writing(self) -> None:
        self.session.client_paused_writing()

    def resume_writing(self) -> None:
        self.session.client_resumed_writing()


class BackendSide(asyncio.Protocol):
    def __init__(self, session: PgSession):
        self.session = session

    def data_received(self, data: bytes) -> None:
        self.session.backend_data(data)

    def eof_received(self) -> bool | None:
        self._lost("the backend closed the connection")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(
            f"the backend connection was lost: {exc}"
            if exc
            else "the backend closed the connection"
        )

    def _lost(self, detail: str) -> None:
        session = self.session
        if not session._closed:
            session.fail_client("08006", detail, reason="backend_disconnected")

    def pause_writing(self) -> None:
        self.session.backend_paused_writing()

    def resume_writing(self) -> None:
        self.session.backend_resumed_writing()


def _write_sliced(transport: asyncio.Transport, data: bytes | memoryview) -> None:
    """Write `data` in pieces of SEND_SLICE bytes (in order, each its own write)."""
    view = memoryview(data)
    for start in range(0, len(view), SEND_SLICE):
        transport.write(view[start : start + SEND_SLICE])
