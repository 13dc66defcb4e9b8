"""Statement text the backend would read otherwise than the policy's parser.

The policy parses text as UTF-8 with standard_conforming_strings on. With the
setting off, a backslash in a '...' string escapes the next character, so
`SELECT '\\'' ; DROP TABLE t; --'` is one harmless string to the parser and a
DROP to the server; under a client-only client_encoding (GBK, SJIS, ...) a
multibyte character can swallow the backslash of `E'...\\'`. The gateway
follows both settings from the backend's ParameterStatus messages and refuses
such text whenever the two readings could differ. Real clients against the
throwaway PostgreSQL, with the ai-agent preset.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sluice.devservers.postgres import ThrowawayPostgres
from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.framing import frame
from sluice.proxy.pg_session import PgSession
from tests.conftest import APP_PASSWORD
from tests.helpers import GatewayThread
from tests.proxy.test_pg_session_reads import Collect, _session

ATTACK = "SELECT '\\'' ; DROP TABLE victims; --'"
# The same after multibyte text: the lexer's offsets count characters.
WIDE_ATTACK = "SELECT 'ééééééééééééééééééééé', '\\'' ; DROP TABLE victims; --'"
# UTF-8 bytes of "中" then a backslash: GBK reads E4 B8 / AD 5C, two characters,
# so the backslash is gone and the quote after it ends the string.
GBK_ATTACK = "SELECT E'中\\' ; DROP TABLE victims; --'".encode()


@pytest.fixture(scope="module")
def gateway(agent_gateway: GatewayThread) -> GatewayThread:
    return agent_gateway


@pytest.fixture(scope="module")
def agent(gateway: GatewayThread) -> str:
    return gateway.token("agent", groups=("agents",))


@pytest.fixture(autouse=True)
def victims(pg: ThrowawayPostgres) -> Iterator[str]:
    dsn = pg.dsn(user="app", password=APP_PASSWORD, dbname="app")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS victims")
        conn.execute("CREATE TABLE victims (id int)")
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('victims')").fetchone() == ("victims",)


def _refused(conn: psycopg.Connection[tuple[object, ...]], sql: str | bytes, why: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
        conn.execute(sql)
    diag = info.value.diag
    assert diag.message_primary is not None
    assert diag.message_primary.startswith("blocked by Sluice")
    assert why in diag.message_primary
    assert diag.message_hint == "policy rule: ambiguous-sql"


def test_standard_conforming_strings_off_cannot_hide_a_statement(
    gateway: GatewayThread, agent: str
) -> None:
    with psycopg.connect(gateway.dsn(agent, user="agent"), autocommit=True) as conn:
        conn.execute("SET standard_conforming_strings = off")
        _refused(conn, ATTACK, "standard_conforming_strings is off")
        _refused(conn, WIDE_ATTACK, "standard_conforming_strings is off")
        # Strings that read the same either way still run.
        assert conn.execute("SELECT E'a\\\\b', 'plain'").fetchone() == ("a\\b", "plain")
        conn.execute("SET standard_conforming_strings = on")
        assert conn.execute("SELECT 'a\\b'").fetchone() == ("a\\b",)


def test_set_config_and_startup_options_are_followed(gateway: GatewayThread, agent: str) -> None:
    with psycopg.connect(gateway.dsn(agent, user="agent"), autocommit=True) as conn:
        conn.execute("SELECT set_config('standard_conforming_strings', 'off', false)")
        _refused(conn, ATTACK, "standard_conforming_strings is off")
    dsn = gateway.dsn(agent, user="agent", options="-c standard_conforming_strings=off")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SHOW standard_conforming_strings").fetchone() == ("off",)
        _refused(conn, ATTACK, "standard_conforming_strings is off")


def test_a_client_only_encoding_cannot_swallow_a_backslash(
    gateway: GatewayThread, agent: str
) -> None:
    with psycopg.connect(gateway.dsn(agent, user="agent"), autocommit=True) as conn:
        conn.execute("SET client_encoding = 'GBK'")
        _refused(conn, GBK_ATTACK, "client_encoding is GBK")
        assert conn.execute(b"SELECT 'ascii only'").fetchone() == ("ascii only",)
        conn.execute("SET client_encoding = 'UTF8'")
        assert conn.execute("SELECT 'José'").fetchone() == ("José",)


def test_a_pipelined_setting_change_is_not_raced(gateway: GatewayThread, agent: str) -> None:
    """The attack sent right behind the SET that turns the setting off, before
    the backend reported it: refused, since it could read either way."""
    with psycopg.connect(gateway.dsn(agent, user="agent"), autocommit=True) as conn:

        def pipelined() -> None:
            with conn.pipeline():
                conn.execute("SET standard_conforming_strings = off")
                conn.execute(ATTACK)

        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            pipelined()
        assert "statements still running before it" in str(info.value)
        # The refusal failed the batch, and the SET with it: the text is now
        # read as the policy reads it, one string.
        assert conn.execute("SHOW standard_conforming_strings").fetchone() == ("on",)
        assert conn.execute(ATTACK).fetchone() == ("\\' ; DROP TABLE victims; --",)


# The session's bookkeeping, driven without sockets: what reaches the backend.

ON_UTF8 = {"standard_conforming_strings": "on", "client_encoding": "UTF8"}
BACKSLASH = "SELECT 'C:\\temp'"
SETS = "SELECT set_config('application_name', 'agent', false)"  # changes a setting


def _status(name: str, value: str) -> bytes:
    return m.parameter_status(name, value)


def _sent(session: PgSession) -> bytes:
    backend = session.backend
    assert isinstance(backend, Collect)
    return bytes(backend.data)


def _answer(session: PgSession, *before: bytes) -> None:
    """The backend's answer to one statement: `before`, then done and ready."""
    session.backend_data(b"".join(before) + m.command_complete("SELECT 1") + m.ready_for_query("I"))


def test_settings_are_followed_from_the_backends_reports(tmp_path: Path) -> None:
    with _session(tmp_path, governed=True, parameters=ON_UTF8) as (session, _):
        session.client_data(m.encode_query(BACKSLASH))
        assert BACKSLASH.encode() in _sent(session)
        _answer(session, _status("standard_conforming_strings", "off"))
        session.client_data(m.encode_query(BACKSLASH + " AS again"))
        assert b"again" not in _sent(session)
        _answer(session)  # the gateway's own refusal, as the backend fails it
        session.client_data(m.encode_query("SELECT E'C:\\\\temp' AS escaped"))
        assert b"escaped" in _sent(session)
        _answer(session, _status("client_encoding", "SJIS"))
        session.client_data(m.encode_query("SELECT 'caf\u00e9'"))
        assert "caf\u00e9".encode() not in _sent(session)


def test_text_behind_unanswered_statements_is_refused(
    tmp_path: Path,
) -> None:
    with _session(tmp_path, governed=True, parameters=ON_UTF8) as (session, _):
        # Two simple queries in one read: the second may be read under a
        # setting the first changes.
        session.client_data(m.encode_query(SETS) + m.encode_query("SELECT 'caf\u00e9'"))
        assert "caf\u00e9".encode() not in _sent(session)
        _answer(session)
        _answer(session)
        session.client_data(m.encode_query("SELECT 'caf\u00e9' AS later"))
        assert b"later" in _sent(session)
        _answer(session)
        # The extended protocol: an Execute before its Sync is still running.
        session.client_data(
            frame(b"P", b"\0" + SETS.encode() + b"\0\0\0")
            + frame(b"B", b"\0\0\0\0\0\0\0\0")
            + frame(b"E", b"\0\0\0\0\0")
            + frame(b"P", b"\0" + BACKSLASH.encode() + b" AS pending\0\0\0")
        )
        assert b"pending" not in _sent(session)
        session.client_data(frame(b"S", b""))
        session.backend_data(m.ready_for_query("I"))
        session.client_data(frame(b"P", b"\0" + BACKSLASH.encode() + b" AS settled\0\0\0"))
        assert b"settled" in _sent(session)


def test_unreported_settings_count_as_unsafe(tmp_path: Path) -> None:
    with _session(tmp_path, governed=True) as (session, _):
        session.client_data(m.encode_query(BACKSLASH))
        session.client_data(m.encode_query("SELECT 'plain'"))
        assert BACKSLASH.encode() not in _sent(session)
        assert b"plain" in _sent(session)


def test_ungoverned_sessions_pass_any_text(tmp_path: Path) -> None:
    """Nothing is decided from the parse without policy or masking."""
    with _session(tmp_path, governed=False) as (session, _):
        session.client_data(m.encode_query(BACKSLASH) + m.encode_query("SELECT 'caf\u00e9'"))
        assert BACKSLASH.encode() in _sent(session)
        assert "caf\u00e9".encode() in _sent(session)


def test_the_refusal_names_every_setting_the_text_depends_on(tmp_path: Path) -> None:
    with _session(tmp_path, governed=True, parameters=ON_UTF8) as (session, client):
        text = "SELECT 'caf\u00e9 \\ bar'"
        session.client_data(m.encode_query(SETS) + m.encode_query(text))
        assert text.encode() not in _sent(session)
        _answer(session)
        marker = re.search(rb'SELECT "(sluice-[0-9a-f]+)"', _sent(session))
        assert marker is not None
        session.backend_data(
            m.error_response("42703", f'column "{marker.group(1).decode()}" does not exist')
            + m.ready_for_query("I")
        )
        assert b"standard_conforming_strings and client_encoding, which" in client.data
