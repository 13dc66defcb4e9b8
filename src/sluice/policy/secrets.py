"""Secrets written into statement texts, kept out of everything the gateway
stores or shows: recordings, audit events, approval requests.

PostgreSQL takes some secrets as string literals in SQL:

- role passwords: `CREATE ROLE ... PASSWORD 'x'`, `ALTER USER ... ENCRYPTED
  PASSWORD 'SCRAM-SHA-256$...'` (a verifier can be attacked offline too);
- foreign servers' and user mappings' options: `OPTIONS (password 'x')`;
- connection strings: `CREATE SUBSCRIPTION ... CONNECTION '... password=x'`,
  `dblink_connect('... password=x')`;
- keys and passwords given to pgcrypto: `pgp_sym_encrypt(data, 'key')`,
  `crypt('password', salt)`, `hmac(data, 'key', 'sha256')`.

Each such literal is replaced by `'[REDACTED]'`, so the text still parses
to the same statement (recordings are judged again on replay). The server
gets the statement as sent.
"""

from __future__ import annotations

import re
from typing import Final

from pglast.parser import scan

from sluice.policy.prepared import mentions_words
from sluice.policy.sql import replace_spans

REDACTED_LITERAL: Final = "'[REDACTED]'"

_WORDS: Final = ("password", "crypt", "hmac", "pgp_")
_WORDS_RE: Final = re.compile("|".join(_WORDS), re.IGNORECASE)

CRYPTO_FUNCTIONS: Final = frozenset(
    {
        "crypt",
        "hmac",
        "encrypt",
        "decrypt",
        "encrypt_iv",
        "decrypt_iv",
        "pgp_sym_encrypt",
        "pgp_sym_encrypt_bytea",
        "pgp_sym_decrypt",
        "pgp_sym_decrypt_bytea",
        "pgp_pub_decrypt",
        "pgp_pub_decrypt_bytea",
    }
)
"""pgcrypto functions whose string arguments are keys, passwords or what they
protect: every string literal inside their parentheses is redacted."""

_STRING_TOKENS: Final = frozenset({"SCONST", "USCONST"})
_CONNINFO_PASSWORD: Final = re.compile(r"password\s*=", re.IGNORECASE)


def redact_secrets(sql: str) -> str:
    """`sql` with the string literals that hold secrets replaced (see the
    module). A text the lexer rejects is cut at its first secret word."""
    if not mentions_words(sql, _WORDS, _WORDS_RE):
        return sql
    try:
        tokens = scan(sql)
    except Exception:  # pglast raises its own errors
        match = _WORDS_RE.search(sql)
        assert match is not None
        return sql[: match.start()] + "[REDACTED]"
    spans: list[tuple[int, int]] = []
    after_password = False  # the previous token names a password
    crypto_depth = 0  # parenthesis depth inside a pgcrypto call; 0 outside
    pending_call = False  # the previous token names a pgcrypto function
    for token in tokens:
        name = token.name
        text = sql[token.start : token.end + 1]  # the lexer's offsets count characters
        if name in _STRING_TOKENS and (
            crypto_depth or after_password or _CONNINFO_PASSWORD.search(text)
        ):
            spans.append((token.start, token.end + 1))
        if name == "ASCII_40":  # (
            if crypto_depth or pending_call:
                crypto_depth += 1
        elif name == "ASCII_41" and crypto_depth:  # )
            crypto_depth -= 1
        word = text.strip('"').lower() if name == "IDENT" else ""
        pending_call = word in CRYPTO_FUNCTIONS
        after_password = name == "PASSWORD" or word == "password"
    return replace_spans(sql, spans, REDACTED_LITERAL) if spans else sql
