"""A seeded, labeled corpus for measuring detectors (not a test).

Three kinds of samples:
- `row`: one column value of a realistic table (an email column, a phone column...);
- `prose`: Faker sentences with PII mixed in, with the character span of each item;
- `lookalike`: text full of things that must NOT be masked (invalid Luhn numbers,
  SSN 000-12-3456, version strings, order ids, timestamps, hashes, file names...).

Labels are Sluice detector names. Gold values are valid by construction
(Luhn and issuer for cards, mod-97 for IBANs, NANP/ITU plans for phones, the
SSA rules for SSNs), generated independently of Sluice's own regexes.

Usage: python -m bench.masking.corpus --size 2000 --seed 7 --out corpus.jsonl
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import string
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import phonenumbers
from faker import Faker

LABELS = (
    "email",
    "phone",
    "ssn",
    "credit_card",
    "iban",
    "ip_address",
    "ip_private",
    "aws_access_key",
    "aws_secret_key",
    "github_token",
    "slack_token",
    "stripe_key",
    "jwt",
    "private_key",
    "password",
)

# Real NANP area codes (a sample), so generated numbers are valid.
_AREA_TEXT = (
    "201 202 203 205 206 212 213 214 215 216 217 224 225 228 229 231 234 239 240 248 251 "
    "252 253 254 256 260 262 267 269 270 276 281 301 302 303 304 305 307 308 309 310 312 "
    "313 314 315 316 317 318 319 320 321 323 330 334 336 337 339 347 351 352 360 361 385 "
    "386 401 402 404 405 406 407 408 409 410 412 413 414 415 417 419 423 424 425 430 432 "
    "434 435 440 443 469 478 479 480 484 501 502 503 504 505 507 508 509 510 512 513 515 "
    "516 517 518 520 530 540 541 551 559 561 562 563 567 570 571 573 574 580 585 586 601 "
    "602 603 605 606 607 608 609 610 612 614 615 616 617 618 619 620 623 626 630 631 636 "
    "641 646 650 651 660 661 662 678 682 701 702 703 704 706 707 708 712 713 714 715 716 "
    "717 718 719 720 724 727 731 732 734 740 754 757 760 763 765 770 772 773 774 775 781 "
    "785 786 801 802 803 804 805 806 808 810 812 813 814 815 816 817 818 828 830 831 832 "
    "843 845 847 848 850 856 857 858 859 860 862 863 864 865 870 901 903 904 906 907 908 "
    "909 910 912 913 914 915 916 917 918 919 920 925 928 931 936 937 940 941 947 949 952 "
    "954 956 970 971 972 973 978 979 980 985 989"
)
AREA_CODES = tuple(_AREA_TEXT.split())
INTL_REGIONS = ("GB", "DE", "FR", "IN", "BR", "AU", "JP", "ES", "IT", "NL", "MX", "ZA")


@dataclass(slots=True)
class Sample:
    kind: str
    text: str
    spans: list[tuple[int, int, str]] = field(default_factory=list)


class Generator:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.fake = Faker("en_US")
        self.fake.seed_instance(seed)

    # -- PII values ----------------------------------------------------------

    def email(self) -> str:
        return self.rng.choice([self.fake.email, self.fake.company_email, self.fake.free_email])()

    def phone(self) -> str:
        r = self.rng
        if r.random() < 0.25:
            region = r.choice(INTL_REGIONS)
            base = phonenumbers.example_number_for_type(
                region, phonenumbers.PhoneNumberType.MOBILE
            ) or phonenumbers.example_number(region)
            assert base is not None
            for _ in range(50):
                digits = list(str(base.national_number))
                for i in range(max(len(digits) - 4, 1), len(digits)):
                    digits[i] = str(r.randrange(10))
                num = phonenumbers.PhoneNumber(
                    country_code=base.country_code, national_number=int("".join(digits))
                )
                if phonenumbers.is_valid_number(num):
                    return phonenumbers.format_number(
                        num, phonenumbers.PhoneNumberFormat.INTERNATIONAL
                    )
            return phonenumbers.format_number(base, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        for _ in range(100):
            area = r.choice(AREA_CODES)
            exch = f"{r.randrange(2, 10)}{r.randrange(10)}{r.randrange(10)}"
            line = f"{r.randrange(10000):04d}"
            if exch[1:] == "11":
                continue
            num = phonenumbers.parse(f"+1{area}{exch}{line}")
            if phonenumbers.is_valid_number(num):
                break
        fmt = r.choice(
            ["({a}) {e}-{l}", "{a}-{e}-{l}", "{a}.{e}.{l}", "+1 {a} {e} {l}", "+1-{a}-{e}-{l}"]
        )
        return fmt.format(a=area, e=exch, l=line)

    def ssn(self) -> str:
        r = self.rng
        while True:
            area = r.randrange(1, 900)
            if area != 666:
                break
        sep = r.choice(["-", "-", "-", " "])
        return f"{area:03d}{sep}{r.randrange(1, 100):02d}{sep}{r.randrange(1, 10000):04d}"

    def credit_card(self) -> str:
        kind = self.rng.choice(["visa16", "mastercard", "amex", "discover", "jcb16", "diners"])
        number = self.fake.credit_card_number(card_type=kind)
        style = self.rng.random()
        if style < 0.4 and len(number) == 16:
            sep = self.rng.choice([" ", "-"])
            return sep.join(number[i : i + 4] for i in range(0, 16, 4))
        return str(number)

    def iban(self) -> str:
        value = str(self.fake.iban())
        if self.rng.random() < 0.5:
            return " ".join(value[i : i + 4] for i in range(0, len(value), 4))
        return value

    def ip_address(self) -> str:
        if self.rng.random() < 0.2:
            return f"2001:4860:{self.rng.randrange(1, 0xFFFF):x}::{self.rng.randrange(1, 0xFFFF):x}"
        return str(self.fake.ipv4_public())

    def ip_private(self) -> str:
        r = self.rng.random()
        if r < 0.1:
            return f"fe80::{self.rng.randrange(1, 0xFFFF):x}:{self.rng.randrange(1, 0xFFFF):x}"
        if r < 0.2:
            return f"100.{self.rng.randrange(64, 128)}.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"  # noqa: E501
        return str(self.fake.ipv4_private())

    def _chars(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def aws_access_key(self) -> str:
        return self.rng.choice(["AKIA", "ASIA"]) + self._chars(
            string.ascii_uppercase + "234567", 16
        )

    def aws_secret_key(self) -> str:
        while True:
            v = self._chars(string.ascii_letters + string.digits + "+/", 40)
            if (
                any(c.isupper() for c in v)
                and any(c.islower() for c in v)
                and any(c.isdigit() for c in v)
            ):
                return v

    def github_token(self) -> str:
        return self.rng.choice(["ghp_", "gho_", "ghs_"]) + self._chars(
            string.ascii_letters + string.digits, 36
        )

    def slack_token(self) -> str:
        return f"xoxb-{self._chars(string.digits, 12)}-{self._chars(string.digits, 12)}-{self._chars(string.ascii_letters + string.digits, 24)}"  # noqa: E501

    def stripe_key(self) -> str:
        return self.rng.choice(["sk_live_", "rk_live_"]) + self._chars(
            string.ascii_letters + string.digits, 24
        )

    def jwt(self) -> str:
        def b64(obj: Any) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

        header = b64({"alg": self.rng.choice(["HS256", "RS256"]), "typ": "JWT"})
        payload = b64(
            {"sub": str(self.rng.randrange(10**6)), "name": self.fake.name(), "iat": 1700000000}
        )
        sig = base64.urlsafe_b64encode(self.rng.randbytes(32)).rstrip(b"=").decode()
        return f"{header}.{payload}.{sig}"

    def private_key(self) -> str:
        body = "\n".join(
            base64.b64encode(self.rng.randbytes(48)).decode()
            for _ in range(self.rng.randrange(3, 8))
        )
        kind = self.rng.choice(["RSA ", "EC ", "", "OPENSSH "])
        return f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"

    def password(self) -> str:
        return self.fake.password(length=self.rng.randrange(8, 16), special_chars=False)

    def value(self, label: str) -> str:
        fn: Any = getattr(self, label)
        return str(fn())

    # -- wrapping ------------------------------------------------------------

    def in_context(self, label: str) -> tuple[str, str, str]:
        """(prefix, value, suffix) for a value in a realistic carrier."""
        v = self.value(label)
        if label == "aws_secret_key":
            return (
                self.rng.choice(["aws_secret_access_key=", "AWS secret: ", '"SecretAccessKey": "']),
                v,
                "",
            )
        if label == "password":
            user, host = self.fake.user_name(), self.fake.domain_word()
            style = self.rng.choice(["url", "kv", "json"])
            if style == "url":
                return f"postgresql://{user}:", v, f"@{host}.internal:5432/app"
            if style == "kv":
                return f"host={host} user={user} password=", v, " sslmode=require"
            return '{"db_password": "', v, '"}'
        return "", v, ""

    def row_sample(self) -> Sample:
        label = self.rng.choice(LABELS)
        pre, v, post = self.in_context(label)
        return Sample(kind="row", text=pre + v + post, spans=[(len(pre), len(pre) + len(v), label)])

    PHRASES = {
        "email": ["Contact {} for details.", "email: {}", "sent from {}"],
        "phone": ["Call me at {}.", "phone {} (mobile)", "tel: {}"],
        "ssn": ["My SSN is {}.", "ssn {} on file", "social security number {}"],
        "credit_card": ["Card {} was declined.", "paid with {}", "cc: {}"],
        "iban": ["Wire to {} please.", "IBAN {}", "account {}"],
        "ip_address": ["Login from {} failed.", "client {} connected", "peer={}"],
        "ip_private": ["Backend at {} is down.", "host {} rebooted", "gateway {}"],
    }

    def prose_sample(self) -> Sample:
        parts: list[str] = []
        spans: list[tuple[int, int, str]] = []
        pos = 0

        def add(text: str) -> None:
            nonlocal pos
            parts.append(text)
            pos += len(text)

        for i in range(self.rng.randrange(1, 4)):
            if i:
                add(" ")
            add(self.fake.sentence(nb_words=self.rng.randrange(4, 12)) + " ")
            label = self.rng.choice(LABELS)
            pre, v, post = self.in_context(label)
            template = self.rng.choice(self.PHRASES.get(label, ["{}"]))
            head, tail = template.split("{}")
            add(head + pre)
            spans.append((pos, pos + len(v), label))
            add(v + post + tail)
        add(" " + self.fake.sentence())
        return Sample(kind="prose", text="".join(parts), spans=spans)

    def lookalike(self) -> str:
        r = self.rng
        choice = r.randrange(16)
        if choice == 0:  # card-shaped, bad Luhn
            n = list(str(self.fake.credit_card_number(card_type="visa16")))
            n[-1] = str((int(n[-1]) + r.randrange(1, 10)) % 10)
            return f"card {''.join(n)} declined"
        if choice == 1:
            area = r.choice(["000", "666", f"9{r.randrange(10)}{r.randrange(10)}"])
            return f"test SSN {area}-{r.randrange(1, 100):02d}-{r.randrange(1, 10000):04d}"
        if choice == 2:
            return f"upgraded to version {r.randrange(1, 20)}.{r.randrange(10)}.{r.randrange(10)}.{r.randrange(100)}"  # noqa: E501
        if choice == 3:
            return f"order ORD-{r.randrange(2015, 2026)}-{r.randrange(10**6):06d} shipped"
        if choice == 4:
            return self.fake.date_time().isoformat() + " " + self.fake.iso8601()
        if choice == 5:
            return f"request id {self.fake.uuid4()}"
        if choice == 6:
            return f"sha1 {self.fake.sha1()} md5 {self.fake.md5()}"
        if choice == 7:
            return f"total ${r.randrange(1, 10**6):,}.{r.randrange(100):02d} ({r.randrange(10**9)} items)"  # noqa: E501
        if choice == 8:
            return f"see icon@2x.png and {self.fake.user_name()}@localhost"
        if choice == 9:
            return f"mac {self.fake.mac_address()} at {r.randrange(24):02d}:{r.randrange(60):02d}:{r.randrange(60):02d}"  # noqa: E501
        if choice == 10:
            return f"tracking {r.randrange(10**15, 10**16)} and epoch {r.randrange(10**12, 2 * 10**12)}"  # noqa: E501
        if choice == 11:
            return f"isbn 978-{r.randrange(10)}-{r.randrange(10**3):03d}-{r.randrange(10**5):05d}-{r.randrange(10)}"  # noqa: E501
        if choice == 12:
            return f"invalid phone 555-{r.randrange(100, 1000)}-{r.randrange(10**4):04d} or 123-456-7890"  # noqa: E501
        if choice == 13:
            return f"password reset requested by {self.fake.first_name()}"
        if choice == 14:
            iban = list(str(self.fake.iban()))
            iban[-1] = str((int(iban[-1]) + 1) % 10) if iban[-1].isdigit() else "0"
            return f"bad iban {''.join(iban)}"
        return (
            f"coordinates {self.fake.latitude()}, {self.fake.longitude()} zip {self.fake.zipcode()}"
        )

    def lookalike_sample(self) -> Sample:
        text = self.fake.sentence() + " " + self.lookalike() + ". " + self.lookalike() + "."
        return Sample(kind="lookalike", text=text)


def generate(size: int, seed: int) -> list[Sample]:
    gen = Generator(seed)
    out: list[Sample] = []
    for _ in range(size):
        r = gen.rng.random()
        if r < 0.4:
            out.append(gen.row_sample())
        elif r < 0.75:
            out.append(gen.prose_sample())
        else:
            out.append(gen.lookalike_sample())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=2000, help="number of samples")
    parser.add_argument("--seed", type=int, default=7, help="random seed")
    parser.add_argument("--out", default="-", help="JSON-lines output path, '-' for stdout")
    args = parser.parse_args(argv)
    samples = generate(args.size, args.seed)
    lines = "".join(json.dumps(asdict(s)) + "\n" for s in samples)
    if args.out == "-":
        sys.stdout.write(lines)
    else:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
