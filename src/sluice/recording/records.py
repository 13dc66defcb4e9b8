"""Typed records of a session log, as returned by `replay`.

The writer builds the JSON members directly (hot path); these classes are the
reader's view. Every record carries its sequence number, its offset from the
session start on the monotonic clock (seconds) and the wall-clock time (UTC).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sluice.protocols.postgres.messages import decode_data_row
from sluice.recording.errors import RecordingFormatError
from sluice.recording.format import WIRE_ENCODING


class RecordKind(StrEnum):
    START = "start"
    STATEMENT = "statement"
    BIND = "bind"
    VERDICT = "verdict"
    APPROVAL = "approval"
    RESULT = "result"
    ROWS = "rows"
    COPY = "copy"
    OMITTED = "omitted"
    COMPLETE = "complete"
    ERROR = "error"
    NOTICE = "notice"
    CAP = "cap"
    END = "end"
    SEAL = "seal"


@dataclass(frozen=True, slots=True, kw_only=True)
class Column:
    name: str
    type: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordBase:
    seq: int
    t: float  # seconds since session start, monotonic clock
    wall: dt.datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRecord(RecordBase):
    session_id: str
    started_at: str
    user: str
    groups: tuple[str, ...]
    token_id: str | None
    connection: str
    protocol: str
    client_addr: str
    format: int
    mac: str
    key_id: str | None
    max_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StatementRecord(RecordBase):
    sql: str
    origin: str
    statement_name: str | None


@dataclass(frozen=True, slots=True)
class OmittedValue:
    """A parameter value the log does not keep: its size and why."""

    size: int
    reason: str


BindValue = str | bytes | OmittedValue | None
"""A bound parameter: text (masked when masking is on), binary bytes, not kept, or NULL."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BindRecord(RecordBase):
    """An execution of a prepared statement (a Bind), with its parameters."""

    statement_name: str | None
    portal: str | None
    params: tuple[BindValue, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class VerdictRecord(RecordBase):
    verdict: str  # allow | block | require_approval
    rule: str
    reason: str
    mask_profiles: tuple[str, ...]
    approver_groups: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRecord(RecordBase):
    state: str  # requested | approved | denied | expired | withdrawn
    approval_id: str
    actor: str | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultRecord(RecordBase):
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RowsRecord(RecordBase):
    rows: tuple[tuple[str | None, ...], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyRecord(RecordBase):
    """COPY data as it passed: `out` to the client (as delivered, masked), `in`
    from the client to the server (masked for the log when masking is on).
    `data` is empty and `omitted` says why when the data could not be kept."""

    direction: str  # out | in
    size: int  # bytes of COPY data this record stands for
    data: bytes
    omitted: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OmittedRecord(RecordBase):
    rows: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteRecord(RecordBase):
    tag: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorRecord(RecordBase):
    sqlstate: str
    message: str
    source: str  # backend | gateway


@dataclass(frozen=True, slots=True, kw_only=True)
class NoticeRecord(RecordBase):
    severity: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CapRecord(RecordBase):
    limit_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EndRecord(RecordBase):
    reason: str
    bytes_in: int
    bytes_out: int
    statements: int
    rows_recorded: int
    rows_dropped: int
    copy_bytes_recorded: int = 0
    copy_bytes_dropped: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SealRecord(RecordBase):
    records: int
    bytes: int


Record = (
    StartRecord
    | StatementRecord
    | BindRecord
    | VerdictRecord
    | ApprovalRecord
    | ResultRecord
    | RowsRecord
    | CopyRecord
    | OmittedRecord
    | CompleteRecord
    | ErrorRecord
    | NoticeRecord
    | CapRecord
    | EndRecord
    | SealRecord
)


# -- parsing ------------------------------------------------------------------


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise RecordingFormatError(f"member {key!r} must be a string")
    return value


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise RecordingFormatError(f"member {key!r} must be a string or null")
    return value


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordingFormatError(f"member {key!r} must be an integer")
    return value


def _strs(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RecordingFormatError(f"member {key!r} must be a list of strings")
    return tuple(value)


def _columns(obj: Mapping[str, Any]) -> tuple[Column, ...]:
    value = obj.get("columns")
    if not isinstance(value, list):
        raise RecordingFormatError("member 'columns' must be a list")
    return tuple(Column(name=_str(c, "name"), type=_str(c, "type")) for c in value)


def _rows(obj: Mapping[str, Any]) -> tuple[tuple[str | None, ...], ...]:
    if "wire" in obj:
        return _wire_rows(obj)
    value = obj.get("rows")
    if not isinstance(value, list):
        raise RecordingFormatError("member 'rows' must be a list")
    out = []
    for row in value:
        if not isinstance(row, list) or not all(v is None or isinstance(v, str) for v in row):
            raise RecordingFormatError("each row must be a list of strings or nulls")
        out.append(tuple(row))
    return tuple(out)


def _wire_rows(obj: Mapping[str, Any]) -> tuple[tuple[str | None, ...], ...]:
    """Decode rows recorded as wire messages (binary values shown as \\x hex)."""
    from sluice.protocols.postgres.errors import PgProtocolError
    from sluice.protocols.postgres.framing import FrameBuffer

    if obj.get("encoding") != WIRE_ENCODING:
        raise RecordingFormatError(f"unknown row encoding {obj.get('encoding')!r}")
    formats = obj.get("formats", [])
    if not isinstance(formats, list) or not all(f in (0, 1) for f in formats):
        raise RecordingFormatError("member 'formats' must be a list of 0 and 1")
    try:
        data = base64.b64decode(_str(obj, "wire"), validate=True)
        frames = FrameBuffer(max_message=len(data) + 5)
        frames.feed(data)
        out = []
        for _kind, body in frames.frames():
            values = decode_data_row(body)
            out.append(
                tuple(
                    None
                    if v is None
                    else ("\\x" + v.hex())
                    if i < len(formats) and formats[i] == 1
                    else v.decode("utf-8", "replace")
                    for i, v in enumerate(values)
                )
            )
    except (ValueError, PgProtocolError) as exc:
        raise RecordingFormatError(f"recorded wire rows cannot be decoded: {exc}") from None
    return tuple(out)


def _copy(obj: Mapping[str, Any], base: dict[str, Any]) -> CopyRecord:
    direction = _str(obj, "direction")
    if direction not in ("in", "out"):
        raise RecordingFormatError(f"member 'direction' must be in or out, not {direction!r}")
    omitted = _opt_str(obj, "omitted")
    try:
        data = b"" if omitted is not None else base64.b64decode(_str(obj, "data"), validate=True)
    except ValueError as exc:
        raise RecordingFormatError(f"recorded COPY data cannot be decoded: {exc}") from None
    size = _int(obj, "bytes")
    if omitted is None and size != len(data):
        raise RecordingFormatError(f"COPY record states {size} bytes but holds {len(data)}")
    return CopyRecord(**base, direction=direction, size=size, data=data, omitted=omitted)


def _bind_value(value: Any) -> BindValue:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "binary" in value:
            try:
                return base64.b64decode(_str(value, "binary"), validate=True)
            except ValueError as exc:
                raise RecordingFormatError(f"a binary parameter cannot be decoded: {exc}") from None
        if "binary_text" in value:
            return _str(value, "binary_text")
        if "omitted" in value:
            return OmittedValue(size=_int(value, "bytes"), reason=_str(value, "omitted"))
    raise RecordingFormatError("a parameter must be a string, null or a known object")


def _bind(obj: Mapping[str, Any], base: dict[str, Any]) -> BindRecord:
    params = obj.get("params")
    if not isinstance(params, list):
        raise RecordingFormatError("member 'params' must be a list")
    return BindRecord(
        **base,
        statement_name=_opt_str(obj, "statement_name"),
        portal=_opt_str(obj, "portal"),
        params=tuple(_bind_value(v) for v in params),
    )


def _opt_int(obj: Mapping[str, Any], key: str) -> int:
    return _int(obj, key) if key in obj else 0


_Parser = Callable[[Mapping[str, Any], dict[str, Any]], Record]

_PARSERS: dict[str, _Parser] = {
    RecordKind.START: lambda o, b: StartRecord(
        **b,
        session_id=_str(o, "session_id"),
        started_at=_str(o, "started_at"),
        user=_str(o, "user"),
        groups=_strs(o, "groups"),
        token_id=_opt_str(o, "token_id"),
        connection=_str(o, "connection"),
        protocol=_str(o, "protocol"),
        client_addr=_str(o, "client_addr"),
        format=_int(o, "format"),
        mac=_str(o, "mac"),
        key_id=_opt_str(o, "key_id"),
        max_bytes=_int(o, "max_bytes"),
    ),
    RecordKind.STATEMENT: lambda o, b: StatementRecord(
        **b,
        sql=_str(o, "sql"),
        origin=_str(o, "origin"),
        statement_name=_opt_str(o, "statement_name"),
    ),
    RecordKind.BIND: _bind,
    RecordKind.VERDICT: lambda o, b: VerdictRecord(
        **b,
        verdict=_str(o, "verdict"),
        rule=_str(o, "rule"),
        reason=_str(o, "reason"),
        mask_profiles=_strs(o, "mask_profiles"),
        approver_groups=_strs(o, "approver_groups"),
    ),
    RecordKind.APPROVAL: lambda o, b: ApprovalRecord(
        **b,
        state=_str(o, "state"),
        approval_id=_str(o, "approval_id"),
        actor=_opt_str(o, "actor"),
        reason=_str(o, "reason"),
    ),
    RecordKind.RESULT: lambda o, b: ResultRecord(**b, columns=_columns(o)),
    RecordKind.ROWS: lambda o, b: RowsRecord(**b, rows=_rows(o)),
    RecordKind.COPY: _copy,
    RecordKind.OMITTED: lambda o, b: OmittedRecord(
        **b, rows=_int(o, "rows"), reason=_str(o, "reason")
    ),
    RecordKind.COMPLETE: lambda o, b: CompleteRecord(**b, tag=_str(o, "tag")),
    RecordKind.ERROR: lambda o, b: ErrorRecord(
        **b, sqlstate=_str(o, "sqlstate"), message=_str(o, "message"), source=_str(o, "source")
    ),
    RecordKind.NOTICE: lambda o, b: NoticeRecord(
        **b, severity=_str(o, "severity"), message=_str(o, "message")
    ),
    RecordKind.CAP: lambda o, b: CapRecord(**b, limit_bytes=_int(o, "limit_bytes")),
    RecordKind.END: lambda o, b: EndRecord(
        **b,
        reason=_str(o, "reason"),
        bytes_in=_int(o, "bytes_in"),
        bytes_out=_int(o, "bytes_out"),
        statements=_int(o, "statements"),
        rows_recorded=_int(o, "rows_recorded"),
        rows_dropped=_int(o, "rows_dropped"),
        copy_bytes_recorded=_opt_int(o, "copy_bytes_recorded"),
        copy_bytes_dropped=_opt_int(o, "copy_bytes_dropped"),
    ),
    RecordKind.SEAL: lambda o, b: SealRecord(
        **b, records=_int(o, "records"), bytes=_int(o, "bytes")
    ),
}


def parse_record(obj: Any) -> Record:
    """Turn one decoded JSON line into its typed record; raise RecordingFormatError."""
    if not isinstance(obj, dict):
        raise RecordingFormatError("a record must be a JSON object")
    kind = obj.get("kind")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise RecordingFormatError(f"unknown record kind {kind!r}")
    t = obj.get("t")
    if not isinstance(t, int | float) or isinstance(t, bool):
        raise RecordingFormatError("member 't' must be a number")
    try:
        wall = dt.datetime.fromisoformat(_str(obj, "wall"))
    except ValueError as exc:
        raise RecordingFormatError(f"member 'wall' is not ISO 8601: {exc}") from None
    base: dict[str, Any] = {"seq": _int(obj, "seq"), "t": float(t), "wall": wall}
    try:
        return parser(obj, base)
    except (AttributeError, TypeError) as exc:  # e.g. a column that is not an object
        raise RecordingFormatError(f"malformed {kind} record: {exc}") from None


def parse_records(obj: Any) -> tuple[Record, ...]:
    """The typed records of one line: a `statement` record that carries its
    verdict, or a `complete` record that carries its last rows, is two."""
    record = parse_record(obj)
    if isinstance(record, StatementRecord) and "verdict" in obj:
        return record, _PARSERS[RecordKind.VERDICT](obj, _base(record))
    if isinstance(record, CompleteRecord) and "wire" in obj:
        return _PARSERS[RecordKind.ROWS](obj, _base(record)), record
    return (record,)


def _base(record: RecordBase) -> dict[str, Any]:
    return {"seq": record.seq, "t": record.t, "wall": record.wall}
