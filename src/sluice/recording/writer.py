"""The per-session recorder used on the proxy hot path.

Records are encoded as they come and kept in a small buffer; the buffer is
handed to the OS with os.write when a statement, verdict, approval or error is
recorded (the proxy forwards a statement only after `statement()` returned),
when it grows past WRITE_BUFFER_BYTES, and at the end. Rows are batched into
one record per ROW_BATCH_BYTES. A Recorder belongs to one session and is not
thread-safe; it is meant to be called from that session's event-loop task.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import orjson
import pybase64

from sluice.events import SessionContext
from sluice.policy.verdict import Allow, Block, RequireApproval, Verdict
from sluice.recording.errors import RecordingError
from sluice.recording.finisher import FINISHER
from sluice.recording.format import (
    FORMAT_VERSION,
    MAX_RECORD_BYTES,
    TRAILER_HEAD,
    TRAILER_LEN,
    TRAILER_TAIL,
    WIRE_ENCODING,
    Chain,
    ChainHash,
    seal_record,
)
from sluice.recording.pagecache import RELEASER, ReleasedLog
from sluice.recording.records import RecordKind

log = logging.getLogger(__name__)

# Bound once: compiled, a module attribute is looked up at every use.
_DUMPS: Final = orjson.dumps
_TIME_NS: Final = time.time_ns
_B64: Final = pybase64.b64encode
_B64_TEXT: Final = pybase64.b64encode_as_string

# Record kinds as plain strings: the hot path serialises them per record.
_APPROVAL: Final = RecordKind.APPROVAL.value
_BIND: Final = RecordKind.BIND.value
_CAP: Final = RecordKind.CAP.value
_COMPLETE: Final = RecordKind.COMPLETE.value
_COPY: Final = RecordKind.COPY.value
_END: Final = RecordKind.END.value
_ERROR: Final = RecordKind.ERROR.value
_NOTICE: Final = RecordKind.NOTICE.value
_OMITTED: Final = RecordKind.OMITTED.value
_RESULT: Final = RecordKind.RESULT.value
_ROWS: Final = RecordKind.ROWS.value
_SEAL: Final = RecordKind.SEAL.value
_START: Final = RecordKind.START.value
_STATEMENT: Final = RecordKind.STATEMENT.value
_VERDICT: Final = RecordKind.VERDICT.value

WRITE_BUFFER_BYTES: Final = 64 * 1024
"""Buffered records are written out past this, bounding memory and loss on a crash."""

ROW_BATCH_BYTES: Final = 64 * 1024
"""Rows are grouped into one record of roughly this size (one hash per batch)."""

FailureHook = Callable[[str, RecordingError], None]
"""Called with (session_id, error) once when a log fails, e.g. to audit it."""


_wall_cache: Final[list[Any]] = [0, b"", -1, b""]  # millisecond, its text; second, its prefix

_MILLIS_TEXT: Final = tuple(b".%03d+00:00" % millis for millis in range(1000))
"""A record's wall-clock text after the second, per millisecond: joined to
the second's text, not formatted (a format spec costs 0.6 µs)."""


def _now_wall() -> bytes:
    """Wall-clock time of a record, to the millisecond (offsets `t` are exact).

    Formatting a timestamp per record is a measurable share of the hot path,
    so the text is reused within the same millisecond, and the date and time
    up to the second within the same second.
    """
    return _wall_text(_TIME_NS() // 1_000_000)


def _wall_text(millis: int) -> bytes:
    """`_now_wall` at `millis` since the epoch."""
    cache = _wall_cache
    if millis != cache[0]:
        seconds = millis // 1000  # native integer arithmetic: divmod() is a generic call
        if seconds != cache[2]:
            stamp = dt.datetime.fromtimestamp(seconds, dt.UTC)
            cache[2] = seconds
            # without "+00:00"
            cache[3] = stamp.isoformat(timespec="seconds")[:-6].encode("ascii")
        cache[0] = millis
        cache[1] = cache[3] + _MILLIS_TEXT[millis % 1000]
    text: bytes = cache[1]
    return text


def _now_iso() -> str:
    return _now_wall().decode("ascii")


_RECORD_HEAD: Final = b'{"seq":%d,"prev":"%b","kind":"%b","t":%a,"wall":"%b",%b'
"""A record's JSON up to its last member, as orjson would write the same
members: the common members, then the record's own (`_members`)."""


def _members(kind: str, fields: dict[str, Any]) -> bytes:
    """A record's own members as JSON, without the braces."""
    try:
        return _DUMPS(fields)[1:-1]
    except (TypeError, ValueError) as exc:
        raise RecordingError(f"cannot encode {kind} record: {exc}") from None


WIRE_CHUNK_BYTES: Final = 256 * 1024
"""Wire rows are gathered into records of about this many raw bytes."""

WIRE_SPLIT_BYTES: Final = 4 * 1024 * 1024
"""Gathered wire rows beyond this are split at row boundaries into
WIRE_CHUNK_BYTES records; below it they are one record (no walk over rows)."""


def _wire_chunks(
    data: bytes | memoryview, count: int, limit: int
) -> list[tuple[bytes | memoryview, int]]:
    """Split concatenated frames at frame boundaries into chunks of about `limit`."""
    if len(data) <= limit:
        return [(data, count)]
    chunks = []
    start = pos = rows = 0
    size = len(data)
    while pos + 5 <= size:
        end = pos + 1 + int.from_bytes(data[pos + 1 : pos + 5], "big")
        if pos > start and end - start > limit:
            chunks.append((data[start:pos], rows))
            start, rows = pos, 0
        pos = end
        rows += 1
    chunks.append((data[start:], rows))
    return chunks


def _wire_fields(count: int, formats: list[int]) -> dict[str, Any]:
    """The members of `count` rows recorded as their wire messages, with `wire`
    (the base64 of the messages, written in its place) left empty."""
    return {"encoding": WIRE_ENCODING, "formats": formats, "count": count, "wire": ""}


_WIRE_TAIL: Final = b'"'
"""Closes the `wire` member, the last of a rows record."""


_VERDICT_MEMBERS: Final[dict[int, tuple[Verdict, bytes]]] = {}
"""The JSON members of recently recorded verdicts, by object: the policy
engine hands out the same verdict object for statements judged alike."""
_VERDICT_CACHE_SIZE: Final = 1024


def _cached_verdict_members(verdict: Verdict) -> bytes:
    cached = _VERDICT_MEMBERS.get(id(verdict))
    if cached is not None and cached[0] is verdict:
        return cached[1]
    members = _members(_STATEMENT, _verdict_fields(verdict))
    if len(_VERDICT_MEMBERS) >= _VERDICT_CACHE_SIZE:
        _VERDICT_MEMBERS.clear()
    _VERDICT_MEMBERS[id(verdict)] = (verdict, members)
    return members


def _verdict_fields(verdict: Verdict) -> dict[str, Any]:
    fields: dict[str, Any]
    if isinstance(verdict, Allow):
        profiles = verdict.mask.profiles if verdict.mask else ()
        fields = {"verdict": "allow", "mask_profiles": list(profiles), "approver_groups": []}
    elif isinstance(verdict, Block):
        fields = {"verdict": "block", "mask_profiles": [], "approver_groups": []}
    elif isinstance(verdict, RequireApproval):
        profiles = verdict.mask.profiles if verdict.mask else ()
        fields = {
            "verdict": "require_approval",
            "mask_profiles": list(profiles),
            "approver_groups": list(verdict.approver_groups),
        }
    else:  # pragma: no cover - Verdict is a closed union
        raise RecordingError(f"unknown verdict type {type(verdict).__name__}")
    fields["rule"] = verdict.rule
    fields["reason"] = verdict.reason
    return fields


def _capped_param(value: Any) -> Any:
    """A bound value as the log keeps it once capped: its size only."""
    if isinstance(value, str):
        size = len(value.encode())
    elif isinstance(value, dict) and "binary" in value:
        size = len(pybase64.b64decode(value["binary"]))
    elif isinstance(value, dict) and "binary_text" in value:
        size = len(value["binary_text"].encode())
    else:  # NULL, or already omitted
        return value
    return {"omitted": "the log reached its size cap", "bytes": size}


def _row_size(row: Sequence[str | None]) -> int:
    return sum(map(len, filter(None, row))) + 4 * len(row) + 2


class Recorder:
    """Append-only, hash-chained log of one session. Create with `Recorder.open`."""

    __slots__ = (
        "_buf",
        "_capped",
        "_chain",
        "_clock",
        "_columns",
        "_copy",
        "_copy_bytes",
        "_copy_direction",
        "_copy_dropped",
        "_copy_recorded",
        "_ended",
        "_failed",
        "_fd",
        "_fsync_on_end",
        "_max_bytes",
        "_on_failure",
        "_pending",
        "_pending_bytes",
        "_prev",
        "_release",
        "_required",
        "_rows_dropped",
        "_rows_recorded",
        "_seq",
        "_size",
        "_statements",
        "_t0",
        "_wire",
        "_wire_bytes",
        "_wire_count",
        "_wire_formats",
        "path",
        "session_id",
    )

    def __init__(
        self,
        *,
        path: Path,
        session_id: str,
        fd: int | None,
        chain: Chain,
        max_bytes: int,
        required: bool,
        fsync_on_end: bool,
        on_failure: FailureHook | None,
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self.session_id = session_id
        self._fd = fd
        self._release: ReleasedLog | None = None
        self._chain = chain
        self._max_bytes = max_bytes
        self._required = required
        self._fsync_on_end = fsync_on_end
        self._on_failure = on_failure
        self._clock = clock
        self._t0 = clock()
        self._buf = bytearray()
        self._seq = 0
        self._prev = ""
        self._size = 0
        self._pending: list[list[str | None]] = []
        self._pending_bytes = 0
        self._columns: tuple[str, ...] | None = None
        self._capped = False
        self._ended = False
        self._failed: RecordingError | None = None
        self._statements = 0
        self._rows_recorded = 0
        self._rows_dropped = 0
        self._wire: list[bytes | memoryview] = []
        self._wire_count = 0
        self._wire_bytes = 0
        self._wire_formats: Sequence[int] = ()
        self._copy: list[bytes] = []
        self._copy_direction = ""
        self._copy_bytes = 0
        self._copy_recorded = 0
        self._copy_dropped = 0

    # -- construction -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        context: SessionContext,
        *,
        key: bytes | None = None,
        hash: ChainHash = ChainHash.SHA256_BLAKE3,
        max_bytes: int,
        required: bool = True,
        fsync_on_end: bool = True,
        on_failure: FailureHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Recorder:
        """Create the log file (it must not exist) and write the start record.

        Raises RecordingError if that fails and `required`; otherwise returns a
        recorder that records nothing (and reports the failure to `on_failure`).
        """
        chain = Chain(key, hash)
        rec = cls(
            path=path,
            session_id=context.session_id,
            fd=None,
            chain=chain,
            max_bytes=max_bytes,
            required=required,
            fsync_on_end=fsync_on_end,
            on_failure=on_failure,
            clock=clock,
        )
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
            rec._fd = os.open(path, flags, 0o600)
        except OSError as exc:
            rec._fail(exc)
            return rec
        rec._release = RELEASER.track(path)
        started_at = _now_iso()
        rec._prev = chain.genesis(context.session_id, started_at)
        identity = context.identity
        rec._append(
            _START,
            {
                "session_id": context.session_id,
                "started_at": started_at,
                "user": identity.user,
                "groups": list(identity.groups),
                "token_id": identity.token_id,
                "connection": context.connection,
                "protocol": str(context.protocol),
                "client_addr": context.client_addr,
                "format": FORMAT_VERSION,
                "mac": str(chain.algorithm),
                "key_id": chain.key_id,
                "max_bytes": max_bytes,
            },
            flush=True,
        )
        return rec

    # -- state ------------------------------------------------------------------

    @property
    def bytes_written(self) -> int:
        """Bytes of the log so far, including records still buffered."""
        return self._size

    @property
    def capped(self) -> bool:
        return self._capped

    @property
    def failed(self) -> RecordingError | None:
        return self._failed

    @property
    def ended(self) -> bool:
        return self._ended

    # -- hot-path API -----------------------------------------------------------

    def statement(
        self,
        sql: str,
        *,
        origin: str,
        statement_name: str | None = None,
        verdict: Verdict | None = None,
        flush: bool = True,
    ) -> None:
        """Record a statement; it is handed to the OS before this returns.

        With `verdict`, the policy's verdict is part of the same record (one
        record and one digest per statement instead of two). With
        `flush=False` it is handed over with the next flushed record.
        """
        if self._usable():
            self._statements += 1
            members = _members(
                _STATEMENT, {"sql": sql, "origin": str(origin), "statement_name": statement_name}
            )
            if verdict is not None:
                members = b"%b,%b" % (members, _cached_verdict_members(verdict))
            self._append_members(_STATEMENT, members, flush=flush)

    def bind(self, statement_name: str | None, portal: str | None, params: list[Any]) -> None:
        """Record an execution of a prepared statement with its parameters
        (as `BindValue` JSON: strings, nulls, objects); handed to the OS before
        this returns. Past the size cap only the parameters' sizes are kept."""
        if not self._usable():
            return
        if self._capped:
            params = [_capped_param(value) for value in params]
        self._append(
            _BIND,
            {"statement_name": statement_name, "portal": portal, "params": params},
            flush=True,
        )

    def verdict(self, verdict: Verdict) -> None:
        """Record the policy verdict for the last statement (written out at once)."""
        if self._usable():
            self._append(_VERDICT, _verdict_fields(verdict), flush=True)

    def approval(
        self, *, state: str, approval_id: str, actor: str | None = None, reason: str = ""
    ) -> None:
        """Record an approval event: requested, approved, denied, expired, withdrawn."""
        if self._usable():
            self._append(
                _APPROVAL,
                {"state": state, "approval_id": approval_id, "actor": actor, "reason": reason},
                flush=True,
            )

    def columns(self, names: Sequence[str], types: Sequence[str] | None = None) -> None:
        """Record result metadata (column names and type names)."""
        if not self._usable():
            return
        types = types if types is not None else [""] * len(names)
        if len(types) != len(names):
            raise RecordingError("columns: names and types differ in length")
        self._columns = tuple(names)
        self._append(
            _RESULT,
            {"columns": [{"name": n, "type": t} for n, t in zip(names, types, strict=True)]},
            flush=False,
        )

    def rows(self, columns: Sequence[str], rows: Sequence[Sequence[str | None]]) -> None:
        """Record result rows as delivered to the client (already masked)."""
        if not self._usable():
            return
        if self._columns is None or tuple(columns) != self._columns:
            self.columns(columns)
        if self._capped:
            self._rows_dropped += len(rows)
            return
        pending = self._pending
        size = self._pending_bytes
        for row in rows:
            pending.append(list(row))
            size += _row_size(row)
        self._pending_bytes = size
        if size >= ROW_BATCH_BYTES:
            self._flush_rows()

    def wire_rows(
        self, columns: Sequence[str], formats: Sequence[int], data: bytes | memoryview, count: int
    ) -> None:
        """Record `count` rows as the exact wire messages delivered to the client.

        `data` is the concatenation of the protocol's row messages (PostgreSQL
        DataRow frames: type byte, 4-byte length, body); they are decoded only
        when the log is replayed, so recording a large result costs a copy and
        a hash, not a parse per row. `formats` gives each column's wire format
        (0 text, 1 binary). Rows are gathered up to about WIRE_CHUNK_BYTES or
        the result's end: a small result and its completion share one record.
        """
        if not self._usable():
            return
        if self._columns is None or (
            columns is not self._columns and tuple(columns) != self._columns
        ):
            self.columns(columns)
        if self._pending:
            self._flush_rows()
        if self._wire and formats != self._wire_formats:
            self._flush_wire()
        self._wire.append(data)
        self._wire_formats = formats
        self._wire_count += count
        self._wire_bytes += len(data)
        if self._wire_bytes >= WIRE_CHUNK_BYTES:
            self._flush_wire()

    def _take_wire(self) -> tuple[bytes | memoryview, int, list[int]]:
        wire = self._wire
        data = wire[0] if len(wire) == 1 else b"".join(wire)
        count, formats = self._wire_count, list(self._wire_formats)
        self._wire = []
        self._wire_count = self._wire_bytes = 0
        return data, count, formats

    def _flush_wire(self) -> None:
        """Write gathered wire rows as `rows` records (split, capped or omitted)."""
        if not self._wire:
            return
        data, count, formats = self._take_wire()
        chunks = (
            [(data, count)]
            if len(data) <= WIRE_SPLIT_BYTES
            else _wire_chunks(data, count, WIRE_CHUNK_BYTES)
        )
        for chunk, rows in chunks:
            if self._capped:
                self._rows_dropped += rows
                continue
            # The line in pieces (head, base64, tail), hashed and written as
            # they are: a large record is never copied whole into another.
            members = _members(_ROWS, _wire_fields(rows, formats))[:-1]  # open: `"wire":"`
            head = self._record_head(_ROWS, members, self._elapsed())
            wire = _B64(chunk)  # SIMD; 3.6x binascii here
            size = len(head) + len(wire) + len(_WIRE_TAIL) + TRAILER_LEN
            if self._size + size > self._max_bytes:
                self._capped = True
                self._rows_dropped += rows
                self._commit(*self._encode(_CAP, {"limit_bytes": self._max_bytes}))
                continue
            if size > MAX_RECORD_BYTES:  # a single row larger than a record
                self._rows_dropped += rows
                self._commit(
                    *self._encode(
                        _OMITTED,
                        {"rows": rows, "reason": f"row longer than {MAX_RECORD_BYTES} bytes"},
                    )
                )
                continue
            digest = self._chain.digest_parts((head, wire, _WIRE_TAIL))
            self._commit_parts(
                (head, wire, _WIRE_TAIL, TRAILER_HEAD, digest.encode("ascii"), TRAILER_TAIL),
                digest,
                size,
            )
            self._rows_recorded += rows
        if len(self._buf) >= WRITE_BUFFER_BYTES:
            self._write_out()

    def copy_data(self, direction: str, data: bytes) -> None:
        """Record COPY data as it passed: `out` to the client, `in` to the server.

        The caller passes what the log may keep (masked when masking is on).
        Data is gathered into records of about WIRE_CHUNK_BYTES and written
        with the next flushed record; `flush()` hands it to the OS at once.
        """
        if not self._usable() or not data:
            return
        if self._copy and direction != self._copy_direction:
            self._flush_copy()
        if self._wire:
            self._flush_wire()
        if self._pending:
            self._flush_rows()
        self._copy.append(data)
        self._copy_direction = direction
        self._copy_bytes += len(data)
        if self._copy_bytes >= WIRE_CHUNK_BYTES:
            self._flush_copy()

    def copy_omitted(self, direction: str, size: int, reason: str) -> None:
        """Record that `size` bytes of COPY data passed but are not kept (and why)."""
        if not self._usable() or size <= 0:
            return
        self._copy_dropped += size
        self._append(_COPY, {"direction": direction, "bytes": size, "omitted": reason}, flush=False)

    def _flush_copy(self) -> None:
        """Write gathered COPY data as `copy` records of at most WIRE_CHUNK_BYTES."""
        if not self._copy:
            return
        data = self._copy[0] if len(self._copy) == 1 else b"".join(self._copy)
        direction = self._copy_direction
        self._copy = []
        self._copy_bytes = 0
        view = memoryview(data)
        for offset in range(0, len(data), WIRE_CHUNK_BYTES):
            chunk = view[offset : offset + WIRE_CHUNK_BYTES]
            size = len(chunk)
            if self._capped:
                self._copy_dropped += size
                continue
            line, digest = self._encode(
                _COPY,
                {
                    "direction": direction,
                    "bytes": size,
                    "data": _B64_TEXT(chunk),
                },
            )
            if self._size + len(line) > self._max_bytes:
                self._capped = True
                self._copy_dropped += size
                self._commit(*self._encode(_CAP, {"limit_bytes": self._max_bytes}))
                continue
            self._commit(line, digest)
            self._copy_recorded += size
        if len(self._buf) >= WRITE_BUFFER_BYTES:
            self._write_out()

    def complete(self, tag: str) -> None:
        """Record a command-complete tag (e.g. `SELECT 3`); ends the current result.

        Rows still gathered go into the same record when they fit. The columns
        stay known: a next result with the same columns (the same query again)
        gets no new result record; replay reuses the last one.
        """
        if not self._usable():
            return
        if self._copy:
            self._flush_copy()
        if self._wire and not self._capped:
            data, count, formats = self._take_wire()
            fields = {"tag": tag, **_wire_fields(count, formats)}
            fields["wire"] = _B64_TEXT(data)  # SIMD; 3.6x binascii here
            line, digest = self._encode(_COMPLETE, fields)
            if self._size + len(line) <= self._max_bytes and len(line) <= MAX_RECORD_BYTES:
                self._commit(line, digest)
                self._rows_recorded += count
                if len(self._buf) >= WRITE_BUFFER_BYTES:
                    self._write_out()
                return
            # Too big to share the record: the rows path caps or omits them.
            self._wire, self._wire_count, self._wire_bytes = [data], count, len(data)
            self._wire_formats = formats
        self._append(_COMPLETE, {"tag": tag}, flush=False)

    def error(self, *, sqlstate: str, message: str, source: str = "backend") -> None:
        """Record an error sent to the client (`source`: backend or gateway)."""
        if self._usable():
            self._append(
                _ERROR,
                {"sqlstate": sqlstate, "message": message, "source": source},
                flush=True,
            )
            self._columns = None

    def notice(self, message: str, *, severity: str = "NOTICE") -> None:
        if self._usable():
            self._append(_NOTICE, {"severity": severity, "message": message}, flush=False)

    def flush(self) -> None:
        """Hand everything recorded so far, rows included, to the OS."""
        if self._usable():
            self._flush_copy()
            self._flush_wire()
            self._flush_rows()
            self._write_out()

    def end(self, *, reason: str, bytes_in: int = 0, bytes_out: int = 0) -> None:
        """Write the end and seal records, then close: with `fsync_on_end`,
        a finisher thread fsyncs and closes the log (`FINISHER.drain()` waits
        for it). Idempotent."""
        if self._ended:
            return
        if self._failed is not None:  # already reported (raised or logged)
            self._ended = True
            return
        self._flush_copy()
        self._flush_wire()
        self._flush_rows()
        self._append(
            _END,
            {
                "reason": reason,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "statements": self._statements,
                "rows_recorded": self._rows_recorded,
                "rows_dropped": self._rows_dropped,
                "copy_bytes_recorded": self._copy_recorded,
                "copy_bytes_dropped": self._copy_dropped,
            },
            flush=False,
        )
        self._append(_SEAL, {"records": self._seq, "bytes": self._size}, flush=True)
        fd = self._fd
        self._ended = True
        self._fd = None
        if fd is None:
            return
        if self._fsync_on_end:  # off the event loop: an fsync may take long
            FINISHER.submit(fd, self._finished)
        else:
            os.close(fd)
            self._release_done()

    def _finished(self, error: OSError | None) -> None:
        """The finisher's report, from its thread: the sealed log is closed,
        fsynced unless `error`, which is reported like any failure of the log."""
        self._release_done()
        if error is None:
            return
        err = RecordingError(
            f"cannot fsync session log {self.path}: {error.strerror or error}",
            hint="check the recording directory's disk",
        )
        self._failed = err
        if self._on_failure is not None:
            try:
                self._on_failure(self.session_id, err)
            except Exception:
                log.exception("recording failure hook raised")
        log.error("session %s: %s", self.session_id, err.message)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end(reason="error" if exc_type is not None else "closed")

    # -- internals --------------------------------------------------------------

    def _usable(self) -> bool:
        if self._failed is not None:
            if self._required:
                raise RecordingError(self._failed.message, hint="the session log failed earlier")
            return False
        if self._ended:
            raise RecordingError(f"session log {self.session_id} is already sealed")
        return True

    def _encode(self, kind: str, fields: dict[str, Any]) -> tuple[bytes, str]:
        return self._encode_members(kind, _members(kind, fields))

    def _encode_members(self, kind: str, members: bytes) -> tuple[bytes, str]:
        """The line of the next record: `members` (JSON, no braces) after the common ones."""
        chain = self._chain
        t = self._elapsed()
        if chain.sealer is not None:  # compiled: the same bytes as the Python path below
            sealed = chain.sealer.seal(
                self._seq, self._prev, kind, t, _now_wall(), members, chain.sealer_below
            )
            if sealed is not None:
                return sealed
        return seal_record(self._record_head(kind, members, t), chain)

    def _elapsed(self) -> float:
        """Seconds since the log started, to the microsecond (a record's `t`)."""
        return int((self._clock() - self._t0) * 1_000_000) / 1_000_000

    def _record_head(self, kind: str, members: bytes, t: float) -> bytes:
        """The next record's JSON up to its closing brace: the common members, then `members`."""
        content = _RECORD_HEAD % (
            self._seq,
            self._prev.encode("ascii"),
            kind.encode("ascii"),
            t,
            _now_wall(),
            members,
        )
        if not members:  # no members of its own: no separating comma
            content = content[:-1]
        return content

    def _commit(self, line: bytes, digest: str) -> None:
        self._commit_parts((line,), digest, len(line))

    def _commit_parts(self, parts: tuple[bytes, ...], digest: str, size: int) -> None:
        """Add the line given in pieces (`size` bytes in all) to the log."""
        self._seq += 1
        self._prev = digest
        self._size += size
        if size < WRITE_BUFFER_BYTES:
            for part in parts:
                self._buf += part
        else:  # a large record goes out as it is, not copied into the buffer
            self._write_out()
            self._write_parts(parts, size)

    def _append(self, kind: str, fields: dict[str, Any], *, flush: bool) -> None:
        self._append_members(kind, _members(kind, fields), flush=flush)

    def _append_members(self, kind: str, members: bytes, *, flush: bool) -> None:
        if self._copy:
            self._flush_copy()
        if self._wire:
            self._flush_wire()
        if self._pending:
            self._flush_rows()
        line, digest = self._encode_members(kind, members)
        size = len(line)
        if size > MAX_RECORD_BYTES:
            raise RecordingError(
                f"{kind} record of {size} bytes exceeds the {MAX_RECORD_BYTES}-byte limit"
            )
        buf = self._buf
        buf += line
        self._seq += 1
        self._prev = digest
        self._size += size
        if flush or len(buf) >= WRITE_BUFFER_BYTES:
            self._write_out()

    def _flush_rows(self) -> None:
        if not self._pending:
            return
        rows, self._pending, self._pending_bytes = self._pending, [], 0
        self._write_rows(rows)
        if len(self._buf) >= WRITE_BUFFER_BYTES:
            self._write_out()

    def _write_rows(self, rows: list[list[str | None]]) -> None:
        if self._capped:
            self._rows_dropped += len(rows)
            return
        line, digest = self._encode(_ROWS, {"rows": rows})
        if len(line) > MAX_RECORD_BYTES:
            if len(rows) > 1:
                half = len(rows) // 2
                self._write_rows(rows[:half])
                self._write_rows(rows[half:])
            else:
                self._rows_dropped += 1
                self._commit(
                    *self._encode(
                        _OMITTED,
                        {"rows": 1, "reason": f"row longer than {MAX_RECORD_BYTES} bytes"},
                    )
                )
            return
        if self._size + len(line) > self._max_bytes:
            if len(rows) > 1:  # record as many rows as still fit
                half = len(rows) // 2
                self._write_rows(rows[:half])
                self._write_rows(rows[half:])
                return
            self._capped = True
            self._rows_dropped += len(rows)
            self._commit(*self._encode(_CAP, {"limit_bytes": self._max_bytes}))
            return
        self._commit(line, digest)
        self._rows_recorded += len(rows)

    def _write_out(self) -> None:
        if self._buf and self._fd is not None:
            data, self._buf = self._buf, bytearray()
            self._write_all(data)

    def _write_all(self, data: bytes | bytearray) -> None:
        fd = self._fd
        if fd is None:
            return
        size = len(data)
        try:
            written = os.write(fd, data)
            if written < size:  # cut short (a signal, a full disk): the rest from a view
                view = memoryview(data)
                try:
                    while written < size:
                        written += os.write(fd, view[written:])
                finally:
                    view.release()
        except OSError as exc:
            self._fail(exc)
            return
        if self._release is not None:
            self._release.wrote(size)

    def _write_parts(self, parts: tuple[bytes, ...], size: int) -> None:
        """Write `parts` in order with one system call (the rest, if it was cut short)."""
        if self._fd is None:
            return
        try:
            written = os.writev(self._fd, parts)
        except OSError as exc:
            self._fail(exc)
            return
        if self._release is not None:
            self._release.wrote(written)
        if written < size:
            self._write_all(b"".join(parts)[written:])

    def _release_done(self) -> None:
        if self._release is not None:
            self._release.close()
            self._release = None

    def _fail(self, exc: OSError) -> None:
        err = RecordingError(
            f"cannot write session log {self.path}: {exc.strerror or exc}",
            hint="check the recording directory (space, permissions)",
        )
        self._failed = err
        self._pending.clear()
        self._wire.clear()
        self._copy.clear()
        self._buf.clear()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        self._release_done()
        if self._on_failure is not None:
            try:
                self._on_failure(self.session_id, err)
            except Exception:
                log.exception("recording failure hook raised")
        if self._required:
            raise err
        log.warning("session %s: recording disabled: %s", self.session_id, err.message)
