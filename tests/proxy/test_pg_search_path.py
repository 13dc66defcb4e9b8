"""A rule on a schema's table holds after the client changes its search_path."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from sluice.devservers.postgres import ThrowawayPostgres
from tests.conftest import APP_PASSWORD, base_config
from tests.helpers import GatewayThread

POLICIES = [
    {
        "name": "agent",
        "extends": "ai-agent",
        "rules": [
            {
                "name": "no-salaries",
                "when": {"tables": ["hr.salaries"]},
                "action": "block",
                "reason": "salaries are off limits",
            }
        ],
    }
]


@pytest.fixture(scope="module", autouse=True)
def schemas(pg: ThrowawayPostgres) -> None:
    with psycopg.connect(pg.dsn(user="app", password=APP_PASSWORD, dbname="app")) as conn:
        conn.execute(
            "DROP SCHEMA IF EXISTS hr CASCADE; CREATE SCHEMA hr; "
            "CREATE TABLE hr.salaries (name text, salary int); "
            "INSERT INTO hr.salaries VALUES ('ceo', 900000); "
            "DROP TABLE IF EXISTS public.salaries; "
            "CREATE TABLE public.salaries (name text, salary int); "
            "INSERT INTO public.salaries VALUES ('example', 1)"
        )


@pytest.fixture(scope="module")
def governed(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    config = base_config(
        pg, tmp_path_factory.mktemp("search-path"), policy="agent", policies=POLICIES
    )
    thread = GatewayThread(config).start()
    yield thread
    thread.stop()


@pytest.mark.parametrize(
    "change",
    [
        "SET search_path = hr, public",
        "SELECT set_config('search_path', 'hr', false)",
        'SET U&"search\\005fpath" = hr',
    ],
)
def test_unqualified_reads_after_a_search_path_change_are_held_to_the_rule(
    governed: GatewayThread, change: str
) -> None:
    token = governed.token(user="agent")
    with psycopg.connect(governed.dsn(token, user="agent"), autocommit=True) as conn:
        # Before: `salaries` is public.salaries, which no rule covers.
        assert conn.execute("SELECT salary FROM salaries").fetchall() == [(1,)]
        conn.execute(change)
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            conn.execute("SELECT salary FROM salaries")
        assert "search_path" in str(info.value)
        # A qualified name is judged as written; the session goes on.
        assert conn.execute("SELECT salary FROM public.salaries").fetchall() == [(1,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT salary FROM hr.salaries")


def test_a_change_in_the_same_query_string_counts(governed: GatewayThread) -> None:
    token = governed.token(user="agent")
    with (
        psycopg.connect(governed.dsn(token, user="agent"), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SET search_path = hr; SELECT salary FROM salaries")


@pytest.fixture(scope="module")
def masked(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    rule = {"match": "hr.salaries.salary", "strategy": "redact"}
    config = base_config(
        pg,
        tmp_path_factory.mktemp("search-path-masked"),
        masking=("hr",),
        masking_profiles=[{"name": "hr", "content": False, "columns": [rule]}],
    )
    thread = GatewayThread(config).start()
    yield thread
    thread.stop()


def test_column_rules_follow_an_unqualified_table_after_a_search_path_change(
    masked: GatewayThread,
) -> None:
    computed = "SELECT salary::text || ' per year' AS pay FROM salaries"
    token = masked.token(user="agent")
    with psycopg.connect(masked.dsn(token, user="agent"), autocommit=True) as conn:
        # public.salaries: no rule names it.
        assert conn.execute(computed).fetchall() == [("1 per year",)]
        conn.execute("SET search_path = hr")
        rows = conn.execute(computed).fetchall()  # hr.salaries now, or so it may be
        assert rows != [("900000 per year",)]
        assert "900000" not in repr(rows)
