"""The governance core end to end: real clients, a real PostgreSQL, the ai-agent preset."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest
import yaml

from sluice.approvals.service import Approval, ApprovalService, ApprovalStatus
from sluice.devservers.postgres import ThrowawayPostgres
from sluice.events import Identity
from sluice.proxy.governance_setup import recording_store
from sluice.recording.format import BULK_RECORD_BYTES
from tests.conftest import APP_PASSWORD, base_config
from tests.helpers import GatewayThread, latest_session

POLICIES = [
    {
        "name": "agent",
        "extends": "ai-agent",
        "approvers": ["dba"],
        "rules": [
            {
                "name": "short-approvals",
                "when": {"tables": ["public.fast"]},
                "action": "require_approval",
                "timeout": "3s",
            }
        ],
    }
]


@pytest.fixture(scope="module")
def governed(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    data_dir = tmp_path_factory.mktemp("governed")
    config = base_config(pg, data_dir, policy="agent", policies=POLICIES)
    (data_dir / "sluice.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    thread = GatewayThread(config).start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module", autouse=True)
def tables(pg: ThrowawayPostgres) -> None:
    dsn = pg.dsn(user="app", password=APP_PASSWORD, dbname="app")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS accounts, fast")
        conn.execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, owner text, drop_count int, balance int)"
        )
        conn.execute(
            "INSERT INTO accounts SELECT g, 'owner ' || g, g, 100 FROM generate_series(1, 10) g"
        )
        conn.execute("CREATE TABLE fast (id int)")


@pytest.fixture(scope="module")
def agent(governed: GatewayThread) -> str:
    return governed.token("agent", groups=("agents",))


@pytest.fixture(scope="module")
def dba(governed: GatewayThread) -> str:
    return governed.token("alice", groups=("dba",))


def run_sql(governed: GatewayThread, token: str, sql: str, user: str = "agent") -> object:
    with psycopg.connect(governed.dsn(token, user=user), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else cur.statusmessage


def blocked(governed: GatewayThread, token: str, sql: str) -> psycopg.Error:
    with psycopg.connect(governed.dsn(token, user="agent"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            conn.execute(sql)
        # The session stays usable after a block.
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert info.value.diag.message_primary is not None
    assert info.value.diag.message_primary.startswith("blocked by Sluice")
    return info.value


SNEAKY = {
    "drop": "DROP TABLE accounts",
    "truncate": "TRUNCATE accounts",
    "multi-statement": "SELECT 1; DROP TABLE accounts",
    "comment-hidden": 'SELECT 1 /* harmless */; /* see */ DrOp /**/ TaBlE "accounts"',
    "delete-without-where": "DELETE FROM accounts",
    "update-where-true": "UPDATE accounts SET balance = 0 WHERE true",
    "explain-analyze": "EXPLAIN ANALYZE DELETE FROM accounts",
    "modifying-cte": "WITH gone AS (DELETE FROM accounts RETURNING *) SELECT * FROM gone",
    "copy-program": "COPY accounts TO PROGRAM 'cat > /tmp/x'",
    "copy-server-file": "COPY accounts FROM '/etc/passwd'",
    "read-server-file": "SELECT pg_read_file('/etc/passwd')",
    "terminate-backends": "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
    "alter-system": "ALTER SYSTEM SET work_mem = '1GB'",
    "set-role": "SET ROLE postgres",
    "session-authorization": "SET SESSION AUTHORIZATION postgres",
    "grant": "GRANT ALL ON accounts TO PUBLIC",
    "create-role": "CREATE ROLE evil SUPERUSER",
    "unparsable": "SELEC * FROM accounts",
    "prepare-then-execute": "PREPARE p1 AS DELETE FROM accounts; EXECUTE p1",
}


@pytest.mark.parametrize("sql", SNEAKY.values(), ids=SNEAKY.keys())
def test_dangerous_statements_are_blocked(governed: GatewayThread, agent: str, sql: str) -> None:
    error = blocked(governed, agent, sql)
    assert error.diag.message_hint is not None
    assert error.diag.message_hint.startswith("policy rule: ")
    assert run_sql(governed, agent, "SELECT count(*) FROM accounts") == [(10,)]


BENIGN = {
    "string-literal": "SELECT 'DROP TABLE accounts; DELETE FROM accounts' AS text",
    "comment": "SELECT id FROM accounts -- DROP TABLE accounts",
    "column-name": "SELECT drop_count FROM accounts WHERE id = 1",
    "quoted-identifier": 'SELECT "owner" AS "truncate" FROM accounts LIMIT 1',
    "plain-explain": "EXPLAIN DELETE FROM accounts",
    "transaction": "BEGIN; SELECT 1; COMMIT",
}


@pytest.mark.parametrize("sql", BENIGN.values(), ids=BENIGN.keys())
def test_benign_statements_pass(governed: GatewayThread, agent: str, sql: str) -> None:
    run_sql(governed, agent, sql)


def test_block_message_names_the_rule(governed: GatewayThread, agent: str) -> None:
    error = blocked(governed, agent, "DELETE FROM accounts")
    assert error.diag.message_hint == "policy rule: no-unbounded-writes"
    assert "DELETE on public.accounts without a restricting WHERE" in str(
        error.diag.message_primary
    )


def test_extended_protocol_is_judged_at_parse(governed: GatewayThread, agent: str) -> None:
    with psycopg.connect(governed.dsn(agent, user="agent"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM accounts WHERE %s = %s", (1, 1), prepare=True)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE accounts", prepare=True)
        assert conn.execute("SELECT %s::int", (5,), prepare=True).fetchone() == (5,)


def test_asyncpg_prepared_statement_blocked_and_session_usable(
    governed: GatewayThread, agent: str
) -> None:
    async def scenario() -> None:
        conn = await asyncpg.connect(governed.url(agent, user="agent"), ssl="require")
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.prepare("TRUNCATE accounts")
            assert await conn.fetchval("SELECT count(*) FROM accounts") == 10
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_transaction_state_matches_the_backend(governed: GatewayThread, agent: str) -> None:
    with psycopg.connect(governed.dsn(agent, user="agent")) as conn:
        conn.execute("SELECT 1")
        status = conn.info.transaction_status
        assert status == psycopg.pq.TransactionStatus.INTRANS
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE accounts")
        status = conn.info.transaction_status
        assert status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_pipeline_with_a_blocked_statement(governed: GatewayThread, agent: str) -> None:
    with psycopg.connect(governed.dsn(agent, user="agent"), autocommit=True) as conn:
        first = second = None

        def pipelined() -> None:
            nonlocal first, second
            with conn.pipeline() as pipe:
                first = conn.execute("SELECT 1")
                pipe.sync()
                second = conn.execute("SELECT 'x' FROM accounts WHERE false; DROP TABLE accounts")
                pipe.sync()

        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            pipelined()
        assert first is not None
        assert first.fetchone() == (1,)
        assert second is not None
        assert conn.execute("SELECT 3").fetchone() == (3,)


def test_psql_sees_block_and_continues(governed: GatewayThread, agent: str) -> None:
    result = subprocess.run(
        [
            "psql",
            "-X",
            governed.dsn(agent, user="agent"),
            "-c",
            "DROP TABLE accounts",
            "-c",
            "SELECT 'after' AS x",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert 'ERROR:  blocked by Sluice: rule "no-destructive"' in result.stderr
    assert "HINT:  policy rule: no-destructive" in result.stderr
    assert "after" in result.stdout


# Just-in-time approval


class Held:
    """Runs one statement in a thread; collects the approval notice."""

    def __init__(self, governed: GatewayThread, token: str, sql: str):
        self.notices: list[str] = []
        self.result: object = None
        self.error: BaseException | None = None
        self.conn = psycopg.connect(governed.dsn(token, user="agent"), autocommit=True)
        self.conn.add_notice_handler(lambda d: self.notices.append(d.message_primary or ""))
        self.thread = threading.Thread(target=self._run, args=(sql,), daemon=True)
        self.thread.start()

    def _run(self, sql: str) -> None:
        try:
            cur = self.conn.execute(sql)
            self.result = cur.fetchall() if cur.description else cur.statusmessage
        except BaseException as exc:
            self.error = exc

    def request_id(self, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for notice in self.notices:
                if notice.startswith("statement held for approval"):
                    return notice.split("request ", 1)[1].split(",", 1)[0]
            time.sleep(0.02)
        raise AssertionError(f"no approval notice; got {self.notices}")

    def finish(self, timeout: float = 10) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive()
        self.conn.close()


def sluice_cli(
    governed: GatewayThread, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    config = Path(governed.config.data_dir) / "sluice.yaml"
    env = {**os.environ, "SLUICE_CONFIG": str(config)}
    if token:
        env["SLUICE_TOKEN"] = token
    env["SLUICE_GATEWAY"] = f"127.0.0.1:{governed.port}"
    return subprocess.run(
        [sys.executable, "-m", "sluice", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_write_is_held_then_approved_by_another_identity(
    governed: GatewayThread, agent: str, dba: str
) -> None:
    held = Held(governed, agent, "UPDATE accounts SET balance = balance + 1 WHERE id = 1")
    request_id = held.request_id()
    listed = sluice_cli(governed, "approvals", "list", "--json")
    assert request_id in [item["id"] for item in json.loads(listed.stdout)]
    own = sluice_cli(governed, "approvals", "approve", request_id, token=agent)
    assert own.returncode == 1
    assert "cannot decide your own request" in own.stderr
    outsider = sluice_cli(
        governed, "approvals", "approve", request_id, token=governed.token("bob", groups=("dev",))
    )
    assert "not in an approver group" in outsider.stderr
    assert held.thread.is_alive()
    approved = sluice_cli(governed, "approvals", "approve", request_id, "--reason", "ok", token=dba)
    assert approved.returncode == 0, approved.stderr
    held.finish()
    assert held.error is None
    assert held.result == "UPDATE 1"
    assert run_sql(governed, agent, "SELECT balance FROM accounts WHERE id = 1") == [(101,)]


def test_denied_request_returns_an_error(governed: GatewayThread, agent: str, dba: str) -> None:
    held = Held(governed, agent, "UPDATE accounts SET balance = 0 WHERE id = 2")
    request_id = held.request_id()
    denied = sluice_cli(
        governed, "approvals", "deny", request_id, "--reason", "not today", token=dba
    )
    assert denied.returncode == 0, denied.stderr
    held.finish()
    assert isinstance(held.error, psycopg.errors.InsufficientPrivilege)
    assert "denied by alice: not today" in str(held.error)
    assert run_sql(governed, agent, "SELECT balance FROM accounts WHERE id = 2") == [(100,)]


def test_request_times_out(governed: GatewayThread, agent: str) -> None:
    held = Held(governed, agent, "INSERT INTO fast VALUES (1)")
    request_id = held.request_id()
    held.finish(timeout=15)
    assert isinstance(held.error, psycopg.errors.QueryCanceled)
    assert "expired without a decision" in str(held.error)
    service = ApprovalService(governed.gateway.store)  # type: ignore[union-attr]
    assert service.get(request_id).status is ApprovalStatus.EXPIRED  # type: ignore[union-attr]


def test_ctrl_c_withdraws_the_request(governed: GatewayThread, agent: str) -> None:
    proc = subprocess.Popen(
        [
            "psql",
            "-X",
            governed.dsn(agent, user="agent"),
            "-c",
            "UPDATE accounts SET balance = 7 WHERE id = 3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    service = ApprovalService(governed.gateway.store)  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    pending: list[Approval] = []
    while time.monotonic() < deadline and not pending:
        pending = [
            a
            for a in service.list_requests(status=ApprovalStatus.PENDING)
            if "balance = 7" in a.statement
        ]
        time.sleep(0.05)
    assert pending
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert "withdrawn" in err
    withdrawn = service.get(pending[0].id)
    assert withdrawn is not None
    assert withdrawn.status is ApprovalStatus.WITHDRAWN


def test_window_lets_the_same_statement_through(
    governed: GatewayThread, agent: str, dba: str
) -> None:
    sql = "UPDATE accounts SET balance = balance WHERE id = 4"
    held = Held(governed, agent, sql)
    request_id = held.request_id()
    sluice_cli(governed, "approvals", "approve", request_id, "--window", "5m", token=dba)
    held.finish()
    assert held.result == "UPDATE 1"
    started = time.monotonic()
    assert run_sql(governed, agent, sql) == "UPDATE 1"
    assert time.monotonic() - started < 5


def test_exec_without_wait_exits_with_the_request_id(
    governed: GatewayThread, agent: str, dba: str
) -> None:
    sql = "UPDATE accounts SET owner = 'renamed' WHERE id = 5"
    first = sluice_cli(governed, "exec", "app", "-c", sql, token=agent)
    assert first.returncode == 3, first.stderr
    request_id = first.stdout.strip()
    service = ApprovalService(governed.gateway.store)  # type: ignore[union-attr]
    assert service.get(request_id).status is ApprovalStatus.PENDING  # type: ignore[union-attr]
    sluice_cli(governed, "approvals", "approve", request_id, token=dba)
    second = sluice_cli(governed, "exec", "app", "-c", sql, "--json", token=agent)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["status"] == "UPDATE 1"
    blocked_run = sluice_cli(governed, "exec", "app", "-c", "DROP TABLE accounts", token=agent)
    assert blocked_run.returncode == 2
    ok = sluice_cli(
        governed,
        "exec",
        "app",
        "-c",
        "SELECT owner FROM accounts WHERE id = 5",
        "--json",
        token=agent,
    )
    assert json.loads(ok.stdout)["rows"] == [["renamed"]]


def test_approver_identity_must_be_in_group(governed: GatewayThread) -> None:
    service = ApprovalService(governed.gateway.store)  # type: ignore[union-attr]
    with pytest.raises(Exception, match="no approval request"):
        service.decide(
            "nope", approver=Identity(user="x", groups=("dba",)), approve=True, reason=None
        )


# Recording and audit


def test_recording_replays_and_detects_tampering(governed: GatewayThread, agent: str) -> None:
    subprocess.run(
        [
            "psql",
            "-X",
            governed.dsn(agent, user="agent"),
            "-c",
            "SELECT id, owner FROM accounts ORDER BY id LIMIT 3",
            "-c",
            "DROP TABLE accounts",
        ],
        capture_output=True,
        check=False,
    )
    session_id = latest_session(governed)
    verify = sluice_cli(governed, "sessions", "verify", session_id[:8])
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "intact" in verify.stdout
    replay = sluice_cli(governed, "sessions", "replay", session_id)
    assert "SELECT id, owner FROM accounts" in replay.stdout
    assert "owner 2" in replay.stdout
    assert "no-destructive" in replay.stdout
    path = recording_store(governed.config).path_for(session_id)
    data = path.read_bytes()
    assert b"owner 2" not in data  # rows are kept as the wire messages, base64-encoded
    path.write_bytes(data.replace(b"ORDER BY id LIMIT 3", b"ORDER BY id LIMIT 9", 1))
    tampered = sluice_cli(governed, "sessions", "verify", session_id, "--json")
    assert tampered.returncode == 1
    report = json.loads(tampered.stdout)
    assert report["ok"] is False
    assert report["record"] is not None


def test_recording_of_large_result_verifies_and_detects_tampering(
    governed: GatewayThread, agent: str
) -> None:
    """A result larger than BULK_RECORD_BYTES is chained with BLAKE3 under the
    default `sha256+blake3`: the log of a real psql session verifies, and an
    edit inside the large record is found there."""
    done = subprocess.run(
        [
            "psql",
            "-X",
            "-At",
            governed.dsn(agent, user="agent"),
            "-c",
            "SELECT g, repeat('r', 200) FROM generate_series(1, 300) AS g",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 300
    session_id = latest_session(governed)
    report = json.loads(sluice_cli(governed, "sessions", "verify", session_id, "--json").stdout)
    assert report["ok"] is True
    assert report["algorithm"] in ("sha256+blake3", "hmac-sha256+blake3-keyed")
    path = recording_store(governed.config).path_for(session_id)
    lines = path.read_bytes().splitlines(keepends=True)
    large = next(i for i, line in enumerate(lines) if len(line) > BULK_RECORD_BYTES)
    edited = bytearray(lines[large])
    middle = len(edited) // 2
    edited[middle : middle + 4] = b"AAAA" if edited[middle : middle + 4] != b"AAAA" else b"BBBB"
    lines[large] = bytes(edited)
    path.write_bytes(b"".join(lines))
    tampered = json.loads(sluice_cli(governed, "sessions", "verify", session_id, "--json").stdout)
    assert tampered["ok"] is False
    assert tampered["record"] == large


def test_audit_trail_has_blocks_without_secrets(governed: GatewayThread, agent: str) -> None:
    blocked(governed, agent, "TRUNCATE accounts")
    audit = (Path(governed.config.data_dir) / "audit.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in audit]
    kinds = {e["type"] for e in events}
    assert {
        "session.start",
        "session.end",
        "statement.allowed",
        "statement.blocked",
        "approval.requested",
    } <= kinds
    block = [
        e
        for e in events
        if e["type"] == "statement.blocked" and e.get("statement") == "TRUNCATE accounts"
    ][-1]
    assert block["identity"]["user"] == "agent"
    assert block["rule"] == "no-destructive"
    text = "\n".join(audit)
    assert APPROVAL_SECRET_WORDS.isdisjoint(set(text.split()))
    assert APP_PASSWORD not in text
    assert agent not in text


APPROVAL_SECRET_WORDS = {"password", "secret-Xy7"}


def test_policy_test_and_replay_cli(governed: GatewayThread, agent: str) -> None:
    tested = sluice_cli(
        governed,
        "policy",
        "test",
        "--connection",
        "app",
        "--as",
        "agent",
        "--sql",
        "SELECT 1; DELETE FROM accounts",
        "--json",
    )
    assert tested.returncode == 0, tested.stderr
    out = json.loads(tested.stdout)
    assert out["verdict"] == "block"
    assert out["rule"] == "no-unbounded-writes"
    assert [s["verdict"] for s in out["statements"]] == ["Allow", "Block"]
    run_sql(governed, agent, "SELECT count(*) FROM accounts")
    session_id = latest_session(governed)
    replayed = sluice_cli(governed, "policy", "replay", session_id, "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)[0]["verdict"] == "Allow"


def test_policy_hot_reload_rejects_invalid_and_applies_valid(
    governed: GatewayThread, agent: str, tmp_path: Path
) -> None:
    from sluice.proxy.governance_setup import PolicyReloader

    assert governed.gateway is not None
    path = tmp_path / "sluice.yaml"
    raw = governed.config.model_dump(mode="json")
    raw["policies"] = [{"name": "agent", "extends": "nonexistent"}]
    path.write_text(yaml.safe_dump(raw))
    reloader = PolicyReloader(governed.gateway, path)
    assert governed.call(lambda: asyncio.ensure_future(reloader.reload())) is not None
    time.sleep(0.5)
    assert reloader.last_error is not None
    assert run_sql(governed, agent, "SELECT 1") == [(1,)]  # old policy still in force
    raw["policies"] = [{"name": "agent", "extends": "read-only"}]
    path.write_text(yaml.safe_dump(raw))
    governed.call(lambda: asyncio.ensure_future(reloader.reload()))
    time.sleep(0.5)
    assert reloader.last_error is None
    with (
        psycopg.connect(governed.dsn(agent, user="agent"), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("UPDATE accounts SET balance = 1 WHERE id = 1")
    raw["policies"] = POLICIES
    path.write_text(yaml.safe_dump(raw))
    governed.call(lambda: asyncio.ensure_future(reloader.reload()))
    time.sleep(0.5)
    assert reloader.last_error is None


def test_exec_wait_blocks_until_the_decision(governed: GatewayThread, agent: str, dba: str) -> None:
    sql = "UPDATE accounts SET owner = 'waited' WHERE id = 6"
    config = Path(governed.config.data_dir) / "sluice.yaml"
    env = {
        **os.environ,
        "SLUICE_CONFIG": str(config),
        "SLUICE_TOKEN": agent,
        "SLUICE_GATEWAY": f"127.0.0.1:{governed.port}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice", "exec", "app", "-c", sql, "--wait", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    service = ApprovalService(governed.gateway.store)  # type: ignore[union-attr]
    deadline = time.monotonic() + 15
    pending: list[Approval] = []
    while time.monotonic() < deadline and not pending:
        pending = [
            a for a in service.list_requests(status=ApprovalStatus.PENDING) if a.statement == sql
        ]
        time.sleep(0.05)
    assert pending, "the statement was not held"
    assert proc.poll() is None  # still waiting for the decision
    approved = sluice_cli(governed, "approvals", "approve", pending[0].id, token=dba)
    assert approved.returncode == 0, approved.stderr
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert json.loads(out)["status"] == "UPDATE 1"
    assert f"request {pending[0].id}" in err


def test_a_mask_rule_added_by_reload_never_passes_unmasked(
    governed: GatewayThread, agent: str, tmp_path: Path
) -> None:
    """A session opened without masking refuses statements a new mask rule covers."""
    from sluice.proxy.governance_setup import PolicyReloader

    assert governed.gateway is not None
    raw = governed.config.model_dump(mode="json")
    raw["masking"] = {"profiles": [{"name": "pii", "detectors": ["all"], "content": True}]}
    raw["policies"] = [
        {
            "name": "agent",
            "extends": "ai-agent",
            "rules": [
                {
                    "name": "mask-accounts",
                    "when": {"tables": ["public.accounts"]},
                    "action": "mask",
                    "mask_profiles": ["pii"],
                }
            ],
        }
    ]
    path = tmp_path / "sluice.yaml"
    path.write_text(yaml.safe_dump(raw))
    with psycopg.connect(governed.dsn(agent, user="agent"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (10,)
        reloader = PolicyReloader(governed.gateway, path)
        governed.call(lambda: asyncio.ensure_future(reloader.reload()))
        time.sleep(0.5)
        assert reloader.last_error is None
        try:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="requires masking"):
                conn.execute("SELECT owner FROM accounts")
        finally:
            path.write_text(
                yaml.safe_dump({**governed.config.model_dump(mode="json"), "policies": POLICIES})
            )
            governed.call(lambda: asyncio.ensure_future(reloader.reload()))
            time.sleep(0.5)


def test_statements_that_differ_in_literals_keep_their_own_verdict_and_text(
    governed: GatewayThread, agent: str
) -> None:
    """Verdicts are shared by queries that differ only in string literals; each
    still gets its own rows and audit line, and a literal that changes what a
    statement does (a setting's name) is judged on its own."""
    with psycopg.connect(governed.dsn(agent, user="agent"), autocommit=True) as conn:
        for n in (3, 4, 5):
            sql = f"SELECT 'tag {n}' AS tag FROM accounts WHERE owner <> 'owner {n}' LIMIT 1"
            assert conn.execute(sql).fetchone() == (f"tag {n}",)
        assert conn.execute("SELECT set_config('application_name', 'lit', false)").fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            conn.execute("SELECT set_config('role', 'postgres', false)")
        assert info.value.diag.message_hint == "policy rule: no-server-admin"
        assert conn.execute("SHOW application_name").fetchone() == ("lit",)
    audit = (Path(governed.config.data_dir) / "audit.jsonl").read_text().splitlines()
    allowed = [
        e["statement"]
        for e in map(json.loads, audit)
        if e["type"] == "statement.allowed" and "AS tag FROM accounts" in e.get("statement", "")
    ]
    assert allowed[-3:] == [
        f"SELECT 'tag {n}' AS tag FROM accounts WHERE owner <> 'owner {n}' LIMIT 1"
        for n in (3, 4, 5)
    ]
