"""The on-disk format of a session log: JSON lines, hash-chained.

Each record is one line of ASCII JSON whose *last* member is ``"h"``, the
record's own digest, written in a fixed-width trailer::

    {"seq":5,"prev":"<64 hex>","kind":"statement",...,"h":"<64 hex>"}\\n

``h`` is computed over the exact bytes of the line up to (not including) the
trailer ``,"h":"...."}``, so verification hashes raw bytes and never depends on
re-serialising JSON. ``prev`` is the ``h`` of the previous record; record 0's
``prev`` is the genesis digest of the session id and start time. The digest is
SHA-256, BLAKE3, or (the default) SHA-256 for records under 4 KiB and BLAKE3
for larger ones; with a key it is keyed (HMAC-SHA256, BLAKE3's keyed mode),
so nobody without the key can recompute the chain. See
docs/recording-format.md.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Final, Protocol

import blake3
import orjson


class RecordSealer(Protocol):
    """Seals a record in one call: `_seal.Sealer` (see `_seal.c`)."""

    def seal(
        self, seq: int, prev: str, kind: str, t: float, wall: bytes, members: bytes, limit: int, /
    ) -> tuple[bytes, str] | None: ...


new_sealer: Callable[[bytes | None], RecordSealer] | None
try:  # compiled when a compiler and OpenSSL's headers were there at install
    from sluice.recording._seal import Sealer as new_sealer
except ImportError:  # the Python path (Recorder._record_head, seal_record) does the same
    new_sealer = None

FORMAT_VERSION: Final = 4
"""2: a statement record may carry its verdict, a complete record its last rows.
3: COPY data is recorded (`copy` records), the end record counts its bytes.
4: every execution of a prepared statement is recorded (`bind` records, with
its parameters)."""
LOG_SUFFIX: Final = ".slog"

MAX_RECORD_BYTES: Final = 16 * 1024 * 1024
"""Longest line a reader accepts; the writer never produces a longer one."""

HASH_HEX_LEN: Final = 64
TRAILER_HEAD: Final = b',"h":"'
TRAILER_TAIL: Final = b'"}\n'
TRAILER_LEN: Final = len(TRAILER_HEAD) + HASH_HEX_LEN + len(TRAILER_TAIL)

_HEX: Final = re.compile(rb"[0-9a-f]{64}")
_DUMPS: Final = orjson.dumps  # bound once: compiled, a module attribute is looked up per use
SESSION_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Session ids become file names: no separators, no leading dot."""

_GENESIS_LABEL: Final = b"sluice-recording/1\x00"
_KEY_ID_LABEL: Final = b"sluice-recording-key-id/1"
_BLAKE3_KEY_CONTEXT: Final = "sluice-recording/1 chain key"
"""BLAKE3's key derivation context: the configured key (any length) becomes
the 32-byte key of BLAKE3's keyed mode."""

MIN_KEY_BYTES: Final = 16


class ChainHash(StrEnum):
    """The hash a new log is chained with (`recording.hash`)."""

    BLAKE3 = "blake3"
    SHA256 = "sha256"
    SHA256_BLAKE3 = "sha256+blake3"
    """SHA-256 for records under BULK_RECORD_BYTES, BLAKE3 for the others."""


BULK_RECORD_BYTES: Final = 4096
"""Under `sha256+blake3`, records whose hashed bytes number at least this are
hashed with BLAKE3, the others with SHA-256: the size from which BLAKE3, which
hashes four 1 KiB chunks at once with SIMD, is the faster of the two here
(2.4 against 3.5 us at 4 KiB, 65 against 183 us at 256 KiB; SHA-256 is faster
on a statement's few hundred bytes, 0.9 against 1.2 us)."""


class MacAlgorithm(StrEnum):
    """A log's digest, as its start record names it (`mac`)."""

    SHA256 = "sha256"
    HMAC_SHA256 = "hmac-sha256"
    BLAKE3 = "blake3"
    BLAKE3_KEYED = "blake3-keyed"
    SHA256_BLAKE3 = "sha256+blake3"
    HMAC_SHA256_BLAKE3_KEYED = "hmac-sha256+blake3-keyed"

    @property
    def keyed(self) -> bool:
        return _CHAIN_OF[self][1]

    @property
    def hash(self) -> ChainHash:
        return _CHAIN_OF[self][0]


_ALGORITHMS: Final = {
    (ChainHash.SHA256, False): MacAlgorithm.SHA256,
    (ChainHash.SHA256, True): MacAlgorithm.HMAC_SHA256,
    (ChainHash.BLAKE3, False): MacAlgorithm.BLAKE3,
    (ChainHash.BLAKE3, True): MacAlgorithm.BLAKE3_KEYED,
    (ChainHash.SHA256_BLAKE3, False): MacAlgorithm.SHA256_BLAKE3,
    (ChainHash.SHA256_BLAKE3, True): MacAlgorithm.HMAC_SHA256_BLAKE3_KEYED,
}
"""The name of each chain: (hash, keyed) -> `mac`."""
_CHAIN_OF: Final = {mac: chain for chain, mac in _ALGORITHMS.items()}


class Chain:
    """Computes record digests: SHA-256, BLAKE3, or by size either (`sha256+blake3`,
    see BULK_RECORD_BYTES); keyed when there is a key.

    BLAKE3 hashes large records (a rows record holds up to 256 KiB of rows)
    about three times faster than SHA-256 here, and small ones more slowly
    (its hasher is larger to copy); its keyed mode is a MAC by design, with
    the configured key turned into its 32-byte key by BLAKE3's own key
    derivation. For SHA-256 the key makes it HMAC-SHA256.

    The HMAC's inner and outer hash states after the padded key are computed
    once (RFC 2104's precomputation); each digest copies them instead of
    setting the key up again, which halves its cost on a record per statement.
    """

    __slots__ = (
        "_blake3",
        "_blake3_from",
        "_inner",
        "_outer",
        "algorithm",
        "key_id",
        "sealer",
        "sealer_below",
    )

    def __init__(self, key: bytes | None, hash: ChainHash) -> None:
        self.key_id: str | None = None if key is None else key_id(key)
        self.algorithm: MacAlgorithm = _ALGORITHMS[hash, key is not None]
        self._blake3: blake3.blake3 | None = None
        # With `_blake3`: records of at least this many bytes are hashed with it.
        self._blake3_from = 0 if hash == ChainHash.BLAKE3 else BULK_RECORD_BYTES
        self._inner: hashlib._Hash | None = None
        self._outer: hashlib._Hash | None = None
        self.sealer: RecordSealer | None = None
        """Seals whole records hashed with SHA-256 in one compiled call (see
        `_seal.c`); the same bytes as `seal_record`. None when not built or
        under BLAKE3 alone."""
        self.sealer_below = 0
        """The sealer takes records whose hashed bytes number fewer than this."""
        padded: bytes | None = None
        if hash != ChainHash.SHA256:
            if key is None:
                self._blake3 = blake3.blake3()
            else:
                derived = blake3.blake3(key, derive_key_context=_BLAKE3_KEY_CONTEXT).digest()
                self._blake3 = blake3.blake3(key=derived)
        if hash != ChainHash.BLAKE3 and key is not None:
            block = hashlib.sha256().block_size
            padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
            self._inner = hashlib.sha256(padded.translate(_IPAD))
            self._outer = hashlib.sha256(padded.translate(_OPAD))
        if hash != ChainHash.BLAKE3 and new_sealer is not None:
            self.sealer = new_sealer(padded)
            self.sealer_below = self._blake3_from if self._blake3 is not None else MAX_RECORD_BYTES

    def digest(self, data: bytes | memoryview) -> str:
        return self.digest_parts((data,))

    def digest_parts(self, parts: tuple[bytes | memoryview, ...]) -> str:
        """`digest` of the concatenation of `parts`, without making it."""
        if self._blake3 is not None and sum(map(len, parts)) >= self._blake3_from:
            state = self._blake3.copy()
            for part in parts:
                state.update(part)
            return state.hexdigest()
        inner = hashlib.sha256() if self._inner is None else self._inner.copy()
        for part in parts:
            inner.update(part)
        if self._outer is None:
            return inner.hexdigest()
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def genesis(self, session_id: str, started_at: str) -> str:
        return self.digest(_GENESIS_LABEL + session_id.encode() + b"\x00" + started_at.encode())


_IPAD: Final = bytes(b ^ 0x36 for b in range(256))
_OPAD: Final = bytes(b ^ 0x5C for b in range(256))


def key_id(key: bytes) -> str:
    """A short public identifier of a key (an HMAC, so it reveals nothing about it)."""
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]


WIRE_ENCODING: Final = "pg-datarow"
"""Rows recorded as base64 of concatenated PostgreSQL DataRow messages."""


def encode_record(body: dict[str, Any], chain: Chain) -> tuple[bytes, str]:
    """Serialise one record; returns the full line and its digest."""
    # orjson: compact UTF-8 JSON, control characters escaped, several times
    # faster than the standard library on this hot path.
    return seal_record(memoryview(_DUMPS(body))[:-1], chain)  # no closing brace, no copy


def seal_record(content: bytes | memoryview, chain: Chain) -> tuple[bytes, str]:
    """The line of a record whose JSON, without its closing brace, is `content`."""
    digest = chain.digest(content)
    return b"".join((content, TRAILER_HEAD, digest.encode("ascii"), TRAILER_TAIL)), digest


def split_line(line: bytes) -> tuple[bytes, str] | None:
    """Split a complete line into (hashed content, stated digest), or None if malformed."""
    if len(line) <= TRAILER_LEN or not line.endswith(TRAILER_TAIL):
        return None
    head = len(line) - TRAILER_LEN
    if line[head : head + len(TRAILER_HEAD)] != TRAILER_HEAD:
        return None
    digest = line[head + len(TRAILER_HEAD) : -len(TRAILER_TAIL)]
    if not _HEX.fullmatch(digest):
        return None
    return line[:head], digest.decode("ascii")
