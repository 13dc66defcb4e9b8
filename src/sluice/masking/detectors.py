"""Detectors: what PII and secrets look like.

A detector is one or more patterns. Each pattern has two regexes over bytes:

- `prefilter`, for the multi-pattern scanner (hyperscan/RE2 syntax, no
  lookarounds): a superset of the exact regex that starts where it starts
  (or at most `lookback` bytes later);
- `regex`, Python `re` syntax, run only at prefilter hits. If it has named
  groups starting with "v", the first one that matched is the span to mask
  (`password=VALUE` masks VALUE only).

A validator then rejects look-alikes. No pattern may match the NUL byte: the
scanner joins many values with NUL and relies on matches never crossing it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sluice.masking import validators as v
from sluice.masking.errors import MaskingConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class Pattern:
    regex: bytes
    prefilter: bytes
    validator: v.Validator = v.always
    # When > 0, the prefilter hit may start up to `lookback` bytes after the real
    # start (cheap anchors such as "::" or "password"); the exact regex is then
    # searched in [hit - lookback, hit + window).
    lookback: int = 0
    window: int = 0
    # Whether the validator reads the bytes before the match (else it gets b"").
    context: bool = False
    # For the raw-buffer pre-check only (sluice.masking.precheck), when cheaper
    # than `prefilter`: a pattern that matches inside every finding (a prefix
    # of it, say). The pre-check flags the value in which a match ends, and a
    # match inside a finding ends inside the finding's value.
    precheck: bytes | None = None
    # When set, the finding begins with a run of these bytes that ends where
    # the prefilter's hit begins (an email's local part before its "@"): the
    # scanner moves the hit's start back over it, at most 256 bytes, and runs
    # the exact regex there. The prefilter then needs no leftmost start
    # tracked across the run, which costs the automaton on every word.
    start_run: bytes | None = None
    compiled: re.Pattern[bytes] = field(init=False, repr=False, compare=False)
    value_groups: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            compiled = re.compile(self.regex)
        except re.error as exc:
            raise MaskingConfigError(f"invalid detector regex {self.regex!r}: {exc}") from exc
        object.__setattr__(self, "compiled", compiled)
        groups = tuple(sorted(n for n in compiled.groupindex if n.startswith("v")))
        object.__setattr__(self, "value_groups", groups)


@dataclass(frozen=True, slots=True, kw_only=True)
class Detector:
    name: str
    patterns: tuple[Pattern, ...]
    # Overlapping findings are merged; secrets (priority >= 80), then the
    # longest, then the highest priority names the merged span.
    priority: int = 50
    # Whether `fake` can produce a format-valid value of this kind (else: redact).
    fakeable: bool = False


def _p(
    body: bytes,
    *,
    before: bytes = b"",
    after: bytes = b"",
    validator: v.Validator = v.always,
    context: bool = False,
    precheck: bytes | None = None,
) -> Pattern:
    """A pattern whose prefilter is its body without lookarounds or group names."""
    prefilter = re.sub(rb"\(\?P<\w+>", b"(", body)
    return Pattern(
        regex=before + body + after,
        prefilter=prefilter,
        validator=validator,
        context=context,
        precheck=precheck,
    )


_EMAIL = _p(
    rb"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
    rb"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}",
    before=rb"(?<![A-Za-z0-9._%+\-])",
    after=rb"(?![A-Za-z0-9\-]|\.[A-Za-z0-9])",
    validator=v.email_ok,
)
# Short anchor for the scanner: the "@" and the character after it, one report
# per address; the scanner walks back over the local part. The raw-buffer
# pre-check keeps the local part, so a length header byte of 64 ("@") just
# before a value is no hit there.
_EMAIL_LOCAL_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-"
_EMAIL = Pattern(
    regex=_EMAIL.regex,
    prefilter=rb"@[A-Za-z0-9]",
    validator=v.email_ok,
    start_run=_EMAIL_LOCAL_CHARS,
    precheck=rb"[A-Za-z0-9._%+\-]+@[A-Za-z0-9]",
)

_PHONE_US_NUMBER = rb"(?:\+?1[ .\-]?)?(?:\(\d{3}\)[ .\-]?|\d{3}[ .\-])\d{3}[ .\-]\d{4}"
_PHONE_US = Pattern(
    regex=rb"(?<![\w+.\-])" + _PHONE_US_NUMBER + rb"(?:[ ]?(?:x|ext\.?)[ ]?\d{1,6})?"
    rb"(?![\w\-]|\.\d)",
    # Without the extension: the exact regex, run at the hit, takes it. With
    # it, an extension of n digits would report n more ends of one start.
    prefilter=_PHONE_US_NUMBER,
    validator=v.phone_ok,
)
_PHONE_INTL = Pattern(
    # Possessive digit runs: a match can only end after a whole run (a digit
    # must not follow it), so the runs are never split; splitting them
    # cost about 13 us a failed attempt, e.g. at "+1-234-251-4506x1231".
    regex=rb"(?<![\w+])\+\d{1,3}(?:[ .\-]?\(?\d{1,5}+\)?){1,6}(?![\w\-]|\.\d)",
    prefilter=rb"\+\d",
    validator=v.phone_ok,
)

_SSN = _p(
    rb"\d{3}([ \-])\d{2}\1\d{4}",
    before=rb"(?<![\w\-.])",
    after=rb"(?![\w\-]|\.\d)",
    validator=v.ssn_ok,
)
_SSN = Pattern(regex=_SSN.regex, prefilter=rb"\d{3}[ \-]\d{2}[ \-]\d{4}", validator=v.ssn_ok)
_SSN_CONTEXT = _p(
    rb"(?i:ssn|social security(?: number| no\.?)?)[\s:#=\"']{1,4}(?P<v>\d{9})",
    after=rb"(?!\d)",
    validator=v.ssn_ok,
)

_CARD = Pattern(
    regex=rb"(?<![\w\-.])\d(?:[ \-]?\d){11,18}(?![\w\-]|\.\d)",
    # Short anchor: one report per card, not one per possible length.
    prefilter=rb"\b\d(?:[ \-]?\d){11}",
    validator=v.card_ok,
)

_IBAN = _p(
    rb"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?",
    before=rb"(?<![\w])",
    after=rb"(?![\w])",
    validator=v.iban_ok,
    # Its shortest form (two groups) is enough for the pre-check, which scans
    # every byte of a result (timed natively, the two forms cost the same).
    precheck=rb"[A-Z]{2}\d{2} ?[A-Z0-9]{4} ?[A-Z0-9]{4}",
)

_IPV4_BODY = rb"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"
_IPV6_BODY = (
    rb"(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){7}"
    rb"|(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4})*)?::(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4})*)?)"
    rb"(?:%[0-9A-Za-z]{1,16})?"
)


def _ip_patterns(validator: v.Validator) -> tuple[Pattern, ...]:
    return (
        Pattern(
            regex=rb"(?<![\w.])" + _IPV4_BODY + rb"(?![\w]|\.\d)",
            prefilter=rb"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d",
            validator=validator,
            context=True,
        ),
        Pattern(
            regex=rb"(?<![\w:.])" + _IPV6_BODY + rb"(?![\w:])",
            prefilter=rb"::|[0-9A-Fa-f]{1,4}(:[0-9A-Fa-f]{1,4}){7}",
            validator=validator,
            lookback=40,
            window=80,
            context=True,
        ),
    )


_AWS_KEY_ID = _p(
    rb"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA)[A-Z2-7]{16}",
    before=rb"(?<![A-Za-z0-9])",
    after=rb"(?![A-Za-z0-9])",
    validator=v.always,
)
_AWS_SECRET = Pattern(
    regex=rb"(?i:aws|secret[_ \-]?access[_ \-]?key)[^\x00]{0,48}?(?<![A-Za-z0-9/+])"
    rb"(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
    prefilter=rb"(?i)(aws|secret[_ \-]?access[_ \-]?key)",
    validator=v.aws_secret_ok,
    # The keyword alone is common inside words ("laws", "Dawson"); with the
    # 40-character run that must follow it in the same value, it rarely is.
    precheck=rb"(?i)(aws|secret[_ \-]?access[_ \-]?key)[^\x00]{0,48}[A-Za-z0-9/+]{40}",
)
_GITHUB = (
    Pattern(
        regex=rb"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9_])",
        prefilter=rb"gh[pousr]_[A-Za-z0-9]{36}",
    ),
    Pattern(
        regex=rb"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,255}(?![A-Za-z0-9_])",
        prefilter=rb"github_pat_[A-Za-z0-9_]{22}",
    ),
)
_GITLAB = _p(rb"glpat-[A-Za-z0-9_\-]{20,}", before=rb"(?<![\w\-])", after=rb"", validator=v.always)
_SLACK = _p(
    rb"xox[baprs]-[A-Za-z0-9\-]{10,}", before=rb"(?<![\w\-])", after=rb"", validator=v.always
)
_STRIPE = _p(
    rb"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",
    before=rb"(?<![\w])",
    after=rb"",
    validator=v.always,
)
_JWT = Pattern(
    regex=rb"(?<![\w\-])eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*(?![\w\-])",
    prefilter=rb"eyJ[A-Za-z0-9_\-]{2,}\.",
    validator=v.jwt_ok,
)
_PEM = Pattern(
    # A block without its END line (truncated value) is masked to the end of the value.
    regex=rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
    rb"(?:[^\x00]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|[^\x00]*)",
    prefilter=rb"-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----",
    validator=v.always,
)
# Bounded repeats, the same in the exact regex and its prefilter (unbounded
# ones halve hyperscan's speed on clean data): up to 64 name characters after
# the keyword and 32 blanks before the `=` or `:`.
_PASSWORD_KEYS = (
    rb"[\w.\-]*(?:password|passwd|passphrase|pwd|secret|api[_\-]?key|token|credentials?)"
    rb"[\w\-]{0,64}"
)
_PASSWORD_PAIR = Pattern(
    regex=rb"(?i)(?<![\w.\-])" + _PASSWORD_KEYS + rb"[\"']?[ \t]{0,32}[=:][ \t]*"
    rb"(?:\"(?P<v1>[^\"\x00\n]{1,256})\"|'(?P<v2>[^'\x00\n]{1,256})'"
    rb"|(?P<v3>[^\s&;,'\"\x00<>\[\]{}()]{1,256}))",
    # The keyword only counts when `=` or `:` follows it: prose that merely
    # says "secret" or "token" is not searched further.
    prefilter=rb"(?i)(password|passwd|passphrase|pwd|secret|api[_\-]?key|token|credentials?)"
    rb"[\w\-]{0,64}[\"']?[ \t]{0,32}[=:]",
    validator=v.always,
    lookback=64,
    window=400,
)
# SQL's own form: `ALTER ROLE ... PASSWORD 'x'`, `OPTIONS (password 'x')`,
# as statement texts carry it (pg_stat_activity.query, logs read by SQL).
_SQL_PASSWORD = Pattern(
    regex=rb"(?i)(?<![\w\-])password[ \t\r\n]{1,32}'(?P<v>(?:[^'\x00]|''){1,256})'",
    prefilter=rb"(?i)password[ \t\r\n]{1,32}'",
    validator=v.always,
    lookback=16,
    window=600,
)
_CONN_PASSWORD = Pattern(
    regex=rb"[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@\x00]*:(?P<v>[^\s@/\x00]+)@[^\s@/\x00]",
    prefilter=rb"[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@\x00]*:[^\s@/\x00]+@",
    validator=v.always,
)


BUILTIN_DETECTORS: Mapping[str, Detector] = {
    d.name: d
    for d in (
        Detector(name="email", patterns=(_EMAIL,), priority=50, fakeable=True),
        Detector(name="phone", patterns=(_PHONE_US, _PHONE_INTL), priority=40, fakeable=True),
        Detector(name="ssn", patterns=(_SSN, _SSN_CONTEXT), priority=60, fakeable=True),
        Detector(name="credit_card", patterns=(_CARD,), priority=70, fakeable=True),
        Detector(name="iban", patterns=(_IBAN,), priority=65, fakeable=True),
        Detector(
            name="ip_address", patterns=_ip_patterns(v.ip_public_ok), priority=30, fakeable=True
        ),
        Detector(
            name="ip_private", patterns=_ip_patterns(v.ip_private_ok), priority=30, fakeable=True
        ),
        Detector(name="aws_access_key", patterns=(_AWS_KEY_ID,), priority=85),
        Detector(name="aws_secret_key", patterns=(_AWS_SECRET,), priority=86),
        Detector(name="github_token", patterns=_GITHUB, priority=85),
        Detector(name="gitlab_token", patterns=(_GITLAB,), priority=85),
        Detector(name="slack_token", patterns=(_SLACK,), priority=85),
        Detector(name="stripe_key", patterns=(_STRIPE,), priority=85),
        Detector(name="jwt", patterns=(_JWT,), priority=90),
        Detector(name="private_key", patterns=(_PEM,), priority=100),
        Detector(
            name="password",
            patterns=(_PASSWORD_PAIR, _SQL_PASSWORD, _CONN_PASSWORD),
            priority=80,
        ),
    )
}


def regex_detector(name: str, regex: str, *, validator: str | None = None) -> Detector:
    """A custom detector from a profile: a Python regex, optionally validated."""
    check: v.Validator = v.always
    if validator is not None:
        if validator not in v.NAMED_VALIDATORS:
            known = ", ".join(sorted(v.NAMED_VALIDATORS))
            raise MaskingConfigError(
                f"custom detector {name!r}: unknown validator {validator!r} (known: {known})"
            )
        check = v.NAMED_VALIDATORS[validator]
    raw = regex.encode("utf-8")
    return Detector(name=name, patterns=(Pattern(regex=raw, prefilter=raw, validator=check),))


def wordlist_detector(name: str, words: Iterable[str], *, case_sensitive: bool = False) -> Detector:
    """A custom detector matching whole words from a list."""
    alts = sorted({w for w in words if w}, key=len, reverse=True)
    if not alts:
        raise MaskingConfigError(f"custom detector {name!r}: empty word list")
    body = b"(?:" + b"|".join(re.escape(w.encode("utf-8")) for w in alts) + b")"
    flags = b"" if case_sensitive else b"(?i)"
    return Detector(
        name=name,
        patterns=(
            Pattern(
                regex=flags + rb"(?<![\w])" + body + rb"(?![\w])",
                prefilter=flags + body,
                validator=v.always,
            ),
        ),
        priority=75,
    )
