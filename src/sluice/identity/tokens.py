"""Sluice tokens: generation, parsing and hashing.

A token reads `slc_<id>_<secret>`. The id is public (it names the token in
listings and audit); the secret is 32 random bytes, and the store keeps only
its SHA-256. A slow password hash is not needed: the secret has 256 bits of
entropy, so a leaked hash cannot be brute-forced.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "slc_"  # noqa: S105 - a public prefix, not a secret


@dataclass(frozen=True, slots=True, kw_only=True)
class NewToken:
    token_id: str
    plaintext: str
    secret_hash: str


def generate_token() -> NewToken:
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    plaintext = f"{TOKEN_PREFIX}{token_id}_{secret}"
    return NewToken(token_id=token_id, plaintext=plaintext, secret_hash=hash_token(plaintext))


def hash_token(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def token_id_of(plaintext: str) -> str | None:
    """The public id inside a well-formed token, or None."""
    if not plaintext.startswith(TOKEN_PREFIX):
        return None
    body = plaintext[len(TOKEN_PREFIX) :]
    token_id, sep, secret = body.partition("_")
    if not sep or len(token_id) != 12 or not secret:
        return None
    return token_id


def hashes_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
