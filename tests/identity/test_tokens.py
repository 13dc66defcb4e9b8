"""Sluice tokens: format, parsing and hashing."""

from __future__ import annotations

import hashlib
import re

import pytest

from sluice.identity.tokens import (
    TOKEN_PREFIX,
    generate_token,
    hash_token,
    hashes_match,
    token_id_of,
)


def test_generated_token_format() -> None:
    new = generate_token()
    assert TOKEN_PREFIX == "slc_"
    assert re.fullmatch(r"[0-9a-f]{12}", new.token_id)
    assert new.plaintext.startswith(f"slc_{new.token_id}_")
    secret = new.plaintext[len(f"slc_{new.token_id}_") :]
    assert len(secret) >= 43  # 32 random bytes, url-safe base64
    assert new.secret_hash == hashlib.sha256(new.plaintext.encode()).hexdigest()
    assert token_id_of(new.plaintext) == new.token_id


def test_generated_tokens_are_unique() -> None:
    tokens = [generate_token() for _ in range(200)]
    assert len({t.plaintext for t in tokens}) == 200
    assert len({t.token_id for t in tokens}) == 200


def test_hash_is_sha256_hex() -> None:
    assert hash_token("slc_abc") == hashlib.sha256(b"slc_abc").hexdigest()
    assert len(hash_token("x")) == 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("slc_0123456789ab_secret", "0123456789ab"),
        ("slc_0123456789ab_sec_ret-with_underscores", "0123456789ab"),
        ("slc_0123456789ab_", None),
        ("slc_0123456789ab", None),
        ("slc_0123456789a_secret", None),
        ("slc_0123456789abc_secret", None),
        ("SLC_0123456789ab_secret", None),
        ("0123456789ab_secret", None),
        ("", None),
        ("password", None),
    ],
)
def test_token_id_of(text: str, expected: str | None) -> None:
    assert token_id_of(text) == expected


def test_hashes_match() -> None:
    assert hashes_match(hash_token("a"), hash_token("a"))
    assert not hashes_match(hash_token("a"), hash_token("b"))
    assert not hashes_match("abc", "abcd")
