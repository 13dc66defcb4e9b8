"""Masking of COPY ... TO STDOUT data (text and CSV formats).

Sans-IO and streaming: `feed(chunk) -> bytes` returns the masked form of every
record completed so far and keeps the incomplete tail (a record may be split
at any byte across CopyData messages); `finish() -> bytes` flushes the last
record. Column rules apply by position, content detectors to decoded values.
Binary COPY cannot be masked here: callers must refuse it when masking applies.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sluice.masking.errors import MaskingError
from sluice.masking.model import EMPTY_STATS, MaskStats

if TYPE_CHECKING:
    from sluice.masking.masker import Row, RowMasker
    from sluice.masking.precheck import RegionPrecheck

# One COPY record may not exceed this: the masker must hold a whole record,
# and a larger one is more likely a broken stream than a real row.
MAX_COPY_RECORD_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyFormat:
    """COPY options that shape the data (as given in the COPY statement)."""

    kind: Literal["text", "csv"] = "text"
    delimiter: bytes = b""  # default: tab for text, comma for csv
    null: bytes | None = None  # default: \N for text, empty for csv
    quote: bytes = b'"'
    escape: bytes | None = None  # default: same as quote
    header: bool = False

    @property
    def delim(self) -> bytes:
        return self.delimiter or (b"\t" if self.kind == "text" else b",")

    @property
    def null_string(self) -> bytes:
        if self.null is not None:
            return self.null
        return b"\\N" if self.kind == "text" else b""

    @property
    def escape_char(self) -> bytes:
        return self.escape if self.escape is not None else self.quote

    def __post_init__(self) -> None:
        for name in ("delimiter", "quote", "escape"):
            v = getattr(self, name)
            if v is not None and len(v) > 1:
                raise MaskingError(f"COPY {name} must be a single byte")


_TEXT_ESCAPES = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}
_TEXT_UNESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))", re.DOTALL)


def _unescape_text(field: bytes) -> bytes:
    def sub(m: re.Match[bytes]) -> bytes:
        if m.group(1) is not None:
            return bytes([int(m.group(1), 8) & 0xFF])
        if m.group(2) is not None:
            return bytes([int(m.group(2), 16)])
        ch = m.group(3)
        return _TEXT_ESCAPES.get(ch, ch)

    return _TEXT_UNESCAPE.sub(sub, field)


def _escape_text(value: bytes, delim: bytes) -> bytes:
    out = (
        value.replace(b"\\", b"\\\\")
        .replace(b"\n", b"\\n")
        .replace(b"\r", b"\\r")
        .replace(b"\t", b"\\t")
        .replace(b"\b", b"\\b")
        .replace(b"\f", b"\\f")
        .replace(b"\v", b"\\v")
    )
    if delim not in (b"\t", b"\n", b"\r", b"\\"):
        out = out.replace(delim, b"\\" + delim)
    return out


# COPY writes bytea as `\x` and hex digits (escaped to `\\x` in text
# format): detectors read such a value's bytes, and a masked one is written
# as hex again. COPY does not say which columns are bytea; any value in that
# form is taken as one.
_BYTEA_HEX_MARK = b"\\x"
_BYTEA_HEX = re.compile(rb"\\x(?:[0-9A-Fa-f]{2})+")


def _bytea_decoded(values: list[bytes | None]) -> tuple[list[bytes | None], set[int]]:
    """`values` with each bytea hex value replaced by its bytes, and where."""
    decoded: set[int] = set()
    out = list(values)
    for i, v in enumerate(values):
        if v is not None and v.startswith(_BYTEA_HEX_MARK) and _BYTEA_HEX.fullmatch(v):
            out[i] = bytes.fromhex(v[2:].decode("ascii"))
            decoded.add(i)
    return (out, decoded) if decoded else (values, decoded)


def _bytea_encoded(value: bytes | None) -> bytes | None:
    return None if value is None else _BYTEA_HEX_MARK + value.hex().encode("ascii")


class CopyMasker:
    """Stateful, sans-IO masker of one COPY TO STDOUT stream."""

    def __init__(self, plan: RowMasker, fmt: CopyFormat, precheck: RegionPrecheck | None = None):
        """`precheck` (only for plans of content detectors, no column rules)
        lets records whose raw bytes no detector's prefilter matches pass
        without being split and scanned value by value."""
        self._plan = plan
        self._fmt = fmt
        self._precheck = precheck
        # Where a record holds one of these, a value's bytes differ from the
        # record's (escapes, quoting): such records always take the exact path.
        self._altering = b"\\" if fmt.kind == "text" else fmt.quote + fmt.escape_char
        self._buf = bytearray()
        self._header_pending = fmt.header
        self.stats: MaskStats = EMPTY_STATS
        d = re.escape(fmt.delim)
        if fmt.kind == "csv":
            q = re.escape(fmt.quote)
            e = re.escape(fmt.escape_char)
            quoted = (
                q + rb"(?:[^" + q + rb"]|" + q + q + rb")*" + q
                if fmt.escape_char == fmt.quote
                else q + rb"(?:[^" + q + e + rb"]|" + e + rb".)*" + q
            )
            field = rb"(?:" + quoted + rb"|[^" + d + q + rb"\r\n]*)"
            self._record = re.compile(rb"(" + field + rb"(?:" + d + field + rb")*)\r?\n", re.DOTALL)
            self._field = re.compile(
                rb"(" + quoted + rb"|[^" + d + q + rb"\r\n]*)(?:" + d + rb"|\Z)", re.DOTALL
            )
        else:
            self._text_field = re.compile(
                rb"((?:[^\\" + d + rb"]|\\.)*)(?:" + d + rb"|\Z)", re.DOTALL
            )

    def feed(self, data: bytes) -> bytes:
        """Masked bytes for every record completed by `data` (possibly empty)."""
        self._buf += data
        out = self._drain(final=False)
        if len(self._buf) > MAX_COPY_RECORD_BYTES:
            raise MaskingError(f"COPY record exceeds {MAX_COPY_RECORD_BYTES} bytes")
        return out

    def finish(self) -> bytes:
        """Masked bytes of a last record without a newline; the stream is done."""
        if self._buf and not self._buf.endswith(b"\n"):
            self._buf += b"\n"
            out = self._drain(final=True)
            return out[:-1] if out.endswith(b"\n") else out
        return self._drain(final=True)

    # -- records ------------------------------------------------------------

    def _drain(self, *, final: bool) -> bytes:
        records = self._take_csv(final=final) if self._fmt.kind == "csv" else self._take_text()
        if not records:
            return b""
        if self._header_pending:
            self._header_pending = False
            head, records = records[0], records[1:]
            if not records:
                return head
            return head + self._mask_records(records)
        return self._mask_records(records)

    def _take_text(self) -> list[bytes]:
        end = self._buf.rfind(b"\n")
        if end < 0:
            return []
        block = bytes(self._buf[: end + 1])
        del self._buf[: end + 1]
        return block.splitlines(keepends=True)

    def _take_csv(self, *, final: bool) -> list[bytes]:
        buf = bytes(self._buf)
        records: list[bytes] = []
        pos = 0
        match = self._record.match
        while pos < len(buf):
            m = match(buf, pos)
            if m is None:
                break
            records.append(m.group(0))
            pos = m.end()
        del self._buf[:pos]
        if final and self._buf:
            raise MaskingError("COPY CSV data ends inside a quoted field")
        return records

    def _mask_records(self, records: list[bytes]) -> bytes:
        candidates = self._candidates(records)
        if candidates is None:
            return b"".join(self._masked(records))
        if not candidates:
            return b"".join(records)
        parts = list(records)
        for index, masked in zip(
            candidates, self._masked([records[i] for i in candidates]), strict=True
        ):
            parts[index] = masked
        return b"".join(parts)

    def _candidates(self, records: list[bytes]) -> list[int] | None:
        """Indexes of the records that may hold a finding; None: all of them.

        A record holds a finding only where a prefilter matches its raw bytes,
        as long as its values are its bytes: records with an escape or quote
        character are always included.
        """
        if self._precheck is None or not records:
            return None
        starts = []
        offset = 0
        for record in records:
            starts.append(offset)
            offset += len(record)
        hits = self._precheck.candidate_rows(b"".join(records), starts)
        if hits is None:
            return None
        chosen = set(hits)
        chosen.update(
            i
            for i, rec in enumerate(records)
            if any(c in rec for c in self._altering) or _BYTEA_HEX_MARK in rec
        )
        return sorted(chosen)

    def _masked(self, records: list[bytes]) -> list[bytes]:
        """Each record masked (the same object where nothing changed)."""
        split: Callable[[bytes], tuple[list[bytes], list[bytes | None]]] = (
            self._split_csv if self._fmt.kind == "csv" else self._split_text
        )
        raws: list[list[bytes]] = []
        rows: list[Row] = []
        hexed: list[set[int]] = []
        for rec in records:
            raw, values = split(rec)
            raws.append(raw)
            values, decoded = _bytea_decoded(values)
            rows.append(values)
            hexed.append(decoded)
        out_rows, stats = self._plan.mask_rows(rows)
        if stats:
            self.stats = self.stats + stats
        if out_rows is rows:
            return records
        parts: list[bytes] = []
        delim = self._fmt.delim
        for rec, raw, before, after, decoded in zip(
            records, raws, rows, out_rows, hexed, strict=True
        ):
            if after is before:
                parts.append(rec)
                continue
            fields = [
                r if a is b else self._encode(_bytea_encoded(a) if i in decoded else a)
                for i, (r, b, a) in enumerate(zip(raw, before, after, strict=True))
            ]
            parts.append(delim.join(fields) + (b"\r\n" if rec.endswith(b"\r\n") else b"\n"))
        return parts

    def _split_text(self, rec: bytes) -> tuple[list[bytes], list[bytes | None]]:
        line = rec[:-2] if rec.endswith(b"\r\n") else rec[:-1]
        null = self._fmt.null_string
        if b"\\" in line and self._fmt.delim != b"\t":
            # An escaped delimiter ("\,") is data, not a separator.
            raw = self._fields(self._text_field, line)
        else:
            raw = line.split(self._fmt.delim)
        values: list[bytes | None] = [
            None if f == null else (_unescape_text(f) if b"\\" in f else f) for f in raw
        ]
        return raw, values

    @staticmethod
    def _fields(pattern: re.Pattern[bytes], line: bytes) -> list[bytes]:
        fields: list[bytes] = []
        pos = 0
        while True:
            m = pattern.match(line, pos)
            if m is None:
                raise MaskingError("malformed COPY record")
            fields.append(m.group(1))
            if m.end() == len(line):
                if len(m.group(0)) > len(m.group(1)):  # ended with a delimiter
                    fields.append(b"")
                return fields
            pos = m.end()

    def _split_csv(self, rec: bytes) -> tuple[list[bytes], list[bytes | None]]:
        line = rec[:-2] if rec.endswith(b"\r\n") else rec[:-1]
        fmt = self._fmt
        raw = self._fields(self._field, line)
        values: list[bytes | None] = []
        q = fmt.quote
        for f in raw:
            if f[:1] == q and len(f) >= 2:
                inner = f[1:-1]
                esc = fmt.escape_char
                values.append(
                    inner.replace(q + q, q)
                    if esc == q
                    else re.sub(re.escape(esc) + rb"(.)", rb"\1", inner, flags=re.DOTALL)
                )
            else:
                values.append(None if f == fmt.null_string else f)
        return raw, values

    def _encode(self, value: bytes | None) -> bytes:
        fmt = self._fmt
        if value is None:
            return fmt.null_string
        if fmt.kind == "text":
            return _escape_text(value, fmt.delim)
        q, esc = fmt.quote, fmt.escape_char
        specials = (fmt.delim, q, esc, b"\r", b"\n")
        if value == b"" or value == fmt.null_string or any(s in value for s in specials):
            if esc != q:
                value = value.replace(esc, esc + esc)
            return q + value.replace(q, esc + q) + q
        return value
