"""Prove a session log intact, or say exactly where and how it is not.

`verify` never raises: every outcome, including an unreadable file, is a
`VerifyReport`. It stops at the first problem and names the record number
(the position the record should have in the chain), the 1-based line, and
what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

from sluice.recording.format import (
    MAX_RECORD_BYTES,
    Chain,
    MacAlgorithm,
    key_id,
    split_line,
)
from sluice.recording.records import RecordKind


class Problem(StrEnum):
    UNREADABLE = "unreadable"  # the file cannot be opened or read
    EMPTY = "empty"  # no records at all
    MALFORMED = "malformed"  # a line is not a well-formed record
    ALTERED = "altered"  # a record's bytes do not match its digest
    MISSING = "missing"  # records were deleted (sequence gap)
    REORDERED = "reordered"  # records are out of order or duplicated
    CHAIN_BROKEN = "chain_broken"  # a record does not link to its predecessor
    TRUNCATED = "truncated"  # the file ends in the middle of a record
    UNSEALED = "unsealed"  # the log ends without a seal record
    TRAILING_DATA = "trailing_data"  # bytes after the seal
    KEY_REQUIRED = "key_required"  # the log is chained with a key and none was given
    WRONG_KEY = "wrong_key"  # the log was chained with another key
    NOT_AUTHENTICATED = "not_authenticated"  # a key is configured, the log's chain is unkeyed
    INTERNAL = "internal"  # a bug in the verifier; the log is not trusted


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    path: Path
    ok: bool
    session_id: str | None = None
    records: int = 0  # records verified before the first problem (or all)
    sealed: bool = False
    authenticated: bool = False  # the chain was checked with the key
    algorithm: MacAlgorithm | None = None  # the chain's, as its start record names it
    problem: Problem | None = None
    record: int | None = None  # record number (0-based sequence) of the problem
    line: int | None = None  # 1-based line number of the problem
    detail: str = ""

    def summary(self) -> str:
        if self.ok:
            how = f"{self.algorithm}" + (", key verified" if self.authenticated else "")
            return f"{self.path}: intact, sealed, {self.records} records ({how})"
        where = []
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.line is not None:
            where.append(f"line {self.line}")
        at = f" at {', '.join(where)}" if where else ""
        return f"{self.path}: {self.problem}{at}: {self.detail}"


class _Fail(Exception):
    def __init__(self, problem: Problem, detail: str, *, record: int | None, line: int | None):
        super().__init__(detail)
        self.problem = problem
        self.detail = detail
        self.record = record
        self.line = line


def _lines(f: BinaryIO) -> Iterator[bytes]:
    while True:
        raw = f.readline(MAX_RECORD_BYTES + 1)
        if not raw:
            return
        yield raw


def _decode(raw: bytes, *, record: int, line: int) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _Fail(Problem.MALFORMED, f"not valid JSON: {exc}", record=record, line=line) from None
    if not isinstance(obj, dict):
        raise _Fail(Problem.MALFORMED, "not a JSON object", record=record, line=line)
    return obj


def _seq_of(obj: dict[str, Any]) -> int | None:
    seq = obj.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


class _Verifier:
    def __init__(self, path: Path, key: bytes | None) -> None:
        self.path = path
        self.key = key
        self.chain: Chain | None = None
        self.algorithm: MacAlgorithm | None = None
        self.session_id: str | None = None
        self.expected = 0  # next sequence number
        self.prev = ""  # digest the next record must link to
        self.offset = 0  # bytes consumed
        self.sealed = False

    def run(self, f: BinaryIO) -> None:
        lines = _lines(f)
        line_no = 0
        for raw in lines:
            line_no += 1
            rec = self.expected
            if self.sealed:
                raise _Fail(
                    Problem.TRAILING_DATA,
                    f"{len(raw)}+ bytes after the seal record",
                    record=rec,
                    line=line_no,
                )
            if not raw.endswith(b"\n"):
                if len(raw) > MAX_RECORD_BYTES:
                    raise _Fail(
                        Problem.MALFORMED,
                        f"line longer than {MAX_RECORD_BYTES} bytes",
                        record=rec,
                        line=line_no,
                    )
                raise _Fail(
                    Problem.TRUNCATED,
                    f"file ends inside record {rec} ({len(raw)} bytes of a partial line)",
                    record=rec,
                    line=line_no,
                )
            parts = split_line(raw)
            if parts is None:
                raise _Fail(
                    Problem.MALFORMED,
                    "line does not end with a well-formed digest trailer",
                    record=rec,
                    line=line_no,
                )
            content, stated = parts
            obj = _decode(raw, record=rec, line=line_no)
            if line_no == 1:
                self._start(obj, line_no)
            assert self.chain is not None
            if self.chain.digest(content) != stated:
                raise _Fail(
                    Problem.ALTERED,
                    "record bytes do not match their digest (content modified"
                    + (", or the chain was recomputed without the key)" if self.key else ")"),
                    record=rec,
                    line=line_no,
                )
            seq = _seq_of(obj)
            if seq is None:
                raise _Fail(Problem.MALFORMED, "missing sequence number", record=rec, line=line_no)
            if seq != rec:
                self._misordered(seq, lines, line_no)
            if obj.get("prev") != self.prev:
                raise _Fail(
                    Problem.CHAIN_BROKEN,
                    "record does not link to the previous record's digest "
                    "(a record was inserted, replaced or the chain rewritten)",
                    record=rec,
                    line=line_no,
                )
            kind = obj.get("kind")
            if kind == RecordKind.START and rec != 0:
                raise _Fail(Problem.MALFORMED, "a second start record", record=rec, line=line_no)
            if kind == RecordKind.SEAL:
                if obj.get("records") != rec or obj.get("bytes") != self.offset:
                    raise _Fail(
                        Problem.MALFORMED,
                        "seal counts do not match the log",
                        record=rec,
                        line=line_no,
                    )
                self.sealed = True
            self.prev = stated
            self.expected += 1
            self.offset += len(raw)
        if line_no == 0:
            raise _Fail(Problem.EMPTY, "the file has no records", record=None, line=None)
        if not self.sealed:
            raise _Fail(
                Problem.UNSEALED,
                f"log ends after record {self.expected - 1} without a seal "
                "(session still open, crashed, or the tail was cut off)",
                record=self.expected,
                line=line_no + 1,
            )

    def _start(self, obj: dict[str, Any], line_no: int) -> None:
        if obj.get("kind") != RecordKind.START:
            raise _Fail(
                Problem.MALFORMED, "first record is not a start record", record=0, line=line_no
            )
        sid, started, mac = obj.get("session_id"), obj.get("started_at"), obj.get("mac")
        if not isinstance(sid, str) or not isinstance(started, str):
            raise _Fail(
                Problem.MALFORMED,
                "start record lacks session_id/started_at",
                record=0,
                line=line_no,
            )
        self.session_id = sid
        algorithm = next((known for known in MacAlgorithm if known == mac), None)
        if algorithm is None:
            raise _Fail(
                Problem.MALFORMED, f"unknown chain algorithm {mac!r}", record=0, line=line_no
            )
        if not algorithm.keyed:
            if self.key is not None:
                raise _Fail(
                    Problem.NOT_AUTHENTICATED,
                    f"a key is configured but the log is chained with plain {algorithm} "
                    "(anyone can recompute such a chain)",
                    record=0,
                    line=line_no,
                )
        else:
            if self.key is None:
                raise _Fail(
                    Problem.KEY_REQUIRED,
                    f"the log is chained with a key ({algorithm}); verifying it needs "
                    "the recording key",
                    record=0,
                    line=line_no,
                )
            if obj.get("key_id") != key_id(self.key):
                raise _Fail(
                    Problem.WRONG_KEY,
                    f"the log was chained with key id {obj.get('key_id')!r}, "
                    f"not {key_id(self.key)!r}",
                    record=0,
                    line=line_no,
                )
        self.algorithm = algorithm
        self.chain = Chain(self.key if algorithm.keyed else None, algorithm.hash)
        self.prev = self.chain.genesis(sid, started)

    def _misordered(self, seq: int, lines: Iterator[bytes], line_no: int) -> None:
        rec = self.expected
        if seq < rec:
            raise _Fail(
                Problem.REORDERED,
                f"found record {seq} where record {rec} belongs (duplicated or moved back)",
                record=rec,
                line=line_no,
            )
        nxt = next(lines, b"")
        nxt_obj: dict[str, Any] = {}
        if nxt.endswith(b"\n"):
            try:
                decoded = json.loads(nxt)
                nxt_obj = decoded if isinstance(decoded, dict) else {}
            except (ValueError, RecursionError):
                nxt_obj = {}
        if _seq_of(nxt_obj) == rec:
            raise _Fail(
                Problem.REORDERED,
                f"records {rec} and {seq} are swapped (line {line_no} holds record {seq})",
                record=rec,
                line=line_no,
            )
        missing = f"record {rec}" if seq == rec + 1 else f"records {rec}..{seq - 1}"
        raise _Fail(
            Problem.MISSING,
            f"{missing} missing (line {line_no} holds record {seq})",
            record=rec,
            line=line_no,
        )


def verify(path: Path, *, key: bytes | None = None) -> VerifyReport:
    """Check a session log's hash chain, sequence and seal.

    With `key` (the recording key), the log must be chained with that key
    (keyed BLAKE3 or HMAC-SHA256); an unkeyed log is then reported
    NOT_AUTHENTICATED.
    """
    v = _Verifier(path, key)
    try:
        with path.open("rb") as f:
            v.run(f)
    except _Fail as fail:
        return VerifyReport(
            path=path,
            ok=False,
            session_id=v.session_id,
            records=v.expected,
            sealed=v.sealed,
            authenticated=False,
            problem=fail.problem,
            record=fail.record,
            line=fail.line,
            detail=fail.detail,
        )
    except OSError as exc:
        return VerifyReport(
            path=path,
            ok=False,
            session_id=v.session_id,
            records=v.expected,
            problem=Problem.UNREADABLE,
            detail=str(exc.strerror or exc),
        )
    except Exception as exc:  # fail closed: a verifier bug never passes a log
        return VerifyReport(
            path=path,
            ok=False,
            session_id=v.session_id,
            records=v.expected,
            problem=Problem.INTERNAL,
            detail=f"{type(exc).__name__}: {exc}",
        )
    return VerifyReport(
        path=path,
        ok=True,
        session_id=v.session_id,
        records=v.expected,
        sealed=True,
        authenticated=key is not None,
        algorithm=v.algorithm,
    )
