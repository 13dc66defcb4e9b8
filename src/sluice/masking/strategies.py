"""Masking strategies: what a sensitive value becomes.

Every output is safe inside JSON strings, XML text, array/record literals and
COPY text/CSV fields: placeholders use only letters, digits and `[]:_-*@.`.

- redact:  `[REDACTED:<kind>]` (`[REDACTED]` for whole-column rules).
- partial: every letter/digit but the last `keep_last` ones becomes `*`;
           punctuation stays (`***-**-6789`, `**** **** **** 1111`).
- hash:    `h:` + 16 hex of HMAC-SHA256(key, value): stable, joins across
           tables and queries, not reversible without the key.
- fake:    a format-valid value derived from HMAC(key, value), so equal inputs
           give equal fakes:
             email        `user-<10 hex>@example.com` (RFC 2606 domain)
             phone        NANP fictional 555-01XX numbers (`202-555-0142`),
                          original layout kept; other countries: digits
                          after the first two are pseudonymous
             ssn          area 900-999: format-valid, never issued as an SSN
             credit_card  test-range prefixes (4000 00.., 3700 00..), same
                          length and separators, Luhn-valid
             iban         same country and length, zero bank code, valid mod-97
             ip_*         documentation ranges 192.0.2.0/24, 198.51.100.0/24,
                          203.0.113.0/24 (RFC 5737) and 2001:db8::/32 (RFC 3849)
           Secrets (keys, tokens, JWTs, passwords, PEM) cannot be faked
           usefully and are redacted. Whole-column fakes of other values are
           `fake-<12 hex>`.
- null:    the whole value becomes SQL NULL.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum

from sluice.masking.errors import MaskingConfigError
from sluice.masking.validators import IBAN_LENGTHS, iban_mod97, luhn_ok


class Strategy(StrEnum):
    REDACT = "redact"
    PARTIAL = "partial"
    HASH = "hash"
    FAKE = "fake"
    NULL = "null"
    # Column rules only: scan the column with the profile's detectors.
    DETECT = "detect"


# When several rules apply to one value, the strongest wins.
STRENGTH: dict[Strategy, int] = {
    Strategy.NULL: 6,
    Strategy.REDACT: 5,
    Strategy.HASH: 4,
    Strategy.FAKE: 3,
    Strategy.PARTIAL: 2,
    Strategy.DETECT: 1,
}

COLUMN_KIND = "column"


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    strategy: Strategy = Strategy.REDACT
    keep_last: int = 4

    def stronger(self, other: Action) -> Action:
        return self if STRENGTH[self.strategy] >= STRENGTH[other.strategy] else other


REDACT = Action(strategy=Strategy.REDACT)


class Replacer:
    """Applies an `Action` to one value. Holds the HMAC key; pure otherwise."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes | None):
        self._key = key

    def _mac(self, value: bytes) -> bytes:
        if self._key is None:
            raise MaskingConfigError("hash and fake strategies need masking.hmac_key")
        return hmac.new(self._key, value, hashlib.sha256).digest()

    def replace(self, value: bytes, kind: str, action: Action) -> bytes | None:
        """The masked value, or None for SQL NULL."""
        strategy = action.strategy
        if strategy is Strategy.REDACT or strategy is Strategy.DETECT:
            return redact(kind)
        if strategy is Strategy.NULL:
            return None
        if strategy is Strategy.PARTIAL:
            return partial(value, action.keep_last)
        if strategy is Strategy.HASH:
            return b"h:" + self._mac(value).hex()[:16].encode()
        return self.fake(value, kind)

    def hash_int(self, value: bytes, bits: int) -> int:
        """A stable non-negative pseudonym that fits a signed `bits`-bit integer."""
        return int.from_bytes(self._mac(value)[:8], "big") >> (65 - bits)

    def digest(self, value: bytes) -> bytes:
        return self._mac(value)

    def fake(self, value: bytes, kind: str) -> bytes:
        mac = self._mac(value)
        maker = _FAKERS.get(kind)
        if maker is not None:
            return maker(value, mac)
        if kind == COLUMN_KIND:
            return b"fake-" + mac.hex()[:12].encode()
        return redact(kind)


def redact(kind: str) -> bytes:
    if kind == COLUMN_KIND:
        return b"[REDACTED]"
    return b"[REDACTED:" + kind.encode() + b"]"


def partial(value: bytes, keep_last: int) -> bytes:
    out = bytearray(value)
    kept = 0
    for i in range(len(out) - 1, -1, -1):
        ch = out[i]
        if 48 <= ch <= 57 or 65 <= ch <= 90 or 97 <= ch <= 122:
            if kept < keep_last:
                kept += 1
            else:
                out[i] = 42  # '*'
        elif ch >= 128:  # non-ASCII: never keep part of a multibyte character
            out[i] = 42
    return bytes(out)


def _digits(mac: bytes, n: int) -> str:
    return str(int.from_bytes(mac, "big")).zfill(n)[-n:]


def _layout(original: bytes, digits: str) -> bytes:
    """Put `digits` into the digit positions of `original`, keeping its punctuation."""
    out = bytearray(original)
    it = iter(digits.encode())
    for i, ch in enumerate(out):
        if 48 <= ch <= 57:
            out[i] = next(it, 48)
    return bytes(out)


def _fake_email(value: bytes, mac: bytes) -> bytes:
    return b"user-" + mac.hex()[:10].encode() + b"@example.com"


def _fake_phone(value: bytes, mac: bytes) -> bytes:
    n = sum(48 <= c <= 57 for c in value)
    tail = "01" + _digits(mac, 2)
    if n == 10:
        return _layout(value, "202555" + tail)
    if n == 11 and value.lstrip(b"+ (").startswith(b"1"):
        return _layout(value, "1202555" + tail)
    head = bytes(c for c in value if 48 <= c <= 57)[:2].decode()
    return _layout(value, head + _digits(mac, max(n - 2, 0)))


def _fake_ssn(value: bytes, mac: bytes) -> bytes:
    d = _digits(mac, 9)
    group = int(d[3:5]) % 99 + 1
    serial = int(d[5:]) % 9999 + 1
    return _layout(value, f"9{d[1:3]}{group:02d}{serial:04d}")


def _fake_card(value: bytes, mac: bytes) -> bytes:
    n = sum(48 <= c <= 57 for c in value)
    prefix = {15: "370000", 14: "300000"}.get(n, "400000")
    body = prefix + _digits(mac, max(n - len(prefix) - 1, 0))
    for check in "0123456789":
        if luhn_ok((body + check).encode()):
            return _layout(value, body + check)
    raise AssertionError("unreachable: one check digit always satisfies Luhn")


def _fake_iban(value: bytes, mac: bytes) -> bytes:
    compact = value.replace(b" ", b"").decode("ascii").upper()
    country = compact[:2]
    length = IBAN_LENGTHS.get(country, len(compact))
    bban = _digits(mac, length - 4)
    check = 98 - iban_mod97(country + "00" + bban)
    iban = f"{country}{check:02d}{bban}"
    if b" " in value:
        iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban.encode()


def _fake_ip(value: bytes, mac: bytes) -> bytes:
    if b":" in value:
        return f"2001:db8::{mac[0]:x}{mac[1]:02x}:{mac[2]:x}{mac[3]:02x}".encode()
    net = ("192.0.2", "198.51.100", "203.0.113")[mac[0] % 3]
    return f"{net}.{mac[1] % 254 + 1}".encode()


_FAKERS = {
    "email": _fake_email,
    "phone": _fake_phone,
    "ssn": _fake_ssn,
    "credit_card": _fake_card,
    "iban": _fake_iban,
    "ip_address": _fake_ip,
    "ip_private": _fake_ip,
}
