"""Startup settings as the server reads them: parameters and `options`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.policy.sql import classify
from sluice.protocols.postgres.settings import (
    UnreadableOptions,
    as_set_statement,
    split_options,
    startup_settings,
)


def test_options_split_at_unescaped_whitespace() -> None:
    assert split_options("  -c a=1   -c\tb=two\\ words  ") == ["-c", "a=1", "-c", "b=two words"]
    assert split_options("-c x=back\\\\slash") == ["-c", "x=back\\slash"]
    assert split_options("") == []


def test_every_setting_is_found() -> None:
    parameters = {
        "user": "agent",
        "database": "app",
        "application_name": "psql",
        "search_path": "billing",
        "options": "-c role=admin -cstatement_timeout=5 --enable-seqscan=off",
    }
    assert startup_settings(parameters) == [
        ("application_name", "psql"),
        ("search_path", "billing"),
        ("role", "admin"),
        ("statement_timeout", "5"),
        ("enable_seqscan", "off"),
    ]


@pytest.mark.parametrize(
    "options", ["-O", "-B 100", "-d 5", "-c", "-c role", "--role", "stray", "-c a=1 \\"]
)
def test_options_that_are_not_settings_cannot_be_read(options: str) -> None:
    with pytest.raises(UnreadableOptions):
        startup_settings({"options": options})


@pytest.mark.parametrize(
    ("name", "value", "kind"),
    [
        ("search_path", "billing, public", "set"),
        ("role", "admin", "set_role"),
        ("Session_Authorization", "postgres", "set_session_authorization"),
        ("app.tenant", "x'; DROP TABLE t; --", "set"),
        ("weird name", "v", "set"),
    ],
)
def test_a_setting_reads_as_one_set_statement(name: str, value: str, kind: str) -> None:
    (statement,) = classify(as_set_statement(name, value)).statements
    assert statement.kind == kind


@given(st.text(), st.text(min_size=1).filter(lambda s: "\0" not in s))
def test_any_value_stays_one_statement(value: str, name: str) -> None:
    analysis = classify(as_set_statement(name, value))
    assert len(analysis.statements) == 1 or analysis.unparsable
