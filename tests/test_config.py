"""Loading sluice.yaml: errors name the file, the line and the fix."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from sluice.config import (
    DEFAULT_POSTGRES_LISTEN,
    Access,
    Config,
    EnvCredential,
    FileCredential,
    StoredCredential,
    load_config,
    parse_host_port,
)
from sluice.errors import ConfigError

VALID = """\
data_dir: /var/lib/sluice
listen:
  postgres: 0.0.0.0:6432
tls:
  cert_file: /etc/sluice/cert.pem
  key_file: /etc/sluice/key.pem
limits:
  max_client_message: 1048576
connections:
  - name: prod
    host: db.internal
    port: 5433
    database: app
    user: sluice_app
    password: {env: PROD_PG_PASSWORD}
    tls: {mode: verify-full, ca_file: /etc/ssl/ca.pem, server_name: db.internal}
    access: {users: [alice], groups: [dba]}
    policy: read-only
    masking: [pii]
  - name: analytics.eu-1
    host: 10.0.0.5
    database: warehouse
    user: reader
    password: {file: /run/secrets/analytics}
  - name: staging
    host: staging
    database: app
    user: app
    password: {stored: staging-app}
policies:
  - name: agent
    extends: ai-agent
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sluice.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def config_error(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    return str(info.value)


def test_valid_file_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), environ={})
    assert config.data_dir == Path("/var/lib/sluice")
    assert config.listen.postgres == "0.0.0.0:6432"
    assert config.limits.max_client_message == 1048576
    assert config.limits.max_startup_message == 10_000
    assert [c.name for c in config.connections] == ["prod", "analytics.eu-1", "staging"]
    prod = config.connection("prod")
    assert prod is not None
    assert (prod.host, prod.port, prod.database, prod.user) == (
        "db.internal",
        5433,
        "app",
        "sluice_app",
    )
    assert prod.password == EnvCredential(env="PROD_PG_PASSWORD")
    assert prod.tls.mode == "verify-full"
    assert prod.tls.ca_file == Path("/etc/ssl/ca.pem")
    assert prod.access == Access(users=("alice",), groups=("dba",))
    assert prod.masking == ("pii",)
    analytics = config.connection("analytics.eu-1")
    assert analytics is not None
    assert analytics.port == 5432
    assert analytics.password == FileCredential(file=Path("/run/secrets/analytics"))
    assert analytics.tls.mode == "prefer"
    staging = config.connection("staging")
    assert staging is not None
    assert staging.password == StoredCredential(stored="staging-app")
    assert config.connection("nope") is None
    assert config.policies == ({"name": "agent", "extends": "ai-agent"},)
    assert config.store is None
    assert config.store_url == f"sqlite:///{(Path('/var/lib/sluice') / 'sluice.db').resolve()}"


def test_defaults_without_a_file() -> None:
    config = load_config(None, environ={})
    assert config == Config()
    assert config.listen.postgres == DEFAULT_POSTGRES_LISTEN
    assert config.store_url == f"sqlite:///{(Path('.sluice') / 'sluice.db').resolve()}"


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), environ={}) == Config()
    assert load_config(write(tmp_path, "# nothing\n"), environ={}) == Config()


def test_access_permits() -> None:
    assert Access().permits("anyone", ())
    access = Access(users=("alice",), groups=("dba",))
    assert access.permits("alice", ())
    assert access.permits("bob", ("dev", "dba"))
    assert not access.permits("bob", ("dev",))


def test_unknown_key_names_file_line_and_fix(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        data_dir: /tmp/x
        connections:
          - name: prod
            host: db
            database: app
            usr: app
        """,
    )
    message = config_error(path)
    assert f"{path}:6: connections.0.usr: unknown key; check its spelling" in message
    # ...and the key it replaced is reported missing, on the entry's line.
    assert f"{path}:3: connections.0.user: required; add it" in message


def test_unknown_capitalised_top_level_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        data_dir: /tmp/x
        Listen:
          postgres: 127.0.0.1:1
        """,
    )
    assert f"{path}:2: Listen: unknown key" in config_error(path)


def test_missing_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        connections:
          - name: prod
            host: db
            user: app
        """,
    )
    assert f"{path}:2: connections.0.database: required; add it" in config_error(path)


@pytest.mark.parametrize(
    ("port", "fix"),
    [
        ("0", "greater than or equal to 1"),
        ("65536", "less than or equal to 65535"),
        ("http", "valid integer"),
    ],
)
def test_bad_port(tmp_path: Path, port: str, fix: str) -> None:
    path = write(
        tmp_path,
        f"""\
        connections:
          - name: prod
            host: db
            database: app
            user: app

            port: {port}
        """,
    )
    message = config_error(path)
    assert f"{path}:7: connections.0.port:" in message
    assert fix in message


@pytest.mark.parametrize("name", ["bad name", "-starts-with-dash", "x" * 64, "semi;colon", ""])
def test_bad_connection_name(tmp_path: Path, name: str) -> None:
    path = write(
        tmp_path,
        f"""\
        connections:
          - host: db
            database: app
            user: app
            name: "{name}"
        """,
    )
    message = config_error(path)
    assert f"{path}:5: connections.0.name: connection names are 1-63 letters" in message


def test_duplicate_connection(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        connections:
          - name: prod
            host: db
            database: app
            user: app
          - host: db2
            database: app
            user: app
            name: prod
        """,
    )
    message = config_error(path)
    assert (
        f"{path}:9: connections.1.name: connection 'prod' is declared twice (first on line 2)"
        in message
    )
    assert "give each connection its own name" in message
    assert "(top level)" not in message


def test_duplicate_connection_reported_with_other_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        connections:
          - name: prod
            host: db
            database: app
            user: app
            port: -1
          - name: prod
            host: db2
            database: app
            user: app
        """,
    )
    message = config_error(path)
    assert f"{path}:6: connections.0.port" in message
    assert f"{path}:7: connections.1.name: connection 'prod' is declared twice" in message


def test_duplicate_connection_in_code_still_refused() -> None:
    conn = {"name": "a", "host": "h", "database": "d", "user": "u"}
    with pytest.raises(ValueError, match="declared twice"):
        Config.model_validate({"connections": [conn, conn]})


@pytest.mark.parametrize("listen", ["15432", "localhost", ":15432", "host:99999", "host:port"])
def test_bad_listen_address(tmp_path: Path, listen: str) -> None:
    path = write(
        tmp_path,
        f"""\
        data_dir: /tmp/x
        listen:
          postgres: "{listen}"
        """,
    )
    message = config_error(path)
    assert f"{path}:3: listen.postgres: '{listen}' is not host:port" in message
    assert "(e.g. 127.0.0.1:15432)" in message


def test_parse_host_port() -> None:
    assert parse_host_port("127.0.0.1:15432") == ("127.0.0.1", 15432)
    assert parse_host_port("[::1]:5432") == ("::1", 5432)
    assert parse_host_port("0.0.0.0:0") == ("0.0.0.0", 0)  # noqa: S104
    with pytest.raises(ValueError, match="not host:port"):
        parse_host_port("nope")


def test_bad_credential_reference_is_one_clear_problem(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        connections:
          - name: prod
            host: db
            database: app
            user: app
            password: {envv: PGPASSWORD}
        """,
    )
    message = config_error(path)
    problems = [line for line in message.splitlines() if "password" in line]
    assert problems == [
        f"  {path}:6: connections.0.password: a credential is {{env: VARIABLE}}, "
        "{file: PATH} or {stored: NAME}"
    ]


def test_plain_string_password_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        connections:
          - name: prod
            host: db
            database: app
            user: app
            password: hunter2
        """,
    )
    message = config_error(path)
    assert f"{path}:6: connections.0.password: a credential is" in message
    assert "hunter2" not in message


def test_tls_needs_both_files(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        tls:
          cert_file: /etc/cert.pem
        """,
    )
    message = config_error(path)
    assert f"{path}:1: tls: set both tls.cert_file and tls.key_file, or neither" in message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        data_dir: /tmp/x
        listen:
          postgres: "127.0.0.1:1
        connections: []
        """,
    )
    message = config_error(path)
    assert re.search(rf"^{re.escape(str(path))}:\d+: not valid YAML", message)
    line = int(message.split(":")[1])
    assert 3 <= line <= 5


def test_yaml_bad_indentation_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "data_dir: /tmp/x\nlisten:\n  postgres: a:1\n bad: 2\n")
    assert config_error(path).startswith(f"{path}:4: not valid YAML")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- a\n- b\n")
    assert config_error(path).startswith(f"{path}:1: the top level must be a mapping")


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="cannot read config file") as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)
    assert info.value.hint is not None
    assert "--config" in info.value.hint


def test_env_overrides_apply(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    config = load_config(
        path,
        environ={
            "SLUICE_LISTEN__POSTGRES": "127.0.0.1:7777",
            "SLUICE_STORE": "postgresql://sluice@db/sluice",
            "SLUICE_LIMITS__AUTH_TIMEOUT": "5",
        },
    )
    assert config.listen.postgres == "127.0.0.1:7777"
    assert config.store == "postgresql://sluice@db/sluice"
    assert config.store_url == "postgresql://sluice@db/sluice"
    assert config.limits.auth_timeout == 5.0
    assert config.limits.max_client_message == 1048576  # untouched


def test_env_overrides_without_a_file() -> None:
    config = load_config(None, environ={"SLUICE_LISTEN__POSTGRES": "0.0.0.0:1"})
    assert config.listen.postgres == "0.0.0.0:1"


def test_env_override_is_validated(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    message = config_error(path, {"SLUICE_LISTEN__POSTGRES": "nope"})
    assert "listen.postgres: 'nope' is not host:port" in message


def test_env_override_of_a_value_that_is_not_a_section(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    with pytest.raises(ConfigError, match="SLUICE_DATA_DIR__X overrides 'data_dir'"):
        load_config(path, environ={"SLUICE_DATA_DIR__X": "1"})


def test_unrelated_sluice_variables_are_not_config(tmp_path: Path) -> None:
    # A backend password kept in SLUICE_* for `password: {env: ...}`, the master
    # key and the config path must not be read as sections.
    path = write(tmp_path, VALID)
    config = load_config(
        path,
        environ={
            "SLUICE_PG_PASSWORD": "hunter2",
            "SLUICE_DEMO_PASSWORD": "x",
            "SLUICE_MASTER_KEY": "k",
            "SLUICE_CONFIG": str(path),
            "PATH": "/usr/bin",
        },
    )
    assert config == load_config(path, environ={})


def test_os_environ_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_LISTEN__POSTGRES", "127.0.0.1:9999")
    assert load_config(write(tmp_path, VALID)).listen.postgres == "127.0.0.1:9999"


def test_credential_reference_forms(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        connections:
          - {name: a, host: h, database: d, user: u, password: {env: A_PASSWORD}}
          - {name: b, host: h, database: d, user: u, password: {file: ./secret.txt}}
          - {name: c, host: h, database: d, user: u, password: {stored: c-cred}}
          - {name: d, host: h, database: d, user: u}
        """,
    )
    config = load_config(path, environ={})
    assert [c.password for c in config.connections] == [
        EnvCredential(env="A_PASSWORD"),
        FileCredential(file=Path("secret.txt")),
        StoredCredential(stored="c-cred"),
        None,
    ]


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(ValueError, match="frozen"):
        config.store = "x"  # type: ignore[misc]
