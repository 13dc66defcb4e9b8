"""Per-session governance: what the data path asks before and after forwarding.

The proxy asks `SessionGovernance.judge()` for every statement before it
reaches the backend and acts on the verdict; everything policy-, masking-,
recording- and audit-related lives behind this one seam. Any exception from
a method means: deny (the proxy blocks the statement or drops the message).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sluice.config import ConnectionSpec
from sluice.events import QueryOrigin, SessionContext
from sluice.policy.verdict import Allow, RequireApproval, Verdict
from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.tracker import ResultShape


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalOutcome:
    approved: bool
    sqlstate: str = "42501"
    message: str = ""
    hint: str | None = None


class SessionGovernance:
    """Governance of one session."""

    # Whether DataRows must be decoded (masking or recording of rows).
    wants_rows = False
    # Whether notices, errors, notifications and COPY data pass the masker.
    masks_messages = False

    def __init__(self, context: SessionContext, connection: ConnectionSpec):
        self.context = context
        self.connection = connection

    def judge(self, sql: str, origin: QueryOrigin, statement_name: str | None) -> Verdict:
        return Allow(rule="pass-through")

    def before_forward(self, sql: str, verdict: Allow) -> None:
        """Called right before an allowed statement goes to the backend."""

    def statement_closed(self, name: str) -> None:
        """The client closed a prepared statement."""

    async def request_approval(
        self, sql: str, verdict: RequireApproval, *, notify: Callable[[str, str], None]
    ) -> ApprovalOutcome:
        return ApprovalOutcome(approved=False, message="approvals are not configured")

    def withdraw_approval(self) -> None:
        """The client cancelled while its statement was held."""

    def process_rows(self, shape: ResultShape | None, rows: list[bytes]) -> bytes:
        return b"".join(m.frame(b"D", row) for row in rows)

    def result_done(self, tag: bytes) -> None:
        """A result ended (CommandComplete, EmptyQueryResponse, PortalSuspended)."""

    def process_message(self, kind: int, body: bytes) -> bytes:
        return m.frame(bytes((kind,)), body)

    def process_copy_data(self, body: bytes) -> bytes:
        return m.frame(b"d", body)

    def backend_error(self, fields: dict[str, str]) -> None:
        """The backend reported an error (already masked when masking is on)."""

    def close(self, *, reason: str, detail: str | None) -> None:
        """The session ended."""


class Governor:
    """Creates the governance of each session from the running configuration."""

    def session(self, context: SessionContext, connection: ConnectionSpec) -> SessionGovernance:
        return SessionGovernance(context, connection)
