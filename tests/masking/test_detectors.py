"""Each built-in detector: real values are found, look-alikes are not."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.masking.detectors import (
    _PHONE_INTL,
    BUILTIN_DETECTORS,
    regex_detector,
    wordlist_detector,
)
from sluice.masking.errors import MaskingConfigError
from sluice.masking.scanner import Scanner

SCANNER = Scanner(list(BUILTIN_DETECTORS.values()))


def found(text: str) -> list[tuple[str, str]]:
    raw = text.encode()
    return [(f.detector, raw[f.start : f.end].decode()) for f in SCANNER.scan(raw)]


POSITIVE = [
    ("email", "write to jane.doe+tag@mail.example.co.uk today", "jane.doe+tag@mail.example.co.uk"),
    ("email", "mailto:bob@example.org.", "bob@example.org"),
    ("phone", "call (212) 555-0143 now", "(212) 555-0143"),
    ("phone", "call 212-555-0143 now", "212-555-0143"),
    ("phone", "call +1 415.555.2671 x123", "+1 415.555.2671 x123"),
    ("phone", "london +44 20 7946 0958", "+44 20 7946 0958"),
    ("phone", "paris +33 1 42 68 53 00", "+33 1 42 68 53 00"),
    ("ssn", "ssn 123-45-6789.", "123-45-6789"),
    ("ssn", "SSN: 123456789", "123456789"),
    ("ssn", "ssn 321 54 9876", "321 54 9876"),
    ("credit_card", "visa 4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("credit_card", "mc 5555-5555-5555-4444", "5555-5555-5555-4444"),
    ("credit_card", "amex 378282246310005", "378282246310005"),
    ("credit_card", "discover 6011111111111117", "6011111111111117"),
    ("iban", "iban DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 00"),
    ("iban", "iban GB82WEST12345698765432", "GB82WEST12345698765432"),
    ("ip_address", "from 8.8.8.8:53", "8.8.8.8"),
    ("ip_address", "v6 2001:4860:4860::8888 ok", "2001:4860:4860::8888"),
    ("ip_private", "host 10.0.0.1", "10.0.0.1"),
    ("ip_private", "host 172.16.5.4", "172.16.5.4"),
    ("ip_private", "host 192.168.1.20", "192.168.1.20"),
    ("ip_private", "lo 127.0.0.1", "127.0.0.1"),
    ("ip_private", "ll 169.254.10.1", "169.254.10.1"),
    ("ip_private", "cgnat 100.64.1.1", "100.64.1.1"),
    ("ip_private", "ula fd12:3456:789a::1", "fd12:3456:789a::1"),
    ("ip_private", "ll fe80::1ff:fe23:4567:890a", "fe80::1ff:fe23:4567:890a"),
    ("aws_access_key", "key AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_access_key", "key ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A"),
    (
        "aws_secret_key",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    (
        "github_token",
        "tok ghp_16C7e42F292c6912E7710c838347Ae178B4a end",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    ),
    (
        "github_token",
        "github_pat_11ABCDEFG0123456789abc_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUV",
        "github_pat_11ABCDEFG0123456789abc_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUV",
    ),
    ("gitlab_token", "glpat-xxxxxxxxxxxxxxxxxxxx1", "glpat-xxxxxxxxxxxxxxxxxxxx1"),
    ("slack_token", "xoxb-123456789012-abcdefABCDEF", "xoxb-123456789012-abcdefABCDEF"),
    ("stripe_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    (
        "jwt",
        "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0In0.sflKxwRJSMeKKF2QT4fwpM",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0In0.sflKxwRJSMeKKF2QT4fwpM",
    ),
    ("password", "postgres://app:hunter2@db.internal:5432/x", "hunter2"),
    ("password", "host=db password=s3cr3t user=x", "s3cr3t"),
    ("password", 'pwd="two words"', "two words"),
    ("password", '{"secret": "xyz"}', "xyz"),
    # Long key names and aligned blanks (up to 64 and 32: the detector's bounds).
    ("password", "reporting_replica_password_for_the_nightly_jobs = hunter2", "hunter2"),
    ("password", "db_credentials\t\t\t\t\t\t:\tletmein", "letmein"),
    # SQL's form, as statement texts (pg_stat_activity.query) carry it.
    ("password", "ALTER ROLE bob WITH ENCRYPTED PASSWORD 'it''s-a-secret'", "it''s-a-secret"),
    ("password", "OPTIONS (user 'bob', password 'hunter2')", "hunter2"),
]


@pytest.mark.parametrize(("detector", "text", "span"), POSITIVE)
def test_detects(detector: str, text: str, span: str) -> None:
    # Overlapping findings merge (the password in a URL also looks like an
    # email): the expected span must be covered by a finding of its detector.
    assert any(d == detector and span in s for d, s in found(text)), found(text)


def test_pem_block_is_masked_whole() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAbCd==\n-----END RSA PRIVATE KEY-----"
    assert found(f"key: {pem} trailing") == [("private_key", pem)]


def test_truncated_pem_masks_to_end_of_value() -> None:
    text = "-----BEGIN PRIVATE KEY-----\nMIIEvQ"
    assert found(text) == [("private_key", text)]


NEGATIVE = [
    "icon@2x.png and user@localhost",
    "invalid luhn 4111 1111 1111 1112",
    "order 1234567890123456 ref",  # no issuer, fails Luhn
    "ssn 000-12-3456 666-12-3456 912-34-5678 123-00-4567 123-45-0000",
    "version 10.1.2.3 and v1.2.3.4 and release: 4.3.2.1",
    "octets 999.1.1.1 and 1.2.3.4.5",
    "time 12:30:45 and mac 00:1a:2b:3c:4d:5e and std::vector",
    "timestamp 2024-01-15 10:30:00 and 2024-01-15T10:30:00Z",
    "order ORD-2024-000123 and id 1699999999999",
    "iban DE89 3704 0044 0532 0130 01",  # bad mod-97
    "phone 555-123-4567 and 123-456-7890",  # invalid NANP area codes
    "AKIA in prose and ghp_short",
    "aws sha 3fa2c1d9e0b7a6f58c4d2e1f0a9b8c7d6e5f4a3b",  # hex digest near 'aws'
    "eyJub3QiOiJqd3QifQ.eyJ4IjoxfQ.sig",  # header without alg
    "the password is reset weekly",
    "password_hash 'x' and mypassword 'y'",  # not the keyword PASSWORD
    "the secret ingredient: love",  # prose: the keyword is not the key of a pair
    "token " + " " * 40 + "= 1",  # more blanks than a key/value pair has
    "price 1,234.56 and 3.14159",
]


@pytest.mark.parametrize("text", NEGATIVE)
def test_look_alikes_are_not_found(text: str) -> None:
    assert found(text) == []


def test_custom_regex_with_validator() -> None:
    det = regex_detector("acct", r"ACCT-[0-9]{16}", validator=None)
    card = regex_detector("cardish", r"\b[0-9]{16}\b", validator="luhn")
    s = Scanner([det, card])
    raw = b"ACCT-0000111122223333 4111111111111111 4111111111111112"
    assert [raw[f.start : f.end] for f in s.scan(raw)] == [
        b"ACCT-0000111122223333",
        b"4111111111111111",
    ]


def test_custom_regex_errors() -> None:
    with pytest.raises(MaskingConfigError, match="unknown validator"):
        regex_detector("x", "a", validator="nope")
    with pytest.raises(MaskingConfigError, match="invalid detector regex"):
        regex_detector("x", "(")


def test_wordlist_is_whole_word_and_case_insensitive() -> None:
    s = Scanner([wordlist_detector("code", ["Bluebird", "night jar"])])
    raw = b"project BLUEBIRD, not bluebirds; the night jar."
    assert [raw[f.start : f.end] for f in s.scan(raw)] == [b"BLUEBIRD", b"night jar"]
    with pytest.raises(MaskingConfigError):
        wordlist_detector("empty", [])


# The international phone regex as first written, with backtracking digit runs:
# the compiled one (possessive runs) must match exactly where it matched.
_PHONE_INTL_BACKTRACKING = re.compile(
    rb"(?<![\w+])\+\d{1,3}(?:[ .\-]?\(?\d{1,5}\)?){1,6}(?![\w\-]|\.\d)"
)
_PHONE_TEXT = st.lists(st.sampled_from(list(b"+0123456789 .-()xa")), max_size=48).map(bytes)


@settings(max_examples=600, deadline=None)
@given(_PHONE_TEXT)
def test_international_phone_matches_as_the_backtracking_form(text: bytes) -> None:
    for pos in [i for i, c in enumerate(text) if c == ord("+")]:
        expected = _PHONE_INTL_BACKTRACKING.match(text, pos)
        got = _PHONE_INTL.compiled.match(text, pos)
        assert (got and got.span()) == (expected and expected.span()), (text, pos)


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("+1-234-251-4506x1231", "+1-234-251-4506x1231"),
        ("+1-515-891-0661x3416 after 5pm", "+1-515-891-0661x3416"),
        ("212-555-1234 ext. 12", "212-555-1234 ext. 12"),
    ],
)
def test_phones_with_extensions_are_masked_whole(text: str, span: str) -> None:
    """The US prefilter stops before the extension; the exact regex takes it."""
    assert found(f"call {text}") == [("phone", span)]
