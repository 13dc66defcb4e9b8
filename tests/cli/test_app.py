"""The `sluice` command line, run in-process with a temporary config and store."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner, Result

from sluice import __version__
from sluice._compiled import hot_path_mode
from sluice.cli import common
from sluice.cli.app import app
from sluice.config import load_config
from sluice.credentials.vault import Vault
from sluice.events import Identity
from sluice.store.db import Store, utcnow

runner = CliRunner()


def command_paths() -> list[list[str]]:
    """Every command and sub-command registered on the app, as argument lists."""
    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(get_command(app), [])
    return paths


CORE_COMMANDS = [
    ["version"],
    ["serve"],
    ["demo"],
    ["tokens"],
    ["tokens", "create"],
    ["tokens", "list"],
    ["tokens", "revoke"],
    ["connections"],
    ["connections", "list"],
    ["sessions"],
    ["sessions", "list"],
    ["sessions", "show"],
    ["credentials"],
    ["credentials", "set"],
    ["credentials", "list"],
    ["credentials", "delete"],
    ["credentials", "keygen"],
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SLUICE_CONFIG", "SLUICE_STORE", "SLUICE_MASTER_KEY", "SLUICE_LISTEN__POSTGRES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray ./sluice.yaml is picked up
    # Wide consoles, so tables and long error lines are not wrapped mid-word.
    monkeypatch.setattr(common.console, "width", 240)
    monkeypatch.setattr(common.err_console, "width", 240)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "sluice.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        data_dir: {tmp_path / "data"}
        connections:
          - name: prod
            host: db.internal
            port: 5433
            database: app
            user: app
            password: {{stored: prod-app}}
            tls: {{mode: require}}
            access: {{users: [alice], groups: [dba]}}
            policy: read-only
            masking: [pii]
          - name: dev
            host: localhost
            database: dev
            user: dev
        """)
    )
    return path


@pytest.fixture
def store(config_path: Path) -> Iterator[Store]:
    s = Store(load_config(config_path, environ={}).store_url)
    s.migrate()
    yield s
    s.close()


def run(config_path: Path, *args: str, input: str | None = None) -> Result:
    result = runner.invoke(app, ["--config", str(config_path), *args], input=input)
    assert "Traceback" not in result.output, result.output
    return result


def ok(config_path: Path, *args: str, input: str | None = None) -> Result:
    result = run(config_path, *args, input=input)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def ok_json(config_path: Path, *args: str) -> Any:
    return json.loads(ok(config_path, *args, "--json").stdout)


# Help


def test_core_commands_are_registered() -> None:
    paths = command_paths()
    for path in CORE_COMMANDS:
        assert path in paths


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "sluice")
def test_help_works_for_every_command(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert "Traceback" not in result.output


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output
    assert "tokens" in result.output


def test_short_help_option() -> None:
    assert runner.invoke(app, ["-h"]).exit_code == 0


# version


def test_version_json() -> None:
    result = runner.invoke(app, ["version", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"version": __version__, "hot_path": hot_path_mode()}


def test_version_text() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"sluice {__version__} (hot path: {hot_path_mode()})"


# tokens


def test_tokens_create_list_revoke(config_path: Path, store: Store) -> None:
    created = ok_json(
        config_path,
        "tokens",
        "create",
        "--user",
        "alice",
        "-g",
        "dba",
        "-g",
        "dev",
        "--description",
        "laptop",
        "--expires",
        "12h",
    )
    assert created["user"] == "alice"
    assert created["groups"] == ["dba", "dev"]
    assert created["token"].startswith(f"slc_{created['id']}_")
    expires = dt.datetime.fromisoformat(created["expires_at"])
    assert dt.timedelta(hours=11) < expires - utcnow() <= dt.timedelta(hours=12)
    # The token works against the same store.
    identity, _ = store.authenticate(created["token"])
    assert identity == Identity(user="alice", groups=("dba", "dev"), token_id=created["id"])

    listed = ok_json(config_path, "tokens", "list")
    assert [(t["id"], t["user"], t["status"], t["description"]) for t in listed] == [
        (created["id"], "alice", "active", "laptop")
    ]
    assert created["token"] not in json.dumps(listed)

    revoked = ok(config_path, "tokens", "revoke", created["id"])
    assert f"Revoked token {created['id']} of alice" in revoked.stdout
    [entry] = ok_json(config_path, "tokens", "list")
    assert entry["status"] == "revoked"
    table = ok(config_path, "tokens", "list").stdout
    assert created["id"] in table
    assert "revoked" in table


def test_tokens_create_text_output_and_never_expiring(config_path: Path, store: Store) -> None:
    result = ok(config_path, "tokens", "create", "--user", "bob", "--expires", "never")
    assert "Created token" in result.stdout
    assert "expires never" in result.stdout
    [info] = store.list_tokens()
    assert info.expires_at is None
    assert f"slc_{info.token_id}_" in result.stdout


def test_tokens_create_bad_duration(config_path: Path) -> None:
    result = run(config_path, "tokens", "create", "--user", "bob", "--expires", "5 years")
    assert result.exit_code == 2
    assert "is not a duration like 30m, 12h, 7d or 2w" in result.output


def test_tokens_create_requires_user(config_path: Path) -> None:
    result = run(config_path, "tokens", "create")
    assert result.exit_code == 2
    assert "--user" in result.output


def test_tokens_revoke_unknown(config_path: Path) -> None:
    result = run(config_path, "tokens", "revoke", "000000000000")
    assert result.exit_code == 1
    assert "no token with id '000000000000'" in result.stderr
    assert "sluice tokens list" in result.stderr


# connections


def test_connections_list_json(config_path: Path) -> None:
    conns = ok_json(config_path, "connections", "list")
    assert conns == [
        {
            "name": "prod",
            "type": "postgres",
            "host": "db.internal",
            "port": 5433,
            "database": "app",
            "user": "app",
            "tls": "require",
            "policy": "read-only",
            "masking": ["pii"],
            "access": {"users": ["alice"], "groups": ["dba"]},
        },
        {
            "name": "dev",
            "type": "postgres",
            "host": "localhost",
            "port": 5432,
            "database": "dev",
            "user": "dev",
            "tls": "prefer",
            "policy": None,
            "masking": [],
            "access": {"users": [], "groups": []},
        },
    ]


def test_connections_list_table(config_path: Path) -> None:
    out = ok(config_path, "connections", "list").stdout
    assert "db.internal:5433/app" in out
    assert "@dba" in out
    assert "everyone" in out


def test_config_from_environment_variable(
    config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_CONFIG", str(config_path))
    result = runner.invoke(app, ["connections", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert [c["name"] for c in json.loads(result.stdout)] == ["prod", "dev"]


# sessions


def add_session(
    store: Store, session_id: str, *, user: str = "alice", ended: bool = False, minutes_ago: int = 5
) -> None:
    store.start_session(
        session_id=session_id,
        identity=Identity(user=user, groups=("dba",)),
        connection="prod",
        protocol="postgres",
        client_addr="10.0.0.9:5555",
        started_at=utcnow() - dt.timedelta(minutes=minutes_ago),
    )
    if ended:
        store.end_session(
            session_id,
            ended_at=utcnow(),
            bytes_from_client=120,
            bytes_to_client=4096,
            statements=2,
            end_reason="client_terminated",
        )


def test_sessions_list_and_show_json(config_path: Path, store: Store) -> None:
    add_session(store, "11111111-aaaa-4000-8000-000000000001", ended=True, minutes_ago=10)
    add_session(store, "22222222-bbbb-4000-8000-000000000002", user="bob")
    sessions = ok_json(config_path, "sessions", "list")
    assert [s["id"] for s in sessions] == [
        "22222222-bbbb-4000-8000-000000000002",
        "11111111-aaaa-4000-8000-000000000001",
    ]
    assert sessions[1]["statements"] == 2
    assert sessions[1]["end_reason"] == "client_terminated"
    assert sessions[0]["ended_at"] is None
    assert [s["id"][:8] for s in ok_json(config_path, "sessions", "list", "--user", "bob")] == [
        "22222222"
    ]
    assert [s["id"][:8] for s in ok_json(config_path, "sessions", "list", "--active")] == [
        "22222222"
    ]
    assert len(ok_json(config_path, "sessions", "list", "--limit", "1")) == 1

    shown = ok_json(config_path, "sessions", "show", "1111")
    assert shown["id"] == "11111111-aaaa-4000-8000-000000000001"
    assert shown["bytes_to_client"] == 4096
    assert shown["client_addr"] == "10.0.0.9:5555"


def test_sessions_text_output(config_path: Path, store: Store) -> None:
    add_session(store, "11111111-aaaa-4000-8000-000000000001", ended=True)
    listed = ok(config_path, "sessions", "list").stdout
    assert "11111111" in listed
    assert "4.0 KiB" in listed
    shown = ok(config_path, "sessions", "show", "11111111-aaaa-4000-8000-000000000001").stdout
    assert "client_terminated" in shown


def test_sessions_show_unknown(config_path: Path, store: Store) -> None:
    result = run(config_path, "sessions", "show", "nope")
    assert result.exit_code == 1
    assert "no session 'nope'" in result.stderr


# credentials


def test_credentials_set_list_delete(config_path: Path, store: Store, tmp_path: Path) -> None:
    result = ok(config_path, "credentials", "set", "prod-app", "--value", "s3cret-pw")
    assert "Stored credential 'prod-app'" in result.stdout
    assert "s3cret-pw" not in result.output
    ciphertext = store.get_credential("prod-app")
    assert ciphertext is not None
    assert b"s3cret-pw" not in ciphertext
    assert Vault.open(tmp_path / "data", environ={}).decrypt(ciphertext) == "s3cret-pw"

    listed = ok_json(config_path, "credentials", "list")
    assert [c["name"] for c in listed] == ["prod-app"]
    assert "s3cret-pw" not in json.dumps(listed)
    assert "prod-app" in ok(config_path, "credentials", "list").stdout

    ok(config_path, "credentials", "delete", "prod-app")
    assert ok_json(config_path, "credentials", "list") == []
    again = run(config_path, "credentials", "delete", "prod-app")
    assert again.exit_code == 1
    assert "no stored credential 'prod-app'" in again.stderr


def test_credentials_set_prompts_for_the_secret(
    config_path: Path, store: Store, tmp_path: Path
) -> None:
    result = ok(config_path, "credentials", "set", "dev", input="typed-secret\n")
    assert "typed-secret" not in result.stdout
    ciphertext = store.get_credential("dev")
    assert ciphertext is not None
    assert Vault.open(tmp_path / "data", environ={}).decrypt(ciphertext) == "typed-secret"


def test_credentials_keygen_prints_a_fernet_key() -> None:
    result = runner.invoke(app, ["credentials", "keygen"])
    assert result.exit_code == 0
    Vault(result.stdout.strip().encode())


def test_credentials_set_with_bad_master_key(
    config_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_MASTER_KEY", "not-a-key")
    result = run(config_path, "credentials", "set", "x", "--value", "v")
    assert result.exit_code == 1
    assert "not a valid Fernet key" in result.stderr
    assert "sluice credentials keygen" in result.stderr


# Bad configuration


def test_bad_config_is_a_friendly_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data_dir: /tmp/x\nconnections:\n  - name: prod\n    hots: db\n")
    for args in (
        ["connections", "list"],
        ["tokens", "list"],
        ["sessions", "list", "--json"],
        ["credentials", "list"],
    ):
        result = run(path, *args)
        assert result.exit_code == 1, args
        assert isinstance(result.exception, SystemExit)
        assert "error:" in result.stderr
        assert f"{path}:4: connections.0.hots: unknown key" in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_yaml_syntax_error_is_a_friendly_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("listen:\n  postgres: [unclosed\n")
    result = run(path, "connections", "list")
    assert result.exit_code == 1
    assert "not valid YAML" in result.stderr
    assert str(path) in result.stderr


def test_missing_config_file_is_a_friendly_error(tmp_path: Path) -> None:
    result = run(tmp_path / "nope.yaml", "tokens", "list")
    assert result.exit_code == 1
    assert "cannot read config file" in result.stderr
    assert "hint:" in result.stderr


def test_bad_store_url_is_a_friendly_error(config_path: Path) -> None:
    result = runner.invoke(
        app, ["--config", str(config_path), "--store", "nodriver://x", "tokens", "list"]
    )
    assert result.exit_code == 1
    assert "cannot open the store" in result.stderr
    assert "Traceback" not in result.output
