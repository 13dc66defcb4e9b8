"""Shared fixtures: a throwaway PostgreSQL (SCRAM, TLS) and a gateway before it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice._compiled import hot_path_mode
from sluice.config import Config
from sluice.devservers.postgres import Role, ThrowawayPostgres, free_port
from tests.helpers import GatewayThread


def pytest_report_header() -> str:
    return f"sluice hot path: {hot_path_mode()}"


APP_PASSWORD = "app-secret-Xy7"
MD5_PASSWORD = "md5-secret-Q2"
PLAIN_PASSWORD = "plain-secret-W9"


@pytest.fixture(scope="session")
def pg() -> Iterator[ThrowawayPostgres]:
    """One throwaway PostgreSQL for the whole run: SCRAM passwords, TLS on."""
    roles = (
        Role(name="app", password=APP_PASSWORD),
        Role(name="md5user", password=MD5_PASSWORD, auth="md5"),
        Role(name="plainuser", password=PLAIN_PASSWORD, auth="password"),
        Role(name="trustuser", password=None, auth="trust"),
    )
    with ThrowawayPostgres(roles=roles, databases=("app",)) as server:
        server.psql("ALTER ROLE app CREATEDB")
        yield server


def base_config(
    pg: ThrowawayPostgres,
    data_dir: Path,
    *,
    policy: str | None = None,
    masking: tuple[str, ...] = (),
    masking_profiles: list[dict[str, object]] | None = None,
    **overrides: object,
) -> Config:
    """The test gateway's configuration; `masking` names the main connection's
    profiles, `masking_profiles` defines them (the `masking:` section)."""
    os.environ["SLUICE_TEST_APP_PASSWORD"] = APP_PASSWORD
    pwfile = data_dir / "md5.pw"
    data_dir.mkdir(parents=True, exist_ok=True)
    pwfile.write_text(MD5_PASSWORD + "\n")
    raw: dict[str, object] = {
        "data_dir": str(data_dir),
        "listen": {"postgres": "127.0.0.1:0"},
        "limits": {"message_stall_timeout": 2, "auth_timeout": 5},
        "connections": [
            {
                "name": "app",
                "host": "127.0.0.1",
                "port": pg.port,
                "database": "app",
                "user": "app",
                "password": {"env": "SLUICE_TEST_APP_PASSWORD"},
                "tls": {
                    "mode": "verify-full",
                    "ca_file": str(pg.ca_file),
                    "server_name": "localhost",
                },
                "policy": policy,
                "masking": list(masking),
            },
            {
                "name": "app-md5",
                "host": "127.0.0.1",
                "port": pg.port,
                "database": "app",
                "user": "md5user",
                "password": {"file": str(pwfile)},
                "tls": {"mode": "disable"},
            },
            {
                "name": "app-plain",
                "host": "127.0.0.1",
                "port": pg.port,
                "database": "app",
                "user": "plainuser",
                "password": {"stored": "plain"},
                "tls": {"mode": "require"},
            },
            {
                "name": "app-trust",
                "host": "127.0.0.1",
                "port": pg.port,
                "database": "app",
                "user": "trustuser",
                "tls": {"mode": "prefer"},
            },
            {
                "name": "ops-only",
                "host": "127.0.0.1",
                "port": pg.port,
                "database": "app",
                "user": "app",
                "password": {"env": "SLUICE_TEST_APP_PASSWORD"},
                "access": {"groups": ["ops"]},
            },
            {
                "name": "down",
                "host": "127.0.0.1",
                "port": free_port(),
                "database": "app",
                "user": "app",
                "password": {"env": "SLUICE_TEST_APP_PASSWORD"},
                "connect_timeout": 3,
            },
        ],
    }
    if masking_profiles is not None:
        raw["masking"] = {"profiles": masking_profiles}
    raw.update(overrides)
    return Config.model_validate(raw)


@pytest.fixture(scope="module")
def gateway(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    """A pass-through gateway (no policy) in front of `pg`."""
    data_dir = tmp_path_factory.mktemp("gateway")
    thread = GatewayThread(base_config(pg, data_dir)).start()
    assert thread.gateway is not None
    thread.gateway.store.put_credential("plain", thread.gateway.vault.encrypt(PLAIN_PASSWORD))
    yield thread
    thread.stop()
