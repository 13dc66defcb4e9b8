"""A gateway with the ai-agent preset whose approval requests a test decides,
and a libpq client run in its own process (`tests/libpq_steps.py`)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice.approvals.service import ApprovalService, ApprovalStatus
from sluice.devservers.postgres import ThrowawayPostgres
from sluice.events import Identity
from tests.conftest import base_config
from tests.helpers import GatewayThread

AGENT = "agent"
DBA = Identity(user="alice", groups=("dba",))
GRANTED = "granted ahead of the test"


@pytest.fixture(scope="module")
def agent_gateway(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    """The ai-agent preset; approvers are in group `dba`."""
    config = base_config(
        pg,
        tmp_path_factory.mktemp("agent-gateway"),
        policy="agent",
        policies=[{"name": "agent", "extends": "ai-agent", "approvers": ["dba"]}],
    )
    thread = GatewayThread(config).start()
    yield thread
    thread.stop()


@pytest.fixture
def denied(agent_gateway: GatewayThread) -> Iterator[list[str]]:
    """Denies every approval request while the test runs; yields their statements."""
    assert agent_gateway.gateway is not None
    service = ApprovalService(agent_gateway.gateway.store)
    statements: list[str] = []
    stop = threading.Event()

    def deny() -> None:
        while not stop.wait(0.02):
            for request in service.list_requests(status=ApprovalStatus.PENDING):
                if request.reason == GRANTED:
                    continue  # `grant` is approving it
                statements.append(request.statement)
                service.decide(request.id, approver=DBA, approve=False, reason="no")

    thread = threading.Thread(target=deny, daemon=True)
    thread.start()
    yield statements
    stop.set()
    thread.join(timeout=5)


def grant(gateway: GatewayThread, statement: str, window: dt.timedelta | None = None) -> None:
    """An approval of `statement` (one run, or all within `window`) for the
    agent, given before it sends the statement."""
    assert gateway.gateway is not None
    service = ApprovalService(gateway.gateway.store)
    request, _ = service.request(
        requester=Identity(user=AGENT, groups=("agents",)),
        connection="app",
        statement=statement,
        rule="writes-need-approval",
        reason=GRANTED,
        approver_groups=("dba",),
        timeout=dt.timedelta(minutes=5),
        session_id=None,
    )
    service.decide(request.id, approver=DBA, approve=True, reason="ok", window=window)


def run_steps(gateway: GatewayThread, *steps: str) -> list[dict[str, Any]]:
    """`tests.libpq_steps` as the agent: one result per line."""
    dsn = gateway.dsn(gateway.token(AGENT, groups=("agents",)), user=AGENT)
    done = subprocess.run(
        [sys.executable, "-m", "tests.libpq_steps", dsn, *steps],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def was_denied(result: dict[str, Any]) -> bool:
    return result["sqlstate"] == "42501" and "denied by alice" in result["message"]
