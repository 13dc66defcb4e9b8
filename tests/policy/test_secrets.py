"""Secrets written into statement texts are replaced before anything keeps
the text; the rest of the statement, and what it parses to, stays."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.policy.secrets import redact_secrets
from sluice.policy.sql import classify

R = "'[REDACTED]'"


@pytest.mark.parametrize(
    ("sql", "redacted"),
    [
        ("ALTER ROLE bob PASSWORD 'hunter2'", f"ALTER ROLE bob PASSWORD {R}"),
        (
            "CREATE USER app WITH LOGIN ENCRYPTED PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a:b'",
            f"CREATE USER app WITH LOGIN ENCRYPTED PASSWORD {R}",
        ),
        ("ALTER ROLE bob PASSWORD E'it''s\\'s'", f"ALTER ROLE bob PASSWORD {R}"),
        (
            "CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password 'pw')",
            f"CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password {R})",
        ),
        (
            "ALTER USER MAPPING FOR bob SERVER s OPTIONS (SET \"password\" 'pw')",
            f'ALTER USER MAPPING FOR bob SERVER s OPTIONS (SET "password" {R})',
        ),
        (
            "CREATE SUBSCRIPTION s CONNECTION 'host=db password=pw' PUBLICATION p",
            f"CREATE SUBSCRIPTION s CONNECTION {R} PUBLICATION p",
        ),
        ("SELECT dblink_connect('host=x PASSWORD = pw')", f"SELECT dblink_connect({R})"),
        (
            "SELECT pgcrypto.pgp_sym_decrypt(body, 'key'), 'kept' FROM notes",
            f"SELECT pgcrypto.pgp_sym_decrypt(body, {R}), 'kept' FROM notes",
        ),
        (
            "SELECT crypt($$pw$$, gen_salt('bf')) = pw_hash FROM users WHERE name = 'bob'",
            f"SELECT crypt({R}, gen_salt({R})) = pw_hash FROM users WHERE name = 'bob'",
        ),
        ("SELECT 'é', hmac(x, 'k', 'md5')", f"SELECT 'é', hmac(x, {R}, {R})"),
        # Not secrets: left as they are.
        ("SELECT 'forgot your password?' FROM t", "SELECT 'forgot your password?' FROM t"),
        ("SELECT password_hash FROM users", "SELECT password_hash FROM users"),
        ("SET password_encryption = 'scram-sha-256'", "SET password_encryption = 'scram-sha-256'"),
        ("SELECT encrypted FROM t", "SELECT encrypted FROM t"),
        # The lexer rejects it: cut at the first secret word.
        ("ALTER ROLE bob PASSWORD 'unterminated", "ALTER ROLE bob [REDACTED]"),
    ],
)
def test_secret_literals_are_replaced(sql: str, redacted: str) -> None:
    assert redact_secrets(sql) == redacted


def test_a_redacted_text_parses_to_the_same_kind_of_statement() -> None:
    for sql in (
        "ALTER ROLE bob PASSWORD 'x'; SELECT pgp_sym_encrypt('d', 'k')",
        "CREATE USER MAPPING FOR bob SERVER s OPTIONS (password 'x')",
    ):
        before, after = classify(sql).statements, classify(redact_secrets(sql)).statements
        assert [(s.kind, s.categories) for s in before] == [(s.kind, s.categories) for s in after]


@settings(max_examples=300, deadline=None)
@given(
    secret=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1),
    prefix=st.text(st.sampled_from("aé中 ,'"), max_size=12),
)
def test_no_password_survives(secret: str, prefix: str) -> None:
    """Whatever a password holds and whatever comes before it, no character
    run of it is left once the literal is quoted as PostgreSQL quotes it."""
    literal = "'" + secret.replace("'", "''") + "'"
    sql = f"SELECT '{prefix.replace(chr(39), '')}'; ALTER ROLE bob PASSWORD {literal}"
    redacted = redact_secrets(sql)
    assert redacted.endswith(f"PASSWORD {R}")


SQLISH = st.lists(
    st.sampled_from([*"abcé中 '\"$\\;(),=-\n*/Ee&U", "PASSWORD ", "crypt("]), max_size=40
).map("".join)


@settings(max_examples=500, deadline=None)
@given(sql=SQLISH)
def test_any_text_is_redacted_without_raising(sql: str) -> None:
    """Garbage, unterminated quotes and comments included: the function
    returns a text, and one without secret words comes back unchanged."""
    redacted = redact_secrets(sql)
    if not any(word in sql.lower() for word in ("password", "crypt", "hmac", "pgp_")):
        assert redacted is sql
