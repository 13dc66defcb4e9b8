"""The `sluice` command line."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sluice import __version__
from sluice.cli import governance_commands
from sluice.cli.common import (
    CliState,
    ago,
    console,
    fail,
    friendly_errors,
    parse_duration,
    print_json,
)
from sluice.credentials.vault import Vault

app = typer.Typer(
    name="sluice",
    help="Sluice: the Layer-7 gateway that governs what agents and people do to production.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
tokens_app = typer.Typer(help="Create, list and revoke Sluice tokens.", no_args_is_help=True)
connections_app = typer.Typer(
    help="Show the connections (targets) clients can reach.", no_args_is_help=True
)
sessions_app = typer.Typer(
    help="List, show, replay and verify recorded sessions.", no_args_is_help=True
)
credentials_app = typer.Typer(
    help="Store backend credentials encrypted at rest.", no_args_is_help=True
)
app.add_typer(tokens_app, name="tokens")
app.add_typer(connections_app, name="connections")
app.add_typer(sessions_app, name="sessions")
app.add_typer(credentials_app, name="credentials")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Path of sluice.yaml (or set SLUICE_CONFIG).",
            envvar="SLUICE_CONFIG",
            show_envvar=True,
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Store URL, e.g. postgresql://... (default: SQLite in the data directory).",
            envvar="SLUICE_STORE",
            show_envvar=True,
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ctx.obj = CliState(config_path=config, store_url=store)


def state(ctx: typer.Context) -> CliState:
    obj = ctx.obj
    assert isinstance(obj, CliState)
    return obj


@app.command()
def version(json_output: JsonOption = False) -> None:
    """Print the Sluice version, and whether its hot path runs compiled."""
    from sluice._compiled import hot_path_mode

    if json_output:
        print_json({"version": __version__, "hot_path": hot_path_mode()})
    else:
        console.print(f"sluice {__version__} (hot path: {hot_path_mode()})", highlight=False)


@app.command()
def serve(
    ctx: typer.Context,
    workers: Annotated[
        int,
        typer.Option(help="Worker processes sharing the listeners (SO_REUSEPORT).", min=1, max=64),
    ] = 1,
) -> None:
    """Run the gateway with the configuration file."""
    from sluice.proxy.runner import run_gateway

    with friendly_errors():
        run_gateway(state(ctx), workers=workers)


@app.command()
def demo(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port of the gateway's PostgreSQL listener.")] = 15432,
    rows: Annotated[int, typer.Option(help="Fake customers to seed.", min=10)] = 500,
) -> None:
    """Start a throwaway PostgreSQL with fake customer data behind the gateway."""
    from sluice.demo import run_demo

    with friendly_errors():
        run_demo(port=port, rows=rows)


# Tokens


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", "-u", help="The user the token identifies.")],
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="A group of the user (repeat).")
    ] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 12h, 30d.")] = "30d",
    description: Annotated[str, typer.Option(help="What the token is for.")] = "",
    json_output: JsonOption = False,
) -> None:
    """Create a token. The secret is printed once and stored only as a hash."""
    lifetime = parse_duration(expires) if expires and expires != "never" else None
    with friendly_errors():
        st = state(ctx)
        info, plaintext = st.store.create_token(
            user=user,
            groups=group or [],
            description=description,
            expires_at=dt.datetime.now(dt.UTC) + lifetime if lifetime else None,
        )
        _audit_token(st, "token.created", info.token_id, user, tuple(group or []))
    if json_output:
        print_json(
            {
                "id": info.token_id,
                "token": plaintext,
                "user": user,
                "groups": list(info.groups),
                "expires_at": info.expires_at,
            }
        )
        return
    console.print(
        f"Created token [bold]{info.token_id}[/] for [bold]{user}[/]"
        f"{' in ' + ', '.join(info.groups) if info.groups else ''}, "
        f"expires {ago(info.expires_at) if info.expires_at else 'never'} UTC."
    )
    console.print("Use it as the password; it is shown only now:", style="yellow")
    console.print(plaintext, highlight=False, soft_wrap=True)


@tokens_app.command("list")
def tokens_list(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List tokens (never their secrets)."""
    with friendly_errors():
        tokens = state(ctx).store.list_tokens()
    if json_output:
        print_json(
            [
                {
                    "id": t.token_id,
                    "user": t.user,
                    "groups": list(t.groups),
                    "status": t.status,
                    "description": t.description,
                    "created_at": t.created_at,
                    "expires_at": t.expires_at,
                    "last_used_at": t.last_used_at,
                }
                for t in tokens
            ]
        )
        return
    table = Table("id", "user", "groups", "status", "expires", "last used", "description")
    for t in tokens:
        table.add_row(
            t.token_id,
            t.user,
            ", ".join(t.groups),
            t.status,
            ago(t.expires_at),
            ago(t.last_used_at),
            t.description,
        )
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(help="The token id from `sluice tokens list`.")],
) -> None:
    """Revoke a token; new connections with it are refused at once."""
    with friendly_errors():
        st = state(ctx)
        info = st.store.revoke_token(token_id)
        if info is None:
            fail(f"no token with id {token_id!r}", hint="see `sluice tokens list`")
        _audit_token(st, "token.revoked", info.token_id, info.user, info.groups)
    console.print(f"Revoked token {token_id} of {info.user}.")


def _audit_token(
    st: CliState, kind: str, token_id: str, user: str, groups: tuple[str, ...]
) -> None:
    from sluice.proxy.runner import emit_admin_audit

    emit_admin_audit(st.config, kind, token_id=token_id, user=user, groups=groups)


# Connections


@connections_app.command("list")
def connections_list(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the connections declared in the configuration."""
    with friendly_errors():
        conns = state(ctx).config.connections
    if json_output:
        print_json(
            [
                {
                    "name": c.name,
                    "type": c.type,
                    "host": c.host,
                    "port": c.port,
                    "database": c.database,
                    "user": c.user,
                    "tls": c.tls.mode,
                    "policy": c.policy,
                    "masking": list(c.masking),
                    "access": c.access.model_dump(mode="json"),
                }
                for c in conns
            ]
        )
        return
    table = Table("name", "type", "target", "user", "tls", "policy", "masking", "access")
    for c in conns:
        who = ", ".join([*c.access.users, *(f"@{g}" for g in c.access.groups)]) or "everyone"
        table.add_row(
            c.name,
            c.type,
            f"{c.host}:{c.port}/{c.database}",
            c.user,
            c.tls.mode,
            c.policy or "-",
            ", ".join(c.masking) or "-",
            who,
        )
    console.print(table)


# Sessions


@sessions_app.command("list")
def sessions_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    user: Annotated[str | None, typer.Option(help="Only this user's sessions.")] = None,
    connection: Annotated[str | None, typer.Option(help="Only this connection.")] = None,
    active: Annotated[bool, typer.Option(help="Only sessions still open.")] = False,
    json_output: JsonOption = False,
) -> None:
    """List sessions, newest first."""
    with friendly_errors():
        rows = state(ctx).store.list_sessions(
            limit=limit, user=user, connection=connection, active_only=active
        )
    if json_output:
        print_json([s.as_json() for s in rows])
        return
    table = Table(
        "id",
        "user",
        "connection",
        "client",
        "started",
        "ended",
        "stmts",
        "in",
        "out",
        "how it ended",
    )
    for s in rows:
        table.add_row(
            s.session_id[:8],
            s.user,
            s.connection,
            s.client_addr,
            ago(s.started_at),
            ago(s.ended_at),
            str(s.statements),
            _size(s.bytes_from_client),
            _size(s.bytes_to_client),
            s.end_reason or "open",
        )
    console.print(table)


@sessions_app.command("show")
def sessions_show(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="A session id (or a unique prefix).")],
    json_output: JsonOption = False,
) -> None:
    """Show one session."""
    with friendly_errors():
        info = state(ctx).store.get_session(session_id)
    if info is None:
        fail(f"no session {session_id!r}", hint="see `sluice sessions list`")
    if json_output:
        print_json(info.as_json())
        return
    for key, value in info.as_json().items():
        console.print(f"[bold]{key:>18}[/] {value if value is not None else '-'}", highlight=False)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


# Credentials


@credentials_app.command("set")
def credentials_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name referenced as `password: {stored: NAME}`.")],
    value: Annotated[
        str | None,
        typer.Option("--value", help="The secret (prompted for if omitted; avoid shell history)."),
    ] = None,
) -> None:
    """Store a backend secret, encrypted with the master key."""
    secret = value if value is not None else typer.prompt("secret", hide_input=True)
    with friendly_errors():
        st = state(ctx)
        vault = Vault.open(st.config.data_dir)
        st.store.put_credential(name, vault.encrypt(secret))
    console.print(f"Stored credential {name!r} (encrypted).")


@credentials_app.command("list")
def credentials_list(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List stored credentials (names only)."""
    with friendly_errors():
        items = state(ctx).store.list_credentials()
    if json_output:
        print_json([{"name": n, "updated_at": u} for n, u in items])
        return
    table = Table("name", "updated")
    for n, u in items:
        table.add_row(n, ago(u))
    console.print(table)


@credentials_app.command("delete")
def credentials_delete(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The credential's name.")]
) -> None:
    """Delete a stored credential."""
    with friendly_errors():
        if not state(ctx).store.delete_credential(name):
            fail(f"no stored credential {name!r}")
    console.print(f"Deleted credential {name!r}.")


@credentials_app.command("keygen")
def credentials_keygen() -> None:
    """Print a new master key for SLUICE_MASTER_KEY."""
    from cryptography.fernet import Fernet

    console.print(Fernet.generate_key().decode(), highlight=False)


governance_commands.register(app, sessions_app)


def main() -> None:
    app()
