"""Strategies: placeholders, partial, keyed hash, format-valid fakes, NULL."""

from __future__ import annotations

import pytest

from sluice.masking import validators as v
from sluice.masking.errors import MaskingConfigError
from sluice.masking.strategies import COLUMN_KIND, Action, Replacer, Strategy, partial, redact

R = Replacer(b"k" * 32)


def act(s: Strategy, keep: int = 4) -> Action:
    return Action(strategy=s, keep_last=keep)


def test_redact_and_null() -> None:
    assert R.replace(b"a@b.com", "email", act(Strategy.REDACT)) == b"[REDACTED:email]"
    assert redact(COLUMN_KIND) == b"[REDACTED]"
    assert R.replace(b"x", "email", act(Strategy.NULL)) is None


def test_partial_keeps_last_alnum_and_punctuation() -> None:
    assert partial(b"123-45-6789", 4) == b"***-**-6789"
    assert partial(b"4111 1111 1111 1111", 4) == b"**** **** **** 1111"
    assert partial(b"caf\xc3\xa9", 2) == b"*af**"  # never keeps half a character
    assert partial(b"ab", 0) == b"**"


def test_hash_is_stable_keyed_and_joinable() -> None:
    a = R.replace(b"alice@example.com", "email", act(Strategy.HASH))
    assert a == R.replace(b"alice@example.com", COLUMN_KIND, act(Strategy.HASH))
    assert a is not None
    assert a.startswith(b"h:")
    assert len(a) == 18
    other = Replacer(b"q" * 32).replace(b"alice@example.com", "email", act(Strategy.HASH))
    assert other != a
    with pytest.raises(MaskingConfigError, match="hmac_key"):
        Replacer(None).replace(b"x", "email", act(Strategy.HASH))


@pytest.mark.parametrize(
    ("kind", "value", "check"),
    [
        ("email", b"alice@corp.com", lambda x: v.email_ok(x, b"") and x.endswith(b"@example.com")),
        ("phone", b"(415) 555-2671", lambda x: x.startswith(b"(202) 555-01")),
        ("phone", b"+1-415-555-2671", lambda x: x.startswith(b"+1-202-555-01")),
        (
            "ssn",
            b"123-45-6789",
            lambda x: x[:1] == b"9" and x[3:4] == b"-" and not v.ssn_ok(x, b""),
        ),
        ("credit_card", b"4111 1111 1111 1111", lambda x: v.card_ok(x, b"") and x[4:5] == b" "),
        ("credit_card", b"378282246310005", lambda x: v.card_ok(x, b"") and len(x) == 15),
        ("iban", b"DE89 3704 0044 0532 0130 00", lambda x: v.iban_ok(x, b"") and x[:2] == b"DE"),
        (
            "ip_address",
            b"8.8.8.8",
            lambda x: x.startswith((b"192.0.2.", b"198.51.100.", b"203.0.113.")),
        ),
        ("ip_private", b"fe80::1", lambda x: x.startswith(b"2001:db8::")),
    ],
)
def test_fakes_are_format_valid_and_deterministic(kind: str, value: bytes, check: object) -> None:
    fake = R.fake(value, kind)
    assert fake == R.fake(value, kind)
    assert fake != value
    assert callable(check)
    assert check(fake)


def test_unfakeable_kinds_are_redacted() -> None:
    assert R.fake(b"AKIAIOSFODNN7EXAMPLE", "aws_access_key") == b"[REDACTED:aws_access_key]"
    assert R.fake(b"John Smith", COLUMN_KIND).startswith(b"fake-")


def test_strength_order() -> None:
    assert act(Strategy.PARTIAL).stronger(act(Strategy.NULL)).strategy is Strategy.NULL
    assert act(Strategy.HASH).stronger(act(Strategy.FAKE)).strategy is Strategy.HASH
    assert act(Strategy.DETECT).stronger(act(Strategy.PARTIAL)).strategy is Strategy.PARTIAL
