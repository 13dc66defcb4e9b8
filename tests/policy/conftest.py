"""Shared helpers for policy tests."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from sluice.events import Identity, Protocol, QueryOrigin, QueryRequested, SessionContext
from sluice.policy import PolicyEngine, PolicySpec


def make_context(user: str = "agent", groups: tuple[str, ...] = ()) -> SessionContext:
    return SessionContext(
        session_id="s1",
        identity=Identity(user=user, groups=groups),
        connection="prod",
        protocol=Protocol.POSTGRES,
        client_addr="127.0.0.1:5000",
    )


def query(
    sql: str,
    *,
    origin: QueryOrigin = QueryOrigin.SIMPLE,
    statement_name: str | None = None,
    user: str = "agent",
    groups: tuple[str, ...] = (),
) -> QueryRequested:
    return QueryRequested(
        context=make_context(user, groups),
        sql=sql,
        origin=origin,
        statement_name=statement_name,
    )


def compile_policies(*docs: Mapping[str, object]) -> PolicyEngine:
    return PolicyEngine.compile([PolicySpec.model_validate(doc) for doc in docs])


@pytest.fixture(scope="session")
def engine() -> PolicyEngine:
    """Built-in presets only."""
    return PolicyEngine.compile([])
