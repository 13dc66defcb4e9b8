"""A prepared statement's name means what the backend holds under it.

PREPARE (or a named Parse) of a name that exists fails on the server, and so
does a DEALLOCATE in an aborted transaction; neither changes what EXECUTE or a
Bind of the name runs. The gateway follows the server's answers, so a failed
re-PREPARE cannot rename a write that needs approval into a harmless text, and
a protocol Bind of a SQL-prepared statement is judged like its EXECUTE. Real
libpq (in a subprocess) against the throwaway PostgreSQL, ai-agent preset.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import psycopg
import pytest

from sluice.devservers.postgres import ThrowawayPostgres
from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.framing import frame
from sluice.proxy import pg_statements
from sluice.proxy.pg_session import PgSession
from tests.conftest import APP_PASSWORD
from tests.helpers import GatewayThread
from tests.proxy.conftest import grant, run_steps, was_denied
from tests.proxy.test_pg_session_reads import Collect, _session

WRITE = "UPDATE ledger SET balance = 0 WHERE id = 1"
PREPARE_WRITE = f"PREPARE x AS {WRITE}"


@pytest.fixture(autouse=True)
def ledger(pg: ThrowawayPostgres) -> str:
    dsn = pg.dsn(user="app", password=APP_PASSWORD, dbname="app")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS ledger")
        conn.execute("CREATE TABLE ledger (id int PRIMARY KEY, balance int)")
        conn.execute("INSERT INTO ledger SELECT g, 100 FROM generate_series(1, 3) g")
    return dsn


def _allowed(gateway: GatewayThread, origin: str) -> list[str]:
    """The statements of the gateway's `statement.allowed` events of `origin`."""
    audit = (Path(gateway.config.data_dir) / "audit.jsonl").read_text().splitlines()
    return [
        event["statement"]
        for event in map(json.loads, audit)
        if event["type"] == "statement.allowed" and event["origin"] == origin
    ]


def _balances(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute("SELECT balance FROM ledger ORDER BY id")]


def test_a_failed_re_prepare_does_not_rename_what_execute_runs(
    agent_gateway: GatewayThread, ledger: str, denied: list[str]
) -> None:
    grant(agent_gateway, PREPARE_WRITE)
    prepared, renamed, executed = run_steps(
        agent_gateway, f"sql:{PREPARE_WRITE}", "sql:PREPARE x AS SELECT 1", "sql:EXECUTE x"
    )
    assert prepared["tag"] == "PREPARE"
    assert renamed["sqlstate"] == "42P05"  # the server's: x already exists
    assert was_denied(executed)  # judged as the write x still holds
    assert denied == [f"EXECUTE x\n-- x runs: {PREPARE_WRITE}"]
    assert _balances(ledger) == [100, 100, 100]


def test_a_deallocate_the_server_refused_keeps_the_statement(
    agent_gateway: GatewayThread, ledger: str, denied: list[str]
) -> None:
    grant(agent_gateway, PREPARE_WRITE)
    results = run_steps(
        agent_gateway,
        f"sql:{PREPARE_WRITE}",
        "sql:BEGIN",
        "sql:SELECT 1/0",
        "sql:DEALLOCATE x",  # refused: the transaction is aborted
        "sql:ROLLBACK",
        "sql:PREPARE x AS SELECT 1",  # refused: x still exists
        "sql:EXECUTE x",
        "sql:DEALLOCATE x",
        "sql:PREPARE x AS SELECT 2 AS two",
        "sql:EXECUTE x",
    )
    by_step = {r["step"]: r for r in results}
    assert results[3]["sqlstate"] == "25P02"
    assert results[5]["sqlstate"] == "42P05"
    assert was_denied(results[6])
    assert by_step["sql:DEALLOCATE x"]["tag"] == "DEALLOCATE"
    assert results[-1]["ok"]
    assert results[-1]["tag"] == "SELECT 1"
    assert _balances(ledger) == [100, 100, 100]


def test_a_protocol_bind_of_a_sql_prepared_statement_is_judged(
    agent_gateway: GatewayThread, ledger: str, denied: list[str]
) -> None:
    grant(agent_gateway, PREPARE_WRITE)
    prepared, bound = run_steps(agent_gateway, f"sql:{PREPARE_WRITE}", "bind:x")
    assert prepared["ok"]
    assert was_denied(bound)
    assert denied == [PREPARE_WRITE]  # the approver sees the write it would run
    assert _balances(ledger) == [100, 100, 100]


def test_a_bind_of_a_name_never_prepared_is_blocked(agent_gateway: GatewayThread) -> None:
    (bound,) = run_steps(agent_gateway, "bind:nowhere")
    assert bound["sqlstate"] == "42501"
    assert "'nowhere' is unknown to Sluice" in bound["message"]


def test_executions_are_judged_and_audited_as_the_text_the_server_holds(
    agent_gateway: GatewayThread, ledger: str, denied: list[str]
) -> None:
    # Approved at its Parse: its executions are allowed, and audited as it.
    grant(agent_gateway, WRITE)
    parsed, reparsed, bound = run_steps(
        agent_gateway, f"parse:s1:{WRITE}", "parse:s1:SELECT 1 AS harmless", "bind:s1"
    )
    assert parsed["ok"]
    assert reparsed["sqlstate"] == "42P05"
    assert bound["tag"] == "UPDATE 1"
    assert _allowed(agent_gateway, "execute")[-1] == WRITE
    # An approval at Parse holds for the text approved, not for the name.
    other = "UPDATE ledger SET balance = 5 WHERE id = 3"
    grant(agent_gateway, PREPARE_WRITE)
    grant(agent_gateway, other)
    prepared, approved_parse, bound = run_steps(
        agent_gateway, f"sql:{PREPARE_WRITE}", f"parse:x:{other}", "bind:x"
    )
    assert prepared["ok"]
    assert approved_parse["sqlstate"] == "42P05"
    assert was_denied(bound)
    assert _balances(ledger) == [0, 100, 100]


# The session's bookkeeping, driven without sockets.


def _parse(name: str, sql: str) -> bytes:
    return frame(b"P", name.encode() + b"\0" + sql.encode() + b"\0\0\0")


def _bind(name: str) -> bytes:
    return frame(b"B", b"\0" + name.encode() + b"\0\0\0\0\0\0\0")


EXECUTE = frame(b"E", b"\0\0\0\0\0")
PARSE_COMPLETE = frame(b"1", b"")
SYNC = frame(b"S", b"")


def _sent(session: PgSession) -> bytes:
    backend = session.backend
    assert isinstance(backend, Collect)
    return bytes(backend.data)


def test_a_name_redefined_behind_an_unanswered_batch_is_refused(tmp_path: Path) -> None:
    with _session(tmp_path, governed=True) as (session, _):
        session.client_data(_parse("s1", "SELECT 1") + SYNC)
        session.backend_data(PARSE_COMPLETE + m.ready_for_query("I"))
        # Close, Parse and Bind in three batches, none answered: if the
        # Close's batch failed, s1 still holds SELECT 1 and the Parse fails
        # as a duplicate, so the Bind would run either text.
        session.client_data(
            frame(b"C", b"Ss1\0") + SYNC + _parse("s1", "SELECT 2") + SYNC + _bind("s1") + SYNC
        )
        assert _bind("s1") not in _sent(session)
        # In one batch with a Parse of its own, the Bind runs only if that
        # Parse does, which is only where the Parse of SELECT 2 did not: not
        # the predicted text either.
        session.client_data(_parse("s1", "SELECT 3") + _bind("s1") + SYNC)
        assert not _sent(session).endswith(_bind("s1") + SYNC)
        session.backend_data(
            frame(b"3", b"")
            + m.ready_for_query("I")
            + PARSE_COMPLETE
            + m.ready_for_query("I")
            + m.error_response("26000", "marker")
            + m.ready_for_query("I")
            + m.error_response("42P05", 'prepared statement "s1" already exists')
            + m.ready_for_query("I")
        )
        # Once the Close is answered there is one text again.
        assert session.governance.prepared["s1"] == "SELECT 2"
        session.client_data(_bind("s1") + EXECUTE + SYNC)
        assert _sent(session).endswith(_bind("s1") + EXECUTE + SYNC)


def test_a_new_name_may_be_bound_before_its_parse_is_answered(tmp_path: Path) -> None:
    with _session(tmp_path, governed=True) as (session, _):
        session.client_data(_parse("s2", "SELECT 2") + SYNC + _bind("s2") + EXECUTE + SYNC)
        assert _sent(session).endswith(_bind("s2") + EXECUTE + SYNC)


def test_a_parse_the_server_refused_is_forgotten(tmp_path: Path) -> None:
    with _session(tmp_path, governed=True) as (session, _):
        session.client_data(_parse("s3", "SELECT 3") + SYNC)
        assert session.governance.prepared.get("s3") == "SELECT 3"  # the prediction
        session.backend_data(m.error_response("42883", "no such function") + m.ready_for_query("I"))
        assert "s3" not in session.governance.prepared
        session.client_data(_bind("s3") + EXECUTE + SYNC)
        assert _bind("s3") not in _sent(session)  # unknown: blocked, not forwarded


def test_an_unnamed_statement_left_unknown_by_a_failed_batch_is_not_bound_blind(
    tmp_path: Path,
) -> None:
    with _session(tmp_path, governed=True) as (session, _):
        # The Parse of "a" fails, so the server skips the second Parse of
        # the unnamed statement and keeps SELECT 2 under it.
        session.client_data(
            _parse("", "SELECT 2") + _parse("a", "SELECT 1") + _parse("", "SELECT 1") + SYNC
        )
        session.backend_data(
            PARSE_COMPLETE + m.error_response("42601", "syntax error") + m.ready_for_query("I")
        )
        # Unanswered, the next Parse of it may be skipped too: a Bind behind
        # it could run SELECT 2, which was never confirmed.
        session.client_data(_parse("", "SELECT 1") + SYNC + _bind("") + EXECUTE + SYNC)
        assert _bind("") not in _sent(session)
        # Once that Parse is answered, the unnamed statement is known again.
        session.backend_data(PARSE_COMPLETE + m.ready_for_query("I"))
        session.backend_data(m.error_response("26000", "marker") + m.ready_for_query("I"))
        session.client_data(_bind("") + EXECUTE + SYNC)
        assert _sent(session).endswith(_bind("") + EXECUTE + SYNC)


def test_only_the_statements_that_ran_change_names(tmp_path: Path) -> None:
    with _session(tmp_path, governed=True) as (session, _):
        session.client_data(m.encode_query("PREPARE a AS SELECT 1; PREPARE b AS SELECT 2"))
        # The first statement ran, the second failed.
        session.backend_data(
            m.command_complete("PREPARE")
            + m.error_response("XX000", "boom")
            + m.ready_for_query("I")
        )
        prepared = session.governance.prepared
        assert prepared.get("a") == "PREPARE a AS SELECT 1"
        assert "b" not in prepared


def test_an_approval_of_execute_is_an_approval_of_what_it_runs(
    agent_gateway: GatewayThread, ledger: str, denied: list[str]
) -> None:
    """Approvers see the prepared text; a window granted for it does not
    carry over to another text prepared under the same name."""
    grant(agent_gateway, PREPARE_WRITE)
    grant(agent_gateway, f"EXECUTE x\n-- x runs: {PREPARE_WRITE}", window=dt.timedelta(minutes=5))
    other = "PREPARE x AS UPDATE ledger SET balance = 7 WHERE id = 2"
    grant(agent_gateway, other)
    results = run_steps(
        agent_gateway,
        f"sql:{PREPARE_WRITE}",
        "sql:EXECUTE x",
        "sql:EXECUTE x",
        "sql:DEALLOCATE x",
        f"sql:{other}",
        "sql:EXECUTE x",
    )
    assert [r["tag"] for r in results[:5]] == [
        "PREPARE",
        "UPDATE 1",
        "UPDATE 1",
        "DEALLOCATE",
        "PREPARE",
    ]
    assert was_denied(results[5])
    assert denied == [f"EXECUTE x\n-- x runs: {other}"]
    assert _balances(ledger) == [0, 100, 100]


def test_prepared_texts_are_followed_through_nested_executions(tmp_path: Path) -> None:
    with _session(tmp_path, governed=True) as (session, _):
        session.client_data(
            m.encode_query("PREPARE base AS SELECT 42") + _parse("wrapper", "EXECUTE base") + SYNC
        )
        text = session.governance.with_prepared_texts
        assert text("EXECUTE wrapper") == (
            "EXECUTE wrapper\n"
            "-- wrapper runs: EXECUTE base\n"
            "-- base runs: PREPARE base AS SELECT 42"
        )
        # Prepared in the same text: that text is what runs, and in view.
        assert text("PREPARE wrapper AS SELECT 1; EXECUTE wrapper") == (
            "PREPARE wrapper AS SELECT 1; EXECUTE wrapper"
        )
        assert text("SELECT 1") == "SELECT 1"


def test_audit_shows_what_an_execute_ran(agent_gateway: GatewayThread) -> None:
    prepared, executed = run_steps(
        agent_gateway, "sql:PREPARE answer AS SELECT 42", "sql:EXECUTE answer"
    )
    assert prepared["tag"] == "PREPARE"
    assert executed["tag"] == "SELECT 1"
    assert _allowed(agent_gateway, "simple")[-2:] == [
        "PREPARE answer AS SELECT 42",
        "EXECUTE answer\n-- answer runs: PREPARE answer AS SELECT 42",
    ]


def test_too_many_changes_in_flight_end_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_statements, "MAX_CHANGES_IN_FLIGHT", 3)
    with _session(tmp_path, governed=True) as (session, client):
        session.client_data(b"".join(_parse(f"s{i}", "SELECT 1") for i in range(5)) + SYNC)
        assert b"s3" not in _sent(session)
        assert b"08P01" in client.data
        assert b"too many prepared-statement changes" in client.data
        assert session.end_reason == "protocol_error"
