"""The raw-buffer pre-check never says "clean" where per-value scanning finds PII."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.masking import BUILTIN_DETECTORS, Scanner
from sluice.masking.precheck import RegionPrecheck
from sluice.protocols.postgres.messages import encode_data_row

from .test_detectors import POSITIVE

DETECTORS = list(BUILTIN_DETECTORS.values())
PRECHECK = RegionPrecheck(DETECTORS)
SCANNER = Scanner(DETECTORS)

PII = [
    "maria.lopez@example.org",
    "+1 415-555-0132",
    "123-45-6789",
    "4111 1111 1111 1111",
    "4111111111111111",
    "GB82WEST12345698765432",
    "10.12.4.7",
    "8.8.8.8",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "(212) 555-0187",
    "password=hunter22",
    "postgres://app:s3cret@db:5432/x",
    "2001:db8::1",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "+1-234-251-4506x1231",
]

# Values whose lengths put digits and letters in the header byte before them.
values = st.one_of(
    st.text(alphabet="abcdefghij XYZ0123456789.-@:", max_size=90),
    st.builds(
        lambda pad, pii, tail: pad + pii + tail,
        st.text(alphabet="0123456789abcXYZ ", max_size=70),
        st.sampled_from(PII),
        st.text(alphabet="0123456789abcXYZ ", max_size=10),
    ),
)
rows = st.lists(
    st.lists(st.one_of(st.none(), values), min_size=1, max_size=5), min_size=1, max_size=8
)


def test_precheck_is_usable_with_builtin_detectors() -> None:
    assert PRECHECK.usable
    assert not PRECHECK.may_contain(encode_data_row([b"order shipped", b"gold tier"]))


@settings(max_examples=400, deadline=None)
@given(rows)
def test_clean_verdict_implies_no_finding_in_any_value(data: list[list[str | None]]) -> None:
    encoded = [[v.encode() if v is not None else None for v in row] for row in data]
    region = b"".join(encode_data_row(row) for row in encoded)
    if not PRECHECK.may_contain(region):
        for row in encoded:
            for value in row:
                if value:
                    assert SCANNER.scan(value) == [], value


@settings(max_examples=400, deadline=None)
@given(rows)
def test_candidate_rows_hold_every_row_with_a_finding(data: list[list[str | None]]) -> None:
    encoded = [[v.encode() if v is not None else None for v in row] for row in data]
    frames = [encode_data_row(row) for row in encoded]
    starts = [sum(len(f) for f in frames[:i]) for i in range(len(frames))]
    candidates = PRECHECK.candidate_rows(b"".join(frames), starts)
    assert candidates is not None
    for i, row in enumerate(encoded):
        if any(value and SCANNER.scan(value) for value in row):
            assert i in candidates, row


@pytest.mark.parametrize(("detector", "text", "span"), POSITIVE)
def test_every_detector_example_is_flagged_in_its_row(detector: str, text: str, span: str) -> None:
    """Each built-in detector's examples, amid clean rows and after a NULL."""
    frames = [
        encode_data_row([b"clean row", b"nothing here"]),
        encode_data_row([None, f"note: {text}".encode(), b"1"]),
        encode_data_row([b"order shipped", b"gold tier"]),
    ]
    starts = [sum(len(f) for f in frames[:i]) for i in range(len(frames))]
    region = b"".join(frames)
    assert PRECHECK.may_contain(region)
    candidates = PRECHECK.candidate_rows(region, starts)
    assert candidates is not None
    assert 1 in candidates, (detector, candidates)


@pytest.mark.parametrize("pii", PII)
def test_a_single_row_is_flagged_exactly_when_it_holds_a_match(pii: str) -> None:
    """One row (most statements' results) takes the scan that stops at the
    first match; it answers as the scan collecting every match end does."""
    clean = encode_data_row([b"order shipped", b"gold tier"])
    dirty = encode_data_row([b"1", f"note: {pii}".encode()])
    assert PRECHECK.candidate_rows(clean, [0]) == []
    assert PRECHECK.candidate_rows(dirty, [0]) == [0]
    # The same row after a clean one goes through the collecting scan.
    assert PRECHECK.candidate_rows(clean + dirty, [0, len(clean)]) == [1]


def test_a_keyword_inside_a_word_does_not_flag_a_row() -> None:
    """'aws' in a name is no AWS secret without the 40-character run after it."""
    names = [b"Gloria Dawson", b"Lawson, Shaw and Laws", b"jaws draws straws"]
    assert not PRECHECK.may_contain(b"".join(encode_data_row([n, b"x"]) for n in names))


def test_the_shorter_iban_precheck_flags_every_iban() -> None:
    """IBANs of every length the detector takes, spaced and not, amid other rows."""
    ibans = [
        "GB82WEST12345698765432",
        "GB82 WEST 1234 5698 7654 32",
        "DE89370400440532013000",
        "NO9386011117947",
        "MT84MALT011000012345MTLCAST001S",
    ]
    frames = [encode_data_row([b"clean row", b"nothing here"])]
    for iban in ibans:
        assert SCANNER.scan(iban.encode()), iban  # a finding of the full detector
        frames.append(encode_data_row([b"x", f"pay to {iban} today".encode()]))
        frames.append(encode_data_row([b"clean row", b"nothing here"]))
    starts = [sum(len(f) for f in frames[:i]) for i in range(len(frames))]
    iban_only = RegionPrecheck([BUILTIN_DETECTORS["iban"]])  # digits alone match others
    assert iban_only.candidate_rows(b"".join(frames), starts) == list(range(1, len(frames), 2))


def _bind_body(params: list[bytes | None]) -> bytes:
    """A Bind of the unnamed statement with text parameters (as on the wire)."""
    body = b"\x00\x00\x00\x00" + struct.pack("!H", len(params))
    for value in params:
        body += b"\xff\xff\xff\xff" if value is None else struct.pack("!i", len(value)) + value
    return body + b"\x00\x00"


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.none(), values), max_size=8))
def test_clean_verdict_on_a_bind_implies_no_finding_in_any_parameter(
    params: list[str | None],
) -> None:
    """Bind parameters are recorded unscanned when the whole message is clean."""
    encoded = [v.encode() if v is not None else None for v in params]
    if not PRECHECK.may_contain(_bind_body(encoded)):
        for value in encoded:
            if value:
                assert SCANNER.scan(value) == [], value


def test_custom_detectors_disable_the_precheck() -> None:
    from sluice.masking.detectors import regex_detector

    check = RegionPrecheck([*DETECTORS, regex_detector("emp", r"\bEMP-\d{6}\b")])
    assert not check.usable
    assert check.may_contain(b"anything")


def test_each_thread_scans_with_a_scratch_of_its_own() -> None:
    """A hyperscan scratch serves one scan at a time: the first thread keeps
    one without a thread-local, every other thread gets its own, and all of
    them scan as the first does, at the same time."""
    import threading

    import hyperscan

    from sluice.masking.precheck import ThreadScratch

    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[rb"secret"], ids=[0])
    scratches = ThreadScratch(db)
    mine = scratches.get()
    assert scratches.get() is mine
    seen: dict[int, object] = {}
    barrier = threading.Barrier(4)

    def scan(n: int) -> None:
        scratch = scratches.get()
        barrier.wait()
        hits: list[int] = []

        def on_match(idx: int, start: int, end: int, flags: int, ctx: object) -> None:
            hits.append(end)

        for _ in range(200):
            db.scan(b"x" * 5000 + b"secret", on_match, 0, None, scratch)
        assert scratches.get() is scratch
        assert hits == [5006] * 200
        seen[n] = scratch

    threads = [threading.Thread(target=scan, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in seen.values()} | {id(mine)}) == 5
    # A scanner and a pre-check scan on several threads at once and agree.
    scanner = Scanner(list(BUILTIN_DETECTORS.values()))
    precheck = RegionPrecheck(list(BUILTIN_DETECTORS.values()))
    text = b"mail ann@example.com or call 555-867-5309"
    expected = [(f.start, f.end, f.detector) for f in scanner.scan(text)]
    results: list[bool] = []

    def both() -> None:
        for _ in range(100):
            found = [(f.start, f.end, f.detector) for f in scanner.scan(text)]
            results.append(found == expected and precheck.may_contain(text))

    workers = [threading.Thread(target=both) for _ in range(3)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert expected
    assert results == [True] * 300
