from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sluice.approvals.service import Approval, ApprovalStatus
from sluice.events import Identity
from sluice.notify import (
    ApprovalNotice,
    ApprovalNotifier,
    Decision,
    DecisionNotice,
    DeliveryResult,
    NotifyError,
    NotifySpec,
    WebhookNotifier,
    build_message,
)

ALICE = Identity(user="alice", groups=("dev",))
NOTICE = ApprovalNotice(
    approval_id="ap-42",
    identity=ALICE,
    connection="prod-db",
    session_id="s-1",
    statement="DELETE FROM orders WHERE id < 100 -- <@channel> ```",
    rule="prod-writes",
    reason="writes on prod need a DBA",
    approver_groups=("dba",),
    expires_at=dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC),
)


class Receiver:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slack"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    r = Receiver(list(getattr(request, "param", [])))
    yield r
    r.close()


async def _no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


def _notifier(url: str, **kwargs: Any) -> WebhookNotifier:
    spec = NotifySpec.model_validate({"url": url, **kwargs})
    return WebhookNotifier(spec, sleep=_no_sleep)


def test_message_is_slack_compatible() -> None:
    msg = build_message(NOTICE, approval_url="https://sluice.example/a/{approval_id}")
    assert set(msg) == {"text", "blocks"}
    assert "alice" in msg["text"]
    assert "ap-42" in msg["text"]
    assert [b["type"] for b in msg["blocks"]] == ["header", "section", "section", "context"]
    fields = " ".join(f["text"] for f in msg["blocks"][1]["fields"])
    assert "*User*\nalice (dev)" in fields
    assert "2030-01-01 12:00:00 UTC" in fields
    code = msg["blocks"][2]["text"]["text"]
    assert code.startswith("```")
    assert code.endswith("```")
    assert "&lt;@channel&gt;" in code  # no mentions or links from statement text
    assert code.count("```") == 2  # the statement cannot close the code block
    context = msg["blocks"][3]["elements"][0]["text"]
    assert "sluice approvals approve ap-42" in context
    assert "https://sluice.example/a/ap-42" in context


def test_long_statement_is_cut() -> None:
    notice = ApprovalNotice(**{**_fields(NOTICE), "statement": "x" * 10_000})
    text = build_message(notice)["blocks"][2]["text"]["text"]
    assert len(text) < 3000
    assert "(truncated)" in text


def _fields(notice: ApprovalNotice) -> dict[str, Any]:
    return {name: getattr(notice, name) for name in notice.__slots__}


def test_decision_message() -> None:
    msg = build_message(
        DecisionNotice(
            approval_id="ap-42",
            decision=Decision.APPROVED,
            identity=ALICE,
            connection="prod-db",
            statement="DELETE FROM orders",
            decided_by="bob",
        )
    )
    assert msg["text"] == "Approval ap-42 approved by bob"


@pytest.mark.parametrize("receiver", [[503, 500, 429]], indirect=True)
def test_retries_then_delivers(receiver: Receiver) -> None:
    result = asyncio.run(_notifier(receiver.url).notify(NOTICE))
    assert result.ok
    assert result.attempts == 4
    assert result.status == 200
    assert len(receiver.bodies) == 4
    assert receiver.bodies[-1] == build_message(NOTICE)
    result.raise_for_failure()


@pytest.mark.parametrize("receiver", [[500] * 10], indirect=True)
def test_failure_is_recorded(receiver: Receiver, tmp_path: Path) -> None:
    notifier = _notifier(receiver.url, max_attempts=3, failure_log=str(tmp_path / "f.jsonl"))
    result = asyncio.run(notifier.notify(NOTICE))
    assert not result.ok
    assert result.attempts == 3
    assert result.status == 500
    assert result.approval_id == "ap-42"
    assert result.kind == "request"
    record = json.loads((tmp_path / "f.jsonl").read_text())
    assert record["approval_id"] == "ap-42"
    assert record["attempts"] == 3
    assert record["payload"] == build_message(NOTICE)
    with pytest.raises(NotifyError, match="not delivered after 3 attempts"):
        result.raise_for_failure()


@pytest.mark.parametrize("receiver", [[404]], indirect=True)
def test_client_errors_are_not_retried(receiver: Receiver) -> None:
    result = asyncio.run(_notifier(receiver.url).notify(NOTICE))
    assert not result.ok
    assert result.attempts == 1
    assert len(receiver.bodies) == 1


def test_receiver_down() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = asyncio.run(_notifier(f"http://127.0.0.1:{port}/x", max_attempts=2).notify(NOTICE))
    assert not result.ok
    assert result.status is None
    assert "Connection" in result.error


def test_notify_does_not_block_the_event_loop(receiver: Receiver) -> None:
    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        notifier = WebhookNotifier(NotifySpec.model_validate({"url": receiver.url}))
        results = await asyncio.gather(*(notifier.notify(NOTICE) for _ in range(5)))
        task.cancel()
        assert all(r.ok for r in results)
        return ticks

    assert asyncio.run(main()) > 0


def _approval(status: str = "pending") -> Approval:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    return Approval(
        id="ap-7",
        session_id="s-1",
        requester="alice",
        requester_groups=("dev",),
        connection="prod-db",
        statement="DELETE FROM t",
        digest="d",
        rule="prod-writes",
        reason="writes need approval",
        approver_groups=("dba",),
        status=ApprovalStatus(status),
        created_at=now,
        expires_at=now + dt.timedelta(minutes=10),
        decided_at=None,
        decided_by="bob" if status != "pending" else None,
        decision_reason="looks fine" if status != "pending" else None,
        window_until=None,
    )


def test_approval_notifier_adapts_stored_approvals(receiver: Receiver) -> None:
    notifier = ApprovalNotifier.from_spec(NotifySpec.model_validate({"url": receiver.url}))

    async def main() -> None:
        assert (await notifier.requested(_approval())).ok
        assert (await notifier.decided(_approval("denied"))).ok
        assert (await notifier.decided(_approval("consumed"))).kind == "approved"

    asyncio.run(main())
    assert "alice on prod-db (rule prod-writes), approval ap-7" in receiver.bodies[0]["text"]
    assert receiver.bodies[1]["text"] == "Approval ap-7 denied by bob"


@pytest.mark.parametrize("receiver", [[500] * 10], indirect=True)
def test_approval_notifier_reports_failures(receiver: Receiver) -> None:
    failures: list[DeliveryResult] = []
    spec = NotifySpec.model_validate({"url": receiver.url, "max_attempts": 2})
    notifier = ApprovalNotifier(WebhookNotifier(spec, sleep=_no_sleep), on_failure=failures.append)
    result = asyncio.run(notifier.requested(_approval()))
    assert not result.ok
    assert failures == [result]
