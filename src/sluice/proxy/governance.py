"""Per-session governance: what the data path asks before and after forwarding.

The proxy asks `SessionGovernance.judge()` for every statement before it
reaches the backend and acts on the verdict; policy, approvals, masking,
recording and audit all live behind this one seam. Any exception from a
method means: deny (the proxy blocks the statement or drops the message).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import pybase64

from sluice.approvals.service import Approval, ApprovalService, ApprovalStatus
from sluice.audit import (
    ApprovalExpired,
    ApprovalRequested,
    ApprovalWithdrawn,
    AuditLog,
    EventLines,
    SessionEnd,
    SessionStart,
    StatementAllowed,
    StatementBlocked,
    context_fields,
)
from sluice.config import ConnectionSpec
from sluice.events import QueryOrigin, SessionContext
from sluice.masking import MaskingEngine, MaskingError
from sluice.policy import PolicyEngine
from sluice.policy.database import DatabaseCode
from sluice.policy.prepared import changes_search_path, mentions_prepared
from sluice.policy.secrets import redact_secrets
from sluice.policy.sql import Execute, Prepare, classify
from sluice.policy.verdict import Allow, Block, RequireApproval, Verdict
from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.framing import frame
from sluice.protocols.postgres.messages import FieldDescription
from sluice.protocols.postgres.tracker import ResultShape
from sluice.proxy.pg_masking import (
    CatalogCache,
    PgCatalog,
    PgSessionMasking,
    QueryRunner,
    load_catalog,
)
from sluice.proxy.pg_policy_catalog import PolicyFacts, load_policy_facts
from sluice.recording import Recorder

# Enum members bound once: compiled, `Enum.MEMBER` is an attribute lookup
# through the enum's metaclass at every use (about 800 instructions on 3.11).
_ORIGIN_EXECUTE: Final = QueryOrigin.EXECUTE
_ORIGIN_PARSE: Final = QueryOrigin.PARSE


class SessionMasking(Protocol):
    """Masking of one session's results (see sluice.proxy.pg_masking)."""

    def statement_allowed(self, sql: str, verdict: Allow) -> None: ...

    def mask_rows(
        self,
        shape: ResultShape | None,
        region: bytes | memoryview,
        count: int,
        starts: list[int] | None = None,
    ) -> bytes | None: ...

    def mask_message(self, kind: int, body: bytes) -> bytes: ...

    def mask_parameter_status(self, body: bytes) -> bytes | None: ...

    def mask_statement(self, sql: str) -> str: ...

    def may_need_masking(self, data: bytes) -> bool: ...

    def result_done(self) -> None: ...

    def copy_started(self, body: bytes, sql: str) -> None: ...

    def mask_copy(self, body: bytes) -> bytes: ...

    def copy_done(self) -> bytes: ...

    def copy_in_started(self, body: bytes, sql: str) -> str | None: ...

    def search_path_changed(self) -> None: ...

    def mask_copy_in(self, body: bytes) -> bytes: ...

    def copy_in_done(self) -> bytes: ...


class ApprovalNotifier(Protocol):
    """Tells approvers about a new request (e.g. a Slack-compatible webhook)."""

    async def requested(self, approval: Approval) -> object: ...


log = logging.getLogger(__name__)

# `QueryOrigin.X.value` goes through the enum's descriptor; a dict is faster per statement.
_ORIGIN_NAMES: Final = {origin: origin.value for origin in QueryOrigin}
_B64_TEXT: Final = pybase64.b64encode_as_string  # bound once, as the enum members above

BIND_PARAMS_BYTES: Final = 64 * 1024
"""Bytes of one Bind's parameter values the log keeps; later values only as sizes."""
SHOWN_TEXTS_SIZE: Final = 1024
"""Prepared texts per session whose audited (masked) form is kept."""
SHOWN_PARSED_CHARS: Final = 1024
"""A Parse's text up to this long has its audited form kept too: extended-protocol
clients (psycopg, JDBC) parse the same unnamed text for every execution."""
_PARAMS_TOO_LARGE: Final = f"parameters past {BIND_PARAMS_BYTES} bytes are not recorded"
_BINARY_UNMASKABLE: Final = "a binary value that is not text cannot be masked"
FUNCTION_RESULT_TAG: Final = "FUNCTION CALL"
"""The tag a fast-path call's result is recorded with (PostgreSQL sends none)."""
_FUNCTION_RESULT_COLUMNS: Final = ("result",)
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _binary_text(value: bytes) -> str | None:
    """A binary-format value as text, if it is UTF-8 text (no control characters)."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if _CONTROL.search(text) else text


# The verdict of every statement on a connection without a policy.
_NO_POLICY: Final = Allow(rule="no-policy")

# How often a held statement looks for its decision in the store.
APPROVAL_POLL_SECONDS: Final = 0.02


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalOutcome:
    approved: bool
    sqlstate: str = "42501"
    message: str = ""
    hint: str | None = None
    approval_id: str | None = None


@dataclass(slots=True)
class GovernanceServices:
    """Shared by all sessions; swapped as a whole on reload."""

    engine: PolicyEngine
    approvals: ApprovalService
    audit: AuditLog
    recorder_factory: Callable[[SessionContext, ConnectionSpec], Recorder | None]
    masking_engine: MaskingEngine | None = None
    catalogs: CatalogCache[PgCatalog] = field(default_factory=lambda: CatalogCache(load_catalog))
    policy_facts: CatalogCache[PolicyFacts] = field(
        default_factory=lambda: CatalogCache(load_policy_facts)
    )
    notifier: ApprovalNotifier | None = None
    approval_command: str = "sluice approvals approve"
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


MAX_SHOWN_EXECUTE_DEPTH: Final = 8
"""How deep an approval request follows EXECUTE of a statement that EXECUTEs."""


class SessionGovernance:
    """Governance of one session."""

    def __init__(
        self, context: SessionContext, connection: ConnectionSpec, governor: Governor | None = None
    ):
        self.context = context
        self._audit_fields = context_fields(context)  # the session's, on every event
        self._allowed_lines = EventLines(StatementAllowed, **self._audit_fields)
        self.connection = connection
        self._policy_name = connection.policy  # read per statement; the spec is frozen
        self._governor = governor
        services = governor.services if governor is not None else None
        self.services = services
        # The backend's prepared statements; the session follows them.
        self.prepared: Mapping[str, str] = {}
        # Statements approved at their Parse, by name: the text approved.
        self._approved_statements: dict[str, str] = {}
        # What the database's catalog shows of the functions statements may
        # run (see `start_policy`); None until read.
        self.database_code: DatabaseCode | None = None
        # Set once an allowed statement may have changed search_path: from then
        # on unqualified table names are judged as possibly in any schema.
        self.search_path_changed = False
        self._withdrawn = asyncio.Event() if services else None
        self._started = time.monotonic()
        self.recorder: Recorder | None = None
        self.masking: SessionMasking | None = None
        if services is not None:
            self.recorder = services.recorder_factory(context, connection)
            services.audit.emit(
                SessionStart(**context_fields(context), protocol=context.protocol.value)
            )
        self._set_flags()
        self._columns: tuple[str, ...] = ()
        self._formats: tuple[int, ...] = ()
        self._fields: list[FieldDescription] | None = None
        self._copy_in: bool = False  # a COPY FROM STDIN is taking data
        self._copy_in_unkept: str | None = None  # why its data is not kept in the log
        self._copy_in_unkept_bytes = 0
        self._shown_texts: dict[str, str] = {}  # prepared and parsed texts as audited (masked)

    def _set_flags(self) -> None:
        # A policy may be installed by a reload later only where one is named.
        self.judges = self.connection.policy is not None
        self.wants_rows = self.recorder is not None or self.masking is not None
        self.masks_messages = self.recorder is not None or self.masking is not None
        self.handles_copy = self.recorder is not None or self.masking is not None
        self.masks_copy = self.masking is not None

    async def start_policy(self, run_query: QueryRunner) -> None:
        """Read what the policy needs of the database (see PolicyFacts): the
        code statements may run without naming it (which of its functions
        cannot write, volatile namesakes of built-ins, what views and
        row-level security policies call), and whether unqualified names
        resolve to `public` by default. Raises when the catalog cannot be
        read: the policy could not tell a read from a write."""
        services = self.services
        if services is None or self.connection.policy is None:
            return
        facts = await services.policy_facts.get(self.connection.name, run_query)
        self.database_code = facts.code
        if not facts.default_search_path_is_public:
            self.search_path_changed = True

    async def start_masking(self, run_query: QueryRunner) -> None:
        """Set up masking before the session starts; reads the catalog if rules need it.

        Masking is on when the connection names profiles, or when its policy
        may attach profiles to statements. Raises (fail closed) when the
        catalog a column rule needs cannot be read.
        """
        services = self.services
        if services is None or services.masking_engine is None:
            return
        if not self.connection.masking and self.connection.policy is None:
            return
        engine = services.masking_engine
        masker = engine.masker(self.connection.masking)
        policy_masks = self.connection.policy is not None and services.engine.may_mask(
            self.connection.policy
        )
        if not self.connection.masking and not policy_masks:
            return
        catalog = None
        if masker.has_column_rules or policy_masks:
            catalog = await services.catalogs.get(self.connection.name, run_query)
        self.masking = PgSessionMasking(
            engine=engine,
            profiles=self.connection.masking,
            context=self.context,
            audit=services.audit,
            catalog=catalog,
        )
        self._set_flags()

    # Statements

    def judge(self, sql: str, origin: QueryOrigin, statement_name: str | None) -> Verdict:
        # The governor's services are read on every statement, so a reloaded
        # policy applies to sessions already open.
        services = self._governor.services if self._governor is not None else None
        policy_name = self._policy_name
        if services is None or policy_name is None:
            return _NO_POLICY
        verdict = services.engine.decide_query(
            self.context,
            sql,
            origin,
            statement_name,
            policy_name=policy_name,
            search_path_changed=self.search_path_changed,
            prepared=self.prepared,
            database=self.database_code,
        )
        if (
            isinstance(verdict, RequireApproval)
            and origin is _ORIGIN_EXECUTE
            and statement_name is not None
            and self._approved_statements.get(statement_name) == sql
        ):
            return Allow(rule=verdict.rule, reason="approved when prepared", mask=verdict.mask)
        return verdict

    def before_forward(
        self,
        sql: str,
        verdict: Allow,
        origin: QueryOrigin,
        statement_name: str | None,
        approval_id: str | None = None,
    ) -> None:
        """Record and audit an allowed statement right before it goes to the backend.

        Raises (RecordingError, AuditError, MaskingError) when that cannot be
        done: the statement must then not be sent.
        """
        if verdict.mask is not None and verdict.mask.profiles and self.masking is None:
            # A reloaded policy asks for masking this session was opened without.
            raise MaskingError(
                f"rule {verdict.mask.rule!r} requires masking, which this session cannot "
                "apply; reconnect to get a session with masking"
            )
        if self.masking is not None:  # first: it may refuse the statement
            self.masking.statement_allowed(sql, verdict)
        if origin is _ORIGIN_PARSE and len(sql) <= SHOWN_PARSED_CHARS:
            shown = self._shown_prepared(sql)
        else:
            shown = self._shown(sql)
        audited = self._audited(sql, shown)
        if self.recorder is not None:
            # The statement and its verdict reach the OS before the statement is sent.
            self.recorder.statement(
                shown, origin=_ORIGIN_NAMES[origin], statement_name=statement_name, verdict=verdict
            )
        if self.services is not None:
            self.services.audit.emit_lines(
                self._allowed_lines,
                {
                    "rule": verdict.rule,
                    "reason": verdict.reason,
                    "statement": audited,
                    "origin": _ORIGIN_NAMES[origin],
                    "mask_profiles": verdict.mask.profiles if verdict.mask else (),
                    "approval_id": approval_id,
                },
            )
        if (
            not self.search_path_changed
            and (self._policy_name is not None or self.masking is not None)
            and changes_search_path(sql)
        ):
            self.search_path_set()
        if origin is _ORIGIN_PARSE and approval_id is not None and statement_name:
            # Its executions are allowed while the name holds this text.
            self._approved_statements[statement_name] = sql

    def bind_allowed(
        self,
        sql: str,
        verdict: Allow,
        statement_name: str | None,
        portal: str,
        body: bytes,
        *,
        audit: bool,
    ) -> None:
        """An execution of a prepared statement (its Bind `body`) goes to the backend.

        Its parameters (masked when masking is on) reach the log before the
        Bind is sent; with `audit` (an execution its Parse did not already
        stand for) it is audited as a statement of origin `execute`. Raises
        like `before_forward`: the Bind must then not be sent.
        """
        if self.recorder is not None:
            self.recorder.bind(statement_name, portal or None, self._bind_params(body))
        if audit and self.services is not None:
            self.services.audit.emit_lines(
                self._allowed_lines,
                {
                    "rule": verdict.rule,
                    "reason": verdict.reason,
                    "statement": self._shown_prepared(sql),
                    "origin": "execute",
                    "mask_profiles": verdict.mask.profiles if verdict.mask else (),
                },
            )

    def function_call_allowed(self, call: m.FunctionCall) -> None:
        """A fast-path function call goes to the backend: its arguments reach
        the log first, as a Bind's parameters do. Raises like `before_forward`."""
        if self.recorder is not None:
            self.recorder.bind(None, None, self._kept_params(call.formats, call.arguments))

    def function_result(self, body: bytes, result_format: int) -> None:
        """Record a FunctionCallResponse (`body`) as a one-row result of a
        column `result`: its value is encoded as a DataRow's column is."""
        if self.recorder is not None:
            row = frame(b"D", b"\0\1" + body)
            self.recorder.wire_rows(_FUNCTION_RESULT_COLUMNS, [result_format], row, 1)
            self.recorder.complete(FUNCTION_RESULT_TAG)

    def _bind_params(self, body: bytes) -> list[Any]:
        """A Bind's parameters as the log keeps them (see `BindValue`)."""
        formats, values = m.bind_parameters(body)
        # One pre-check over the whole message: values are its raw bytes.
        return self._kept_params(formats, values, body)

    def _kept_params(
        self, formats: tuple[int, ...], values: list[bytes | None], whole: bytes | None = None
    ) -> list[Any]:
        """Parameter values as the log keeps them (see `BindValue`); masking
        pre-checks `whole` (the message they came in) when given."""
        masking = self.masking
        scan = masking is not None and (whole is None or masking.may_need_masking(whole))
        kept: list[Any] = []
        budget = BIND_PARAMS_BYTES
        if len(formats) != len(values):
            raise ValueError("a Bind's format codes and values differ in number")
        # By index, not zip(strict=True), whose keyword costs about a thousand
        # instructions of argument parsing per call (once per execution here).
        for i in range(len(values)):
            fmt = formats[i]
            value = values[i]
            if value is None:
                kept.append(None)
                continue
            if len(value) > budget:
                budget = 0  # what follows an omitted value is omitted too
                kept.append({"omitted": _PARAMS_TOO_LARGE, "bytes": len(value)})
                continue
            budget -= len(value)
            if fmt == 0:
                text = value.decode("utf-8", "replace")
                kept.append(masking.mask_statement(text) if scan and masking else text)
            elif masking is None:
                kept.append({"binary": _B64_TEXT(value)})
            elif (as_text := _binary_text(value)) is None:
                # Binary values are masked only where they are plain text (a
                # text column's binary format is its UTF-8); numbers and other
                # encodings cannot be scanned, so they are not kept.
                kept.append({"omitted": _BINARY_UNMASKABLE, "bytes": len(value)})
            else:
                kept.append({"binary_text": masking.mask_statement(as_text) if scan else as_text})
        return kept

    def _shown_prepared(self, sql: str) -> str:
        """`_shown` of a prepared text, kept: it is audited at every execution."""
        shown = self._shown_texts.get(sql)
        if shown is None:
            if len(self._shown_texts) >= SHOWN_TEXTS_SIZE:
                self._shown_texts.clear()
            shown = self._shown_texts[sql] = self._shown(sql)
        return shown

    def on_blocked(
        self,
        sql: str,
        origin: QueryOrigin,
        statement_name: str | None,
        verdict: Block | RequireApproval,
        sqlstate: str,
        message: str,
    ) -> None:
        """A statement did not reach the backend; record and audit why."""
        shown = self._shown(sql)
        if self.recorder is not None:
            self.recorder.statement(
                shown, origin=_ORIGIN_NAMES[origin], statement_name=statement_name, verdict=verdict
            )
            self.recorder.error(sqlstate=sqlstate, message=message, source="gateway")
        if self.services is not None:
            self.services.audit.emit(
                StatementBlocked(
                    **self._audit_fields,
                    rule=verdict.rule,
                    reason=message,
                    statement=self._audited(sql, shown),
                    origin=_ORIGIN_NAMES[origin],
                )
            )

    def search_path_set(self) -> None:
        """The session's search_path is not the database's default (the client
        set it at startup): unqualified names may resolve to any schema."""
        self.search_path_changed = True
        if self.masking is not None:
            self.masking.search_path_changed()

    def _shown(self, sql: str) -> str:
        """Statement text for recordings and audit: without secrets, and
        masked when masking is on."""
        sql = redact_secrets(sql)
        return self.masking.mask_statement(sql) if self.masking is not None else sql

    def _audited(self, sql: str, shown: str) -> str:
        """Statement text for audit (`shown` is `_shown(sql)`): with what the
        prepared statements it EXECUTEs run. Recordings keep the text as sent,
        with the PREPARE earlier in the log."""
        expanded = self.with_prepared_texts(sql)
        return shown if expanded is sql else self._shown(expanded)

    def statement_closed(self, name: str) -> None:
        self._approved_statements.pop(name, None)

    # Approvals

    async def request_approval(
        self, sql: str, verdict: RequireApproval, *, notify: Callable[[str, str], None]
    ) -> ApprovalOutcome:
        services = self.services
        if services is None:
            return ApprovalOutcome(approved=False, message="approvals are not configured")
        # Approvers see the statement as sent, but for its secrets; a grant
        # is for that text.
        sql = redact_secrets(self.with_prepared_texts(sql))
        identity = self.context.identity
        grant = await asyncio.to_thread(
            services.approvals.usable_grant,
            requester=identity.user,
            connection=self.context.connection,
            statement=sql,
        )
        if grant is not None:
            self._record_approval(
                "approved",
                grant.id,
                grant.decided_by,
                "earlier approval" + (" (window)" if grant.window_until else ""),
            )
            return ApprovalOutcome(approved=True, approval_id=grant.id)
        request, created = await asyncio.to_thread(
            services.approvals.request,
            requester=identity,
            connection=self.context.connection,
            statement=sql,
            rule=verdict.rule,
            reason=verdict.reason,
            approver_groups=verdict.approver_groups,
            timeout=verdict.timeout,
            session_id=self.context.session_id,
        )
        if created:
            services.audit.emit(
                ApprovalRequested(
                    **self._audit_fields,
                    rule=verdict.rule,
                    reason=verdict.reason,
                    approval_id=request.id,
                    statement=self._shown(sql),
                    approver_groups=verdict.approver_groups,
                    expires_at=request.expires_at,
                )
            )
            if services.notifier is not None:
                self._spawn(services.notifier.requested(request))
        self._record_approval("requested", request.id, identity.user, verdict.reason)
        minutes = max(1, round(verdict.timeout.total_seconds() / 60))
        notify(
            f"statement held for approval (rule {verdict.rule}): request {request.id}, "
            f"expires in {minutes} min",
            f"an approver in {', '.join(verdict.approver_groups)} runs: "
            f"{services.approval_command} {request.id}",
        )
        return await self._await_decision(request)

    def with_prepared_texts(self, sql: str) -> str:
        """`sql` followed by the text of each prepared statement it EXECUTEs,
        which is what will run: what approvers see and audit keeps. A grant
        is matched on this text, so it does not carry over to a name
        prepared again. `sql` itself when it EXECUTEs nothing."""
        if not mentions_prepared(sql):
            return sql
        runs: dict[str, str] = {}
        pending = [(sql, 0)]
        while pending:
            text, depth = pending.pop(0)
            prepared_here: set[str] = set()
            for statement in classify(text).statements:
                effect = statement.effect
                if isinstance(effect, Prepare):
                    prepared_here.add(effect.name)  # its text is in view already
                elif isinstance(effect, Execute) and effect.name not in prepared_here:
                    inner = self.prepared.get(effect.name)
                    if inner is not None and effect.name not in runs:
                        runs[effect.name] = inner
                        if depth < MAX_SHOWN_EXECUTE_DEPTH:
                            pending.append((inner, depth + 1))
        lines = [sql, *(f"-- {name} runs: {redact_secrets(text)}" for name, text in runs.items())]
        return "\n".join(lines)

    async def _await_decision(self, request: Approval) -> ApprovalOutcome:
        services = self.services
        assert services is not None
        assert self._withdrawn is not None
        while True:
            if self._withdrawn.is_set():
                await asyncio.to_thread(
                    services.approvals.finish, request.id, ApprovalStatus.WITHDRAWN
                )
                services.audit.emit(
                    ApprovalWithdrawn(
                        **self._audit_fields, approval_id=request.id, rule=request.rule
                    )
                )
                self._record_approval("withdrawn", request.id, self.context.identity.user, "")
                return ApprovalOutcome(
                    approved=False,
                    sqlstate="57014",
                    approval_id=request.id,
                    message=f"canceling statement due to user request; approval request "
                    f"{request.id} withdrawn",
                )
            current = await asyncio.to_thread(services.approvals.get, request.id)
            if current is None:
                return ApprovalOutcome(approved=False, message="the approval request vanished")
            if current.status is ApprovalStatus.APPROVED:
                await asyncio.to_thread(
                    services.approvals.finish, request.id, ApprovalStatus.CONSUMED
                )
                self._record_approval(
                    "approved", request.id, current.decided_by, current.decision_reason or ""
                )
                return ApprovalOutcome(approved=True, approval_id=request.id)
            if current.status is ApprovalStatus.DENIED:
                self._record_approval(
                    "denied", request.id, current.decided_by, current.decision_reason or ""
                )
                return ApprovalOutcome(
                    approved=False,
                    sqlstate="42501",
                    approval_id=request.id,
                    message=f"denied by {current.decided_by}: {current.decision_reason}",
                    hint=f"approval request {request.id}",
                )
            if (
                current.status is not ApprovalStatus.PENDING
                or current.expires_at <= dt.datetime.now(dt.UTC)
            ):
                await asyncio.to_thread(
                    services.approvals.finish, request.id, ApprovalStatus.EXPIRED
                )
                services.audit.emit(
                    ApprovalExpired(**self._audit_fields, approval_id=request.id, rule=request.rule)
                )
                self._record_approval("expired", request.id, None, "")
                return ApprovalOutcome(
                    approved=False,
                    sqlstate="57014",
                    approval_id=request.id,
                    message=f"approval request {request.id} expired without a decision",
                    hint="ask an approver, then run the statement again",
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._withdrawn.wait(), APPROVAL_POLL_SECONDS)

    def withdraw_approval(self) -> None:
        if self._withdrawn is not None:
            self._withdrawn.set()

    def approval_settled(self) -> None:
        """The held statement was forwarded or refused; reset for the next one."""
        if self._withdrawn is not None:
            self._withdrawn.clear()

    def _record_approval(
        self, state: str, approval_id: str, actor: str | None, reason: str
    ) -> None:
        if self.recorder is not None:
            self.recorder.approval(state=state, approval_id=approval_id, actor=actor, reason=reason)

    def _spawn(self, coro: Any) -> None:
        assert self.services is not None
        task = asyncio.get_running_loop().create_task(coro)
        self.services.tasks.add(task)
        task.add_done_callback(self.services.tasks.discard)

    # Results

    def process_rows(
        self,
        shape: ResultShape | None,
        region: bytes | memoryview,
        count: int,
        starts: list[int] | None = None,
    ) -> bytes | None:
        """Mask and record a run of `count` DataRow messages (`region`, whole frames).

        `starts` (optional) holds the offset of each frame in `region`.
        Returns the bytes to send instead, or None for "forward them unchanged".
        """
        replaced = None
        if self.masking is not None:
            replaced = self.masking.mask_rows(shape, region, count, starts)
        if self.recorder is not None:
            if shape is not None:
                if shape.fields is not self._fields:  # descriptions are shared when equal
                    self._fields = shape.fields
                    self._columns = tuple(f.name for f in shape.fields)
                    self._formats = tuple(f.format for f in shape.fields)
                names, formats = self._columns, self._formats
            else:
                names, formats = ("?column?",), ()
            self.recorder.wire_rows(
                names, formats, replaced if replaced is not None else region, count
            )
        return replaced

    def result_done(self, body: bytes) -> None:
        if self.masking is not None:
            self.masking.result_done()
        if self.recorder is not None:
            tag = body.rstrip(b"\0").decode("utf-8", "replace")
            self.recorder.complete(tag)

    def mask_parameter_status(self, body: bytes) -> bytes | None:
        """A ParameterStatus to send instead of `body`, or None (see PgSessionMasking)."""
        return self.masking.mask_parameter_status(body) if self.masking is not None else None

    def process_message(self, kind: int, body: bytes) -> bytes:
        """Errors, notices and notifications: mask their text, record them."""
        if self.masking is not None:
            body = self.masking.mask_message(kind, body)
        if self.recorder is not None:
            if kind in (m.ERROR_RESPONSE, m.NOTICE_RESPONSE):
                fields = m.decode_fields(body)
                if kind == m.ERROR_RESPONSE:
                    self.recorder.error(sqlstate=fields.get("C", ""), message=fields.get("M", ""))
                else:
                    self.recorder.notice(
                        fields.get("M", ""), severity=fields.get("V", fields.get("S", "NOTICE"))
                    )
            elif kind == m.NOTIFICATION_RESPONSE:
                _, channel, payload = m.decode_notification(body)
                self.recorder.notice(f"NOTIFY {channel}: {payload}", severity="NOTIFY")
        return frame(bytes((kind,)), body)

    # COPY

    def process_copy_data(self, body: bytes) -> bytes:
        """COPY TO data with masking on: the message to send instead (empty
        while masking waits for the rest of a line), recorded as delivered."""
        if self.masking is None:
            raise MaskingError("COPY data was routed to masking on a session without it")
        body = self.masking.mask_copy(body)
        if self.recorder is not None:
            self.recorder.copy_data("out", body)
        return frame(b"d", body) if body else b""

    def record_copy_out(self, data: bytes) -> None:
        """COPY TO data forwarded unchanged (no masking): into the log."""
        if self.recorder is not None:
            self.recorder.copy_data("out", data)

    def copy_out_started(self, body: bytes, sql: str) -> None:
        if self.masking is not None:
            self.masking.copy_started(body, sql)

    def copy_out_done(self) -> bytes:
        """Anything masked COPY data still holds, sent before the CopyDone."""
        if self.masking is None:
            return b""
        tail = self.masking.copy_done()
        if tail and self.recorder is not None:
            self.recorder.copy_data("out", tail[5:])
        return tail

    def copy_in_started(self, body: bytes, sql: str) -> None:
        """A CopyInResponse: the client's COPY data follows."""
        self._copy_in = True
        self._copy_in_unkept = None
        self._copy_in_unkept_bytes = 0
        if self.recorder is not None and self.masking is not None:
            self._copy_in_unkept = self.masking.copy_in_started(body, sql)

    def record_copy_in(self, body: bytes) -> None:
        """COPY FROM data on its way to the server: into the log, masked when
        masking is on. Raises (RecordingError, MaskingError) when it cannot be
        kept as it must: the data must then not be sent."""
        recorder = self.recorder
        if recorder is None:
            return
        if self.masking is None or recorder.capped:  # past the cap it is only counted
            recorder.copy_data("in", body)
        elif not self._copy_in:
            # Outside a COPY the server discards it; without a format it cannot be masked.
            recorder.copy_omitted("in", len(body), "COPY data outside a COPY, not masked")
        elif self._copy_in_unkept is not None:
            self._copy_in_unkept_bytes += len(body)
        else:
            recorder.copy_data("in", self.masking.mask_copy_in(body))

    def copy_in_done(self) -> None:
        """The client's CopyDone or CopyFail: its data is in the log (handed to
        the OS) before that message lets the server finish the COPY."""
        recorder = self.recorder
        active, self._copy_in = self._copy_in, False
        if recorder is None:
            return
        if self.masking is not None and active:
            recorder.copy_data("in", self.masking.copy_in_done())
        if self._copy_in_unkept is not None:
            recorder.copy_omitted("in", self._copy_in_unkept_bytes, self._copy_in_unkept)
            self._copy_in_unkept = None
            self._copy_in_unkept_bytes = 0
        recorder.flush()

    def close(
        self,
        *,
        reason: str,
        detail: str | None,
        bytes_in: int = 0,
        bytes_out: int = 0,
        statements: int = 0,
    ) -> None:
        if self.recorder is not None:
            try:
                self.recorder.end(reason=reason, bytes_in=bytes_in, bytes_out=bytes_out)
            except Exception:
                log.exception("sealing the recording of %s failed", self.context.session_id)
        if self.services is not None:
            self.services.audit.emit(
                SessionEnd(
                    **self._audit_fields,
                    protocol=self.context.protocol.value,
                    reason=reason if not detail else f"{reason}: {detail}",
                    duration_ms=int((time.monotonic() - self._started) * 1000),
                    statements=statements,
                    bytes_in=bytes_in,
                    bytes_out=bytes_out,
                )
            )


class Governor:
    """Creates the governance of each session from the running services."""

    def __init__(self, services: GovernanceServices | None = None):
        self.services = services

    def session(self, context: SessionContext, connection: ConnectionSpec) -> SessionGovernance:
        return SessionGovernance(context, connection, self)

    def swap(self, services: GovernanceServices) -> None:
        """Install new services (a reloaded policy); open sessions judge with them too."""
        self.services = services
