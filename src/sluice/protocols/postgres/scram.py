"""The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677), without channel binding.

Written here rather than taken from scramp for one reason: the expensive
step, Hi() (PBKDF2 with the server's salt and iteration count, 4096 rounds
by default), depends only on the password, salt and count, which are the
same for every connection of a role. Caching its result, as pgbouncer does
with its SCRAM keys, takes several milliseconds of CPU off every new backend
connection. The cache lives in process memory only and is keyed by a hash,
never the password itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass

# Distinct (password, salt, iterations) triples whose salted password is kept.
SALTED_PASSWORD_CACHE_SIZE = 256
# A server asking for more rounds than this is refused (a CPU-exhaustion guard).
MAX_ITERATIONS = 1_000_000

_cache: OrderedDict[bytes, bytes] = OrderedDict()


class ScramError(ValueError):
    """The server's SCRAM messages are malformed or its proof is wrong."""


def _saslprep(password: str) -> str:
    """SASLprep (RFC 4013) as libpq applies it: on any failure, the raw password."""
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)
    )
    prepared = unicodedata.normalize("NFKC", mapped)
    if not prepared:
        return password
    for c in prepared:
        if (
            stringprep.in_table_c12(c)
            or stringprep.in_table_c21_c22(c)
            or stringprep.in_table_c3(c)
            or stringprep.in_table_c4(c)
            or stringprep.in_table_c5(c)
            or stringprep.in_table_c6(c)
            or stringprep.in_table_c7(c)
            or stringprep.in_table_c8(c)
            or stringprep.in_table_c9(c)
        ):
            return password
    if any(stringprep.in_table_d1(c) for c in prepared) and (
        any(stringprep.in_table_d2(c) for c in prepared)
        or not stringprep.in_table_d1(prepared[0])
        or not stringprep.in_table_d1(prepared[-1])
    ):
        return password
    return prepared


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """Hi(Normalize(password), salt, i), cached."""
    key = hashlib.sha256(
        password.encode() + b"\0" + salt + b"\0" + str(iterations).encode()
    ).digest()
    cached = _cache.get(key)
    if cached is not None:
        _cache.move_to_end(key)
        return cached
    value = hashlib.pbkdf2_hmac("sha256", _saslprep(password).encode(), salt, iterations)
    _cache[key] = value
    if len(_cache) > SALTED_PASSWORD_CACHE_SIZE:
        _cache.popitem(last=False)
    return value


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _attributes(message: str) -> dict[str, str]:
    attrs = {}
    for part in message.split(","):
        name, sep, value = part.partition("=")
        if not sep or len(name) != 1:
            raise ScramError(f"malformed SCRAM attribute {part[:20]!r}")
        attrs[name] = value
    return attrs


@dataclass(slots=True)
class ScramClient:
    """One SCRAM-SHA-256 exchange.

    PostgreSQL ignores the user name inside SCRAM (the startup packet's
    counts); it is sent anyway, escaped, for servers that insist on one.
    """

    password: str
    user: str = ""
    nonce: str = ""
    _first_bare: str = ""
    _server_signature: bytes = b""

    def first_message(self) -> bytes:
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        name = self.user.replace("=", "=3D").replace(",", "=2C")
        self._first_bare = f"n={name},r={self.nonce}"
        return ("n,," + self._first_bare).encode()

    def final_message(self, server_first: bytes) -> bytes:
        try:
            text = server_first.decode()
            attrs = _attributes(text)
            nonce, salt_b64, rounds = attrs["r"], attrs["s"], attrs["i"]
            salt = base64.b64decode(salt_b64, validate=True)
            iterations = int(rounds)
        except (UnicodeDecodeError, KeyError, ValueError) as exc:
            raise ScramError(f"malformed SCRAM server-first message: {exc}") from None
        if not nonce.startswith(self.nonce) or len(nonce) <= len(self.nonce):
            raise ScramError("the server's SCRAM nonce does not extend ours")
        if not 1 <= iterations <= MAX_ITERATIONS:
            raise ScramError(f"the server asks for {iterations} SCRAM iterations")
        salted = salted_password(self.password, salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._first_bare},{text},{without_proof}".encode()
        signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, server_final: bytes) -> None:
        try:
            attrs = _attributes(server_final.decode())
        except UnicodeDecodeError:
            raise ScramError("malformed SCRAM server-final message") from None
        if "e" in attrs:
            raise ScramError(f"the server reports a SCRAM error: {attrs['e']}")
        try:
            signature = base64.b64decode(attrs["v"], validate=True)
        except (KeyError, ValueError):
            raise ScramError("malformed SCRAM server-final message") from None
        if not self._server_signature or not hmac.compare_digest(signature, self._server_signature):
            raise ScramError(
                "the server's SCRAM signature does not match: it does not know the password"
            )
