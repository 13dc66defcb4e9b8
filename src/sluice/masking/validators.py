"""Validators: run only on regex hits, so look-alikes are not masked.

Each validator takes the candidate bytes and up to `CONTEXT_BYTES` bytes that
precede it in the same value, and answers whether the candidate is real.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable
from functools import cache, lru_cache

import phonenumbers

try:  # the compiled validators: same answers, computed in C for common input
    from sluice.masking import _hits
except ImportError:  # pragma: no cover - no compiler at install
    _hits = None  # type: ignore[assignment]

# How far back a validator may look for context ("version", "aws ..."): enough
# for a key name and a separator, small enough to stay in the same sentence.
CONTEXT_BYTES = 48

Validator = Callable[[bytes, bytes], bool]

_SEPARATORS = re.compile(rb"[ \-]")


_LUHN_DOUBLE = bytes((2 * d if d < 5 else 2 * d - 9) if d < 10 else 0 for d in range(256))
_TO_DIGIT = bytes.maketrans(b"0123456789", bytes(range(10)))


def luhn_ok(digits: bytes) -> bool:
    """Luhn checksum of ASCII digits."""
    d = digits.translate(_TO_DIGIT)
    total = sum(d[-1::-2]) + sum(d[-2::-2].translate(_LUHN_DOUBLE))
    return total % 10 == 0


def _card_issuer_ok(d: bytes) -> bool:
    n = len(d)
    p2 = int(d[:2])
    p3 = int(d[:3])
    p4 = int(d[:4])
    p6 = int(d[:6])
    if d[:1] == b"4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # American Express
        return n == 15
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925:  # Discover
        return 16 <= n <= 19
    if p2 == 35:  # JCB (3528-3589 issued; the rest of 35 kept: masking errs on the safe side)
        return 16 <= n <= 19
    if 300 <= p3 <= 305 or p2 in (36, 38, 39) or p4 == 3095:  # Diners Club
        return 14 <= n <= 19
    if p2 == 62 or p2 == 81:  # UnionPay
        return 16 <= n <= 19
    if p2 == 50 or 56 <= p2 <= 69:  # Maestro
        return 12 <= n <= 19
    return 2200 <= p4 <= 2204 and n == 16  # Mir


def py_card_ok(value: bytes, before: bytes) -> bool:
    digits = value.replace(b" ", b"").replace(b"-", b"")
    if not 12 <= len(digits) <= 19:
        return False
    # Separators, if any, must be of one kind ("4111 1111-1111" is not a card).
    if b" " in value and b"-" in value:
        return False
    return _card_issuer_ok(digits) and luhn_ok(digits)


def py_ssn_ok(value: bytes, before: bytes) -> bool:
    digits = value.replace(b" ", b"").replace(b"-", b"")
    if len(digits) != 9:
        return False
    if b" " in value and b"-" in value:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in (b"000", b"666") or area[:1] == b"9":
        return False
    return group != b"00" and serial != b"0000"


# Country code -> IBAN length (ISO 13616 registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_mod97(iban: str) -> int:
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97


def iban_ok(value: bytes, before: bytes) -> bool:
    iban = value.replace(b" ", b"").decode("ascii").upper()
    expected = IBAN_LENGTHS.get(iban[:2])
    if expected is None or len(iban) != expected or not iban.isalnum():
        return False
    return iban_mod97(iban) == 1


def py_email_ok(value: bytes, before: bytes) -> bool:
    local, _, domain = value.rpartition(b"@")
    if not local or local[:1] == b"." or local[-1:] == b"." or b".." in value:
        return False
    tld = domain.rsplit(b".", 1)[-1].lower()
    # "icon@2x.png" and "module@1.2.js" are file names, not addresses.
    return tld not in _FILE_EXTENSIONS


_FILE_EXTENSIONS = frozenset(
    b"png jpg jpeg gif svg webp bmp ico js mjs css map json txt py rb go rs ts tsx jsx "
    b"html htm xml yaml yml toml lock gz zip tar whl jar so dll exe md csv log".split()
)


_NUMBER_KINDS = (
    "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost",
    "personal_number", "voip", "pager", "uan", "voicemail",
)  # fmt: skip


@cache
def _country_regex(country_code: int) -> re.Pattern[str] | None:
    """phonenumbers' own number-type patterns for one country code, as one regex.

    Agrees with `phonenumbers.is_valid_number` on numbers written as
    +CC NSN at a small fraction of the cost of `parse`.
    """
    patterns = []
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ()):
        metadata = (
            phonenumbers.PhoneMetadata.metadata_for_nongeo_region(country_code)
            if region == "001"
            else phonenumbers.PhoneMetadata.metadata_for_region(region)
        )
        if metadata is None:
            continue
        for kind in _NUMBER_KINDS:
            desc = getattr(metadata, kind, None)
            if desc is not None and desc.national_number_pattern:
                patterns.append(desc.national_number_pattern)
    return re.compile("(?:" + "|".join(patterns) + ")") if patterns else None


_NANP_OR_NONE = _country_regex(1)
assert _NANP_OR_NONE is not None
_NANP: re.Pattern[str] = _NANP_OR_NONE


def _intl_fast(digits: str) -> bool:
    """Country codes are prefix-free, so the first known prefix is the one."""
    for n in (1, 2, 3):
        cc = int(digits[:n])
        if cc in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            rx = _country_regex(cc)
            return rx is not None and rx.fullmatch(digits[n:]) is not None
    return False


_PHONE_EXTENSION = re.compile(rb"(?i)\s?(?:x|ext\.?)\s?\d+$")


@lru_cache(maxsize=8192)
def _phone_valid(digits: str) -> bool:
    try:
        number = phonenumbers.parse(digits, "US")
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(number))


_NOT_DIGITS = bytes(c for c in range(256) if not 48 <= c <= 57)


def py_phone_ok(value: bytes, before: bytes) -> bool:
    if b"x" in value or b"X" in value or b"t" in value:
        value = _PHONE_EXTENSION.sub(b"", value)
    digits = value.translate(None, _NOT_DIGITS).decode("ascii")
    if not value.startswith(b"+") or value.startswith(b"+1"):
        if len(digits) == 11 and digits[0] == "1":
            digits = digits[1:]
        return len(digits) == 10 and _NANP.fullmatch(digits) is not None
    if not 7 <= len(digits) <= 15:
        return False
    # Fast path first; phonenumbers itself confirms the rest ("+49 (0)30 ...").
    return _intl_fast(digits) or _phone_valid("+" + digits)


# Private, internal and otherwise non-routable networks: `ip_private`.
PRIVATE_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "::1/128",
        "::/128",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
    )
)

# "v10.1.2.3", "version 10.1.2.3", "firmware: 4.3.2.1" are versions, not addresses.
_VERSION_CONTEXT = re.compile(rb"(?i)(?:\bv|\b(?:version|release|firmware)[\s:=]*)$")


def _parse_ip(value: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = value.decode("ascii")
    if "%" in text:  # IPv6 zone id
        text = text.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv4Address):
        # Leading zeros ("01.02.03.04") are ambiguous (octal), and no tool prints them.
        if any(len(p) > 1 and p[0] == "0" for p in text.split(".")):
            return None
    else:
        groups = [g for g in text.split(":") if g]
        if len(groups) < 2 and text != "::1":
            return None  # "d::" in "std::vector" and similar
    return addr


def _is_private(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == n.version and addr in n for n in PRIVATE_NETWORKS)


def _v4_tables() -> tuple[frozenset[int], frozenset[int], tuple[tuple[int, int], ...]]:
    """PRIVATE_NETWORKS (IPv4) as /8 and /16 lookup sets plus longer prefixes."""
    by8: set[int] = set()
    by16: set[int] = set()
    longer: list[tuple[int, int]] = []
    for n in PRIVATE_NETWORKS:
        if n.version != 4:
            continue
        base = int(n.network_address)
        if n.prefixlen <= 8:
            by8.update(range(base >> 24, (base >> 24) + 2 ** (8 - n.prefixlen)))
        elif n.prefixlen <= 16:
            by16.update(range(base >> 16, (base >> 16) + 2 ** (16 - n.prefixlen)))
        else:
            longer.append((base, int(n.netmask)))
    return frozenset(by8), frozenset(by16), tuple(longer)


_PRIVATE_8, _PRIVATE_16, _PRIVATE_LONGER = _v4_tables()


@lru_cache(maxsize=8192)
def ip_class(value: bytes) -> bool | None:
    """True for a private/internal address, False for a public one, None if not an IP."""
    if b":" not in value:
        parts = value.split(b".")
        if len(parts) != 4:
            return None
        for p in parts:
            # Leading zeros ("01.02.03.04") are ambiguous (octal), and no tool prints them.
            if not p.isdigit() or (len(p) > 1 and p[0] == 48) or len(p) > 3:
                return None
        a, b, c, d = (int(p) for p in parts)
        if a > 255 or b > 255 or c > 255 or d > 255:
            return None
        if a in _PRIVATE_8 or (a << 8 | b) in _PRIVATE_16:
            return True
        n = a << 24 | b << 16 | c << 8 | d
        return any(n & mask == net for net, mask in _PRIVATE_LONGER)
    addr = _parse_ip(value)
    return None if addr is None else _is_private(addr)


# Last byte of every version marker above, to skip the regex in the usual case.
_VERSION_TAIL = frozenset(b" \t:=vVeEnN")


def _ip_context_ok(value: bytes, before: bytes) -> bool:
    if b":" in value or not before or before[-1] not in _VERSION_TAIL:
        return True
    return not _VERSION_CONTEXT.search(before)


def py_ip_public_ok(value: bytes, before: bytes) -> bool:
    return ip_class(value) is False and _ip_context_ok(value, before)


def py_ip_private_ok(value: bytes, before: bytes) -> bool:
    return ip_class(value) is True and _ip_context_ok(value, before)


def _b64url_decode(part: bytes) -> bytes:
    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))


def jwt_ok(value: bytes, before: bytes) -> bool:
    parts = value.split(b".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(_b64url_decode(parts[0]))
        payload = json.loads(_b64url_decode(parts[1]))
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and "alg" in header and isinstance(payload, dict)


def aws_secret_ok(value: bytes, before: bytes) -> bool:
    # Real secret keys mix cases and digits; hex digests and words do not.
    has_upper = any(65 <= c <= 90 for c in value)
    has_lower = any(97 <= c <= 122 for c in value)
    has_other = any(48 <= c <= 57 or c in (43, 47) for c in value)
    return has_upper and has_lower and has_other


def _digits_luhn_ok(digits: bytes) -> bool:
    return digits.isdigit() and luhn_ok(digits)


def always(value: bytes, before: bytes) -> bool:
    return True


_V4_PRIVATE = tuple(
    (int(n.network_address), int(n.netmask)) for n in PRIVATE_NETWORKS if n.version == 4
)


def _compiled(kind: str, reference: Validator, data: object = None) -> Validator:
    """The C version of `reference` when built (tests hold both to the same answers)."""
    if _hits is None:  # pragma: no cover
        return reference
    return _hits.FastValidator(kind, reference, data)


card_ok = _compiled("card", py_card_ok)
ssn_ok = _compiled("ssn", py_ssn_ok)
email_ok = _compiled("email", py_email_ok, _FILE_EXTENSIONS)
phone_ok = _compiled("phone", py_phone_ok, _NANP.fullmatch)
ip_public_ok = _compiled("ip_public", py_ip_public_ok, _V4_PRIVATE)
ip_private_ok = _compiled("ip_private", py_ip_private_ok, _V4_PRIVATE)

# Validators a custom detector may name in its config.
NAMED_VALIDATORS: dict[str, Validator] = {
    "luhn": lambda v, b: _digits_luhn_ok(_SEPARATORS.sub(b"", v)),
    "card": card_ok,
    "ssn": ssn_ok,
    "iban": iban_ok,
    "email": email_ok,
    "phone": phone_ok,
    "ip": lambda v, b: ip_class(v) is not None,
    "jwt": jwt_ok,
}
