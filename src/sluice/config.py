"""The configuration file (`sluice.yaml`): models, loading and validation.

Errors name the file, the line and the fix. Environment variables override
the file: `SLUICE_<SECTION>__<KEY>` (double underscore between levels), e.g.
`SLUICE_LISTEN__POSTGRES=0.0.0.0:15432` or `SLUICE_STORE=postgresql://...`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sluice.errors import ConfigError

DEFAULT_POSTGRES_LISTEN = "127.0.0.1:15432"
ENV_PREFIX = "SLUICE_"
CONNECTION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnvCredential(_Model):
    """The secret is read from an environment variable of the gateway."""

    env: str


class FileCredential(_Model):
    """The secret is read from a file (first line, whitespace stripped)."""

    file: Path


class StoredCredential(_Model):
    """The secret is stored encrypted in the store (`sluice credentials set`)."""

    stored: str


CredentialRef = EnvCredential | FileCredential | StoredCredential


class BackendTls(_Model):
    """TLS from the gateway to the backend, with libpq's sslmode meanings."""

    mode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    ca_file: Path | None = None
    server_name: str | None = None


class Access(_Model):
    """Who may use a connection; both empty means every authenticated user."""

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def permits(self, user: str, groups: tuple[str, ...]) -> bool:
        if not self.users and not self.groups:
            return True
        return user in self.users or any(g in self.groups for g in groups)


class ConnectionRecording(_Model):
    """Session recording of one connection (the log format is global: `recording:`)."""

    enabled: bool = True
    """False: no session log for this connection; audit events are still emitted."""
    required: bool = True
    """Fail closed: refuse statements when the session log cannot be written."""


class PoolSpec(_Model):
    """Opt-in reuse of authenticated backend sessions (reset with DISCARD ALL)."""

    size: int = Field(default=0, ge=0, le=10_000)
    max_idle_seconds: float = Field(default=300.0, gt=0)


class ConnectionSpec(_Model):
    """A target that clients reach through Sluice by its name."""

    name: str
    type: Literal["postgres"] = "postgres"
    host: str
    port: int = Field(default=5432, ge=1, le=65535)
    database: str
    user: str
    password: CredentialRef | None = None
    tls: BackendTls = BackendTls()
    access: Access = Access()
    policy: str | None = None
    masking: tuple[str, ...] = ()
    recording: ConnectionRecording = ConnectionRecording()
    pool: PoolSpec = PoolSpec()
    connect_timeout: float = Field(default=10.0, gt=0)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not CONNECTION_NAME.match(value):
            raise ValueError(
                "connection names are 1-63 letters, digits, '_', '.' or '-' "
                "(they are used as the client's dbname)"
            )
        return value


class ClientTls(_Model):
    """The certificate the gateway presents to clients.

    Without files, a self-signed certificate is generated on first run and
    kept in the data directory.
    """

    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _both_or_none(self) -> ClientTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both tls.cert_file and tls.key_file, or neither")
        return self


class Listen(_Model):
    postgres: str = DEFAULT_POSTGRES_LISTEN

    @field_validator("postgres")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_host_port(value)
        return value


class Limits(_Model):
    """Named limits that guard the gateway's buffers and waits."""

    # The largest single protocol message accepted from a client. PostgreSQL
    # itself accepts up to 1 GiB; a gateway in front of agents has no need to.
    max_client_message: int = Field(default=64 * 1024 * 1024, ge=1024)
    # The startup packet is small by nature; libpq's own cap is 10000 bytes.
    max_startup_message: int = Field(default=10_000, ge=256)
    # A client that has not finished authenticating after this is dropped.
    auth_timeout: float = Field(default=30.0, gt=0)
    # A client stalled in the middle of one message for this long is dropped.
    message_stall_timeout: float = Field(default=60.0, gt=0)
    # A session idle this long after a large read hands back the pages of its
    # TLS read buffers (up to 256 KiB per leg), and the heap is trimmed.
    idle_release_seconds: float = Field(default=2.0, gt=0)
    # Sessions served at once by the gateway, all its worker processes
    # together; more are refused with SQLSTATE 53300. Each process also
    # holds no more than its open-file limit leaves room for (a session
    # holds about three descriptors: its socket, its backend's, its log).
    max_sessions: int | None = Field(default=None, ge=1)
    # Sessions of one user at once through the gateway (unset: no cap of its
    # own), so one agent looping on new connections cannot take every slot.
    max_sessions_per_user: int | None = Field(default=None, ge=1)


class Config(_Model):
    """The whole configuration."""

    data_dir: Path = Path(".sluice")
    store: str | None = None
    listen: Listen = Listen()
    tls: ClientTls = ClientTls()
    limits: Limits = Limits()
    connections: tuple[ConnectionSpec, ...] = ()
    # Sections owned by other packages, validated by them when the gateway starts.
    policies: tuple[dict[str, Any], ...] = ()
    masking: dict[str, Any] = Field(default_factory=dict)
    recording: dict[str, Any] = Field(default_factory=dict)
    audit: dict[str, Any] = Field(default_factory=dict)
    approvals: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_connections(self) -> Config:
        seen: set[str] = set()
        for conn in self.connections:
            if conn.name in seen:
                raise ValueError(f"connection {conn.name!r} is declared twice")
            seen.add(conn.name)
        return self

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{(self.data_dir / 'sluice.db').resolve()}"

    def connection(self, name: str) -> ConnectionSpec | None:
        for conn in self.connections:
            if conn.name == name:
                return conn
        return None


def section_error(section: str, exc: ValidationError) -> ConfigError:
    """A section validated apart from the main model (policies, masking, audit...)."""
    problems = "; ".join(
        f"{section}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
    )
    return ConfigError(f"invalid {section} configuration: {problems}")


def parse_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:15432)")
    return host.strip("[]"), int(port)


def _line_index(text: str) -> dict[tuple[str | int, ...], int]:
    """Map each path in the YAML document to the 1-based line it starts on."""
    lines: dict[tuple[str | int, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        # A key's own line wins over the line its (block) value starts on.
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else str(key)
                lines[(*path, name)] = key.start_mark.line + 1
                walk(value, (*path, name))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return lines


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key in {"SLUICE_CONFIG", "SLUICE_MASTER_KEY"}:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        if path[0] not in Config.model_fields:
            # Not a section: e.g. a backend password in `SLUICE_PG_PASSWORD`
            # that a connection reads with `password: {env: ...}`.
            continue
        target = data
        for part in path[:-1]:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                raise ConfigError(f"environment variable {key} overrides {part!r}, not a section")
            target = nested
        target[path[-1]] = value
    return data


def load_config(path: Path | None, *, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate a config file (or the defaults when path is None)."""
    environ = os.environ if environ is None else environ
    text = ""
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"cannot read config file {path}: {exc.strerror}",
                hint="pass --config with the path of your sluice.yaml",
            ) from exc
    source = str(path) if path else "<defaults>"
    try:
        raw = yaml.safe_load(text) if text else {}
        lines = _line_index(text) if text else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}:1: the top level must be a mapping of sections")
    data = _apply_env(raw, environ)
    duplicates = _duplicate_connections(data, lines, source)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            if not loc and duplicates:
                continue  # the duplicate-name check, reported below with its line
            if any(_is_union_tag(p) for p in loc):
                # One problem per credential, not one per alternative of the union.
                loc = tuple(p for p in loc[: _first_tag(loc)])
                fix = "a credential is {env: VARIABLE}, {file: PATH} or {stored: NAME}"
            else:
                fix = _fix(err)
            line = _closest_line(lines, loc)
            dotted = ".".join(str(p) for p in loc) or "(top level)"
            problem = f"{source}:{line}: {dotted}: {fix}"
            if problem not in problems:
                problems.append(problem)
        problems.extend(duplicates)
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from exc


# Pydantic names the alternative of a union in an error's location.
_UNION_TAGS = frozenset(t.__name__ for t in (EnvCredential, FileCredential, StoredCredential))


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and part in _UNION_TAGS


def _first_tag(loc: tuple[Any, ...]) -> int:
    return next(i for i, p in enumerate(loc) if _is_union_tag(p))


def _duplicate_connections(
    data: dict[str, Any], lines: dict[tuple[str | int, ...], int], source: str
) -> list[str]:
    """Connections declared twice, each named with the line of the second one."""
    conns = data.get("connections")
    if not isinstance(conns, list):
        return []
    first: dict[str, int] = {}
    problems = []
    for index, conn in enumerate(conns):
        name = conn.get("name") if isinstance(conn, dict) else None
        if not isinstance(name, str):
            continue
        line = lines.get(("connections", index, "name"), lines.get(("connections", index), 1))
        if name in first:
            problems.append(
                f"{source}:{line}: connections.{index}.name: connection {name!r} is declared "
                f"twice (first on line {first[name]}); give each connection its own name"
            )
        else:
            first[name] = line
    return problems


def _closest_line(lines: dict[tuple[str | int, ...], int], loc: tuple[Any, ...]) -> int:
    path = tuple(p for p in loc if not _is_union_tag(p))
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get((), 1)


def _fix(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key; check its spelling against the documented sections"
    if kind == "missing":
        return "required; add it"
    msg: str = err["msg"]
    return msg.removeprefix("Value error, ")
