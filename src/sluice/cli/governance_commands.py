"""CLI commands of the governance core: policy, approvals, exec, session recordings."""

from __future__ import annotations

import datetime as dt
import os
import sys
from typing import Annotated

import typer
from rich.syntax import Syntax
from rich.table import Table

from sluice.cli.common import (
    CliState,
    ago,
    console,
    err_console,
    fail,
    friendly_errors,
    parse_duration,
    print_json,
)
from sluice.events import Identity, Protocol, QueryOrigin, SessionContext

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="SLUICE_TOKEN",
        show_envvar=True,
        help="Your Sluice token (it identifies you and your groups).",
    ),
]

# `sluice exec` exit statuses, for scripts and agents.
EXIT_SQL_ERROR = 1
EXIT_BLOCKED = 2
EXIT_HELD = 3
EXIT_DENIED = 4

policy_app = typer.Typer(help="Check, test and replay policies.", no_args_is_help=True)
approvals_app = typer.Typer(
    help="List and decide just-in-time approval requests.", no_args_is_help=True
)


def _state(ctx: typer.Context) -> CliState:
    obj = ctx.obj
    assert isinstance(obj, CliState)
    return obj


def _identity(st: CliState, token: str | None) -> Identity:
    if not token:
        fail(
            "this command needs your Sluice token",
            hint="pass --token or set SLUICE_TOKEN (create one with `sluice tokens create`)",
        )
    identity, _ = st.store.authenticate(token)
    return identity


# Policy


@policy_app.command("check")
def policy_check(ctx: typer.Context) -> None:
    """Validate the configuration and its policies."""
    from sluice.proxy.governance_setup import audit_spec, compile_policies, recording_spec

    with friendly_errors():
        st = _state(ctx)
        engine = compile_policies(st.config)
        audit_spec(st.config)
        recording_spec(st.config)
        from sluice.proxy.pg_masking import masking_engine

        masking_engine(st.config)
    names = ", ".join(sorted(engine.policy_names))
    console.print(
        f"[green]ok[/]: {len(st.config.connections)} connection(s); policies: {names}",
        highlight=False,
    )


@policy_app.command("test")
def policy_test(
    ctx: typer.Context,
    connection: Annotated[str, typer.Option(help="The connection whose policy applies.")],
    as_user: Annotated[str, typer.Option("--as", help="The user to judge as.")],
    sql: Annotated[str, typer.Option(help="The SQL to judge.")],
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="A group of the user (repeat).")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Print the verdict for SQL and the rule that decided it, per statement."""
    from sluice.proxy.governance_setup import compile_policies

    with friendly_errors():
        st = _state(ctx)
        conn = st.config.connection(connection)
        if conn is None:
            fail(f"no connection {connection!r}", hint="see `sluice connections list`")
        if conn.policy is None:
            fail(f"connection {connection!r} has no policy: everything passes")
        engine = compile_policies(st.config)
        identity = Identity(user=as_user, groups=tuple(group or ()))
        explanation = engine.explain_sql(
            sql, policy_name=conn.policy, identity=identity, connection=connection
        )
        masking = _masking_preview(st, conn.name, sql, explanation.verdict)
    verdict = explanation.verdict
    if json_output:
        print_json(
            {
                "verdict": type(verdict).__name__.lower(),
                "rule": verdict.rule,
                "reason": verdict.reason,
                "statements": [
                    {
                        "statement": d.statement.text,
                        "kind": d.statement.kind,
                        "category": str(d.statement.category),
                        "verdict": type(d.verdict).__name__,
                        "rule": d.rule,
                        "policy": d.policy,
                    }
                    for d in explanation.statements
                ],
                "masking": masking,
            }
        )
        return
    colour = {"Allow": "green", "Block": "red", "RequireApproval": "yellow"}[type(verdict).__name__]
    console.print(
        f"[bold {colour}]{type(verdict).__name__}[/] by rule "
        f"[bold]{verdict.rule}[/]{': ' + verdict.reason if verdict.reason else ''}",
        highlight=False,
    )
    table = Table("#", "statement", "kind", "category", "verdict", "rule")
    for index, d in enumerate(explanation.statements, 1):
        text = d.statement.text if len(d.statement.text) < 60 else d.statement.text[:57] + "..."
        table.add_row(
            str(index),
            text,
            d.statement.kind,
            str(d.statement.category),
            type(d.verdict).__name__,
            d.rule or "-",
        )
    console.print(table)
    if masking:
        mt = Table("column", "masked by", "why")
        for item in masking:
            mt.add_row(item["column"], item["strategy"], item["why"])
        console.print(mt)


def _masking_preview(
    st: CliState, connection: str, sql: str, verdict: object
) -> list[dict[str, str]]:
    from sluice.proxy.pg_masking import explain_masking

    return explain_masking(st.config, connection, sql, verdict)


@policy_app.command("replay")
def policy_replay(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="A recorded session id (or prefix).")],
    json_output: JsonOption = False,
) -> None:
    """Re-judge a recorded session under the current policy."""
    from sluice.policy import RecordedQuery
    from sluice.proxy.governance_setup import compile_policies, recording_store
    from sluice.recording.records import StatementRecord

    with friendly_errors():
        st = _state(ctx)
        info = st.store.get_session(session_id)
        if info is None:
            fail(f"no session {session_id!r}", hint="see `sluice sessions list`")
        conn = st.config.connection(info.connection)
        if conn is None or conn.policy is None:
            fail(f"connection {info.connection!r} has no policy now")
        engine = compile_policies(st.config)
        queries = []
        for record in recording_store(st.config).replay(info.session_id):
            if isinstance(record, StatementRecord):
                queries.append(
                    RecordedQuery(
                        sql=record.sql,
                        origin=QueryOrigin(record.origin),
                        statement_name=record.statement_name,
                    )
                )
        context = SessionContext(
            session_id=info.session_id,
            identity=Identity(user=info.user, groups=info.groups),
            connection=info.connection,
            protocol=Protocol(info.protocol),
            client_addr=info.client_addr,
        )
        results = engine.replay(queries, policy_name=conn.policy, context=context)
    rows = [
        {
            "statement": q.sql,
            "verdict": type(r.verdict).__name__,
            "rule": r.verdict.rule,
            "reason": r.verdict.reason,
        }
        for q, r in zip(queries, results, strict=True)
    ]
    if json_output:
        print_json(rows)
        return
    table = Table("#", "statement", "now", "rule")
    changed = 0
    for index, row in enumerate(rows, 1):
        style = {"Allow": "green", "Block": "red", "RequireApproval": "yellow"}[row["verdict"]]
        if row["verdict"] != "Allow":
            changed += 1
        table.add_row(
            str(index), row["statement"][:70], f"[{style}]{row['verdict']}[/]", row["rule"]
        )
    console.print(table)
    console.print(f"{changed} of {len(rows)} statement(s) would now be blocked or held.")


# Approvals


@approvals_app.command("list")
def approvals_list(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Include decided requests.")] = False,
    json_output: JsonOption = False,
) -> None:
    """List approval requests (pending ones by default)."""
    from sluice.approvals.service import ApprovalService, ApprovalStatus

    with friendly_errors():
        service = ApprovalService(_state(ctx).store)
        items = service.list_requests(status=None if all_ else ApprovalStatus.PENDING)
    if json_output:
        print_json([a.as_json() for a in items])
        return
    if not items:
        console.print("No pending approval requests." if not all_ else "No approval requests.")
        return
    table = Table(
        "id", "status", "requester", "connection", "statement", "rule", "approvers", "expires"
    )
    for a in items:
        table.add_row(
            a.id,
            a.status.value,
            a.requester,
            a.connection,
            a.statement[:60],
            a.rule,
            ", ".join(a.approver_groups),
            ago(a.expires_at),
        )
    console.print(table)


@approvals_app.command("show")
def approvals_show(
    ctx: typer.Context,
    approval_id: Annotated[str, typer.Argument(help="The request id.")],
    json_output: JsonOption = False,
) -> None:
    """Show one approval request, with its full statement."""
    from sluice.approvals.service import ApprovalService

    with friendly_errors():
        item = ApprovalService(_state(ctx).store).get(approval_id)
    if item is None:
        fail(f"no approval request {approval_id!r}", hint="see `sluice approvals list`")
    if json_output:
        print_json(item.as_json())
        return
    for key, value in item.as_json().items():
        if key != "statement":
            console.print(
                f"[bold]{key:>16}[/] {value if value is not None else '-'}", highlight=False
            )
    console.print(Syntax(item.statement, "sql", word_wrap=True))


def _decide(
    ctx: typer.Context,
    approval_id: str,
    token: str | None,
    approve: bool,
    reason: str | None,
    window: str | None,
) -> None:
    from sluice.approvals.service import ApprovalService
    from sluice.proxy.governance_setup import audit_decision

    with friendly_errors():
        st = _state(ctx)
        identity = _identity(st, token)
        span = parse_duration(window) if window else None
        decided = ApprovalService(st.store).decide(
            approval_id, approver=identity, approve=approve, reason=reason, window=span
        )
        audit_decision(st.config, decided, identity)
    verb = "Approved" if approve else "Denied"
    extra = f"; window until {ago(decided.window_until)} UTC" if decided.window_until else ""
    console.print(
        f"{verb} request {decided.id} of {decided.requester} on {decided.connection}{extra}.",
        highlight=False,
    )


@approvals_app.command("approve")
def approvals_approve(
    ctx: typer.Context,
    approval_id: Annotated[str, typer.Argument(help="The request id.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit trail).")] = None,
    window: Annotated[
        str | None,
        typer.Option(
            help="Also allow the same statement from the same requester for this long, e.g. 15m.",
        ),
    ] = None,
    token: TokenOption = None,
) -> None:
    """Approve a held statement (you must be in an approver group, not the requester)."""
    _decide(ctx, approval_id, token, True, reason, window)


@approvals_app.command("deny")
def approvals_deny(
    ctx: typer.Context,
    approval_id: Annotated[str, typer.Argument(help="The request id.")],
    reason: Annotated[str, typer.Option(help="Why (the requester sees it).")],
    token: TokenOption = None,
) -> None:
    """Deny a held statement."""
    _decide(ctx, approval_id, token, False, reason, None)


# One-shot execution


def exec_command(
    ctx: typer.Context,
    connection: Annotated[str, typer.Argument(help="The connection to run on.")],
    command: Annotated[str, typer.Option("--command", "-c", help="The SQL to run.")],
    wait: Annotated[
        bool, typer.Option(help="Wait for an approval decision instead of exiting with status 3.")
    ] = False,
    token: TokenOption = None,
    user: Annotated[str | None, typer.Option(help="Your user (default: the token's).")] = None,
    gateway: Annotated[
        str | None,
        typer.Option(
            envvar="SLUICE_GATEWAY",
            show_envvar=True,
            help="The gateway's PostgreSQL address host:port (default: listen.postgres).",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Run SQL through the gateway once, as an agent's script would.

    Exit status: 0 ok, 1 SQL error, 2 blocked by policy, 3 held for approval
    (the request id is printed; run again once approved), 4 denied or expired.
    """
    import psycopg

    from sluice.config import parse_host_port

    st = _state(ctx)
    with friendly_errors():
        identity = _identity(st, token)
        host, port = parse_host_port(gateway or st.config.listen.postgres)
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard listener is reached locally
        host = "127.0.0.1"
    held: list[str] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        message = diag.message_primary or ""
        if message.startswith("statement held for approval"):
            request_id = message.split("request ", 1)[1].split(",", 1)[0]
            held.append(request_id)
            err_console.print(
                f"[yellow]held for approval[/]: request {request_id}; {diag.message_hint or ''}",
                highlight=False,
            )
            if not wait:
                _exit_held(request_id, json_output)
        else:
            err_console.print(f"{diag.severity}: {message}", highlight=False)

    try:
        with psycopg.connect(
            host=host,
            port=port,
            dbname=connection,
            user=user or identity.user,
            password=token,
            sslmode="prefer",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.add_notice_handler(on_notice)
            cur = conn.execute(command)
            _print_result(cur, json_output)
    except psycopg.Error as exc:
        diag = getattr(exc, "diag", None)
        sqlstate = getattr(exc, "sqlstate", None) or ""
        message = (diag.message_primary if diag else None) or str(exc).strip()
        hint = diag.message_hint if diag else None
        if json_output:
            print_json({"error": message, "sqlstate": sqlstate, "hint": hint})
        else:
            err_console.print(f"[bold red]{sqlstate or 'error'}[/]: {message}", highlight=False)
            if hint:
                err_console.print(f"[yellow]hint:[/] {hint}", highlight=False)
        if sqlstate == "42501" and message.startswith("blocked by Sluice"):
            raise typer.Exit(EXIT_BLOCKED) from None
        if held or (sqlstate in ("42501", "57014") and "approval" in (message + (hint or ""))):
            raise typer.Exit(EXIT_DENIED) from None
        raise typer.Exit(EXIT_SQL_ERROR) from None


def _exit_held(request_id: str, json_output: bool) -> None:
    if json_output:
        print_json({"held": True, "approval_id": request_id})
    else:
        console.print(request_id)
    sys.stdout.flush()
    os._exit(EXIT_HELD)  # leave at once: the request stays pending for approvers


def _print_result(cur: object, json_output: bool) -> None:
    import psycopg

    assert isinstance(cur, psycopg.Cursor)
    if cur.description is None:
        if json_output:
            print_json({"status": cur.statusmessage, "rowcount": cur.rowcount})
        else:
            console.print(cur.statusmessage or "ok", highlight=False)
        return
    names = [d.name for d in cur.description]
    rows = cur.fetchall()
    if json_output:
        print_json({"columns": names, "rows": [list(r) for r in rows], "status": cur.statusmessage})
        return
    table = Table(*names)
    for row in rows:
        table.add_row(*["NULL" if v is None else str(v) for v in row])
    console.print(table)
    console.print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


# Session recordings


def sessions_replay(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="A session id (or a unique prefix).")],
    realtime: Annotated[bool, typer.Option(help="Replay with the original timing.")] = False,
) -> None:
    """Show a recorded session as it happened: statements, verdicts and results."""
    from sluice.proxy.governance_setup import recording_store
    from sluice.recording import render_replay

    with friendly_errors():
        st = _state(ctx)
        info = st.store.get_session(session_id)
        full_id = info.session_id if info else session_id
        records = recording_store(st.config).replay(full_id)
        render_replay(console, records, realtime=realtime)


def sessions_verify(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="A session id (or a unique prefix).")],
    json_output: JsonOption = False,
) -> None:
    """Prove a recording is intact, or say exactly where it was altered."""
    from sluice.proxy.governance_setup import recording_store

    with friendly_errors():
        st = _state(ctx)
        info = st.store.get_session(session_id)
        full_id = info.session_id if info else session_id
        report = recording_store(st.config).verify(full_id)
    if json_output:
        print_json(
            {
                "ok": report.ok,
                "records": report.records,
                "sealed": report.sealed,
                "authenticated": report.authenticated,
                "algorithm": None if report.algorithm is None else str(report.algorithm),
                "problem": str(report.problem) if report.problem else None,
                "record": report.record,
                "line": report.line,
                "detail": report.detail,
            }
        )
    elif report.ok:
        console.print(f"[green]intact[/]: {report.summary()}", highlight=False)
    else:
        console.print(f"[bold red]ALTERED[/]: {report.summary()}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


def sessions_prune(
    ctx: typer.Context,
    older_than: Annotated[
        str | None,
        typer.Option(help="Remove recordings older than this (default: recording.retention_days)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Delete recordings and session rows past the retention period."""
    from sluice.proxy.governance_setup import recording_store
    from sluice.recording import prune

    with friendly_errors():
        st = _state(ctx)
        store = recording_store(st.config)
        if older_than:
            span = parse_duration(older_than)
            removed = prune(store.dir, span)
        else:
            if store.spec.retention_days is None:
                fail("recording.retention_days is not set", hint="pass --older-than 90d")
            span = dt.timedelta(days=store.spec.retention_days)
            removed = store.prune()
        cutoff = dt.datetime.now(dt.UTC) - span
        rows = st.store.delete_sessions_before(cutoff)
    if json_output:
        print_json({"recordings_removed": [str(p) for p in removed], "sessions_removed": rows})
    else:
        console.print(
            f"Removed {len(removed)} recording(s) and {len(rows)} session row(s) "
            f"older than {ago(cutoff)} UTC."
        )


def register(app: typer.Typer, sessions_app: typer.Typer) -> None:
    """Attach the governance commands to the main app."""
    app.add_typer(policy_app, name="policy")
    app.add_typer(approvals_app, name="approvals")
    app.command("exec")(exec_command)
    sessions_app.command("replay")(sessions_replay)
    sessions_app.command("verify")(sessions_verify)
    sessions_app.command("prune")(sessions_prune)
