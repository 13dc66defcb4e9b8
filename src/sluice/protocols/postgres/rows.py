"""The per-row loops of the hot path: walking a run of DataRows, splicing
columns, decoding the rows masking must read and writing back those it changed.

Sans-IO and pure. A compiled version of each (`_speedups`, built from C when
a compiler is available at install) is used when present; these Python
versions are the reference and the fallback, and the tests hold both to the
same answers.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

_LEN = struct.Struct("!I")
_COUNT = struct.Struct("!h")
_VALUE_LEN = struct.Struct("!i")


def py_datarow_run(
    buf: bytes | bytearray | memoryview, pos: int, size: int
) -> tuple[int, list[int]]:
    """Walk the run of complete DataRow frames at `pos` (up to `size`).

    Returns the offset after the run's last complete frame and each frame's
    offset relative to `pos`. Stops, without raising, at another message
    type, an incomplete frame or an invalid length: the caller's frame walk
    reports those.
    """
    if pos < 0 or pos > size:
        raise ValueError("pos out of range")
    size = min(size, len(buf))
    start = pos
    starts: list[int] = []
    unpack = _LEN.unpack_from
    while size - pos >= 5 and buf[pos] == 68:  # 'D'
        length = unpack(buf, pos + 1)[0]
        if length < 4 or pos + 1 + length > size:
            break
        starts.append(pos - start)
        pos += 1 + length
    return pos, starts


def py_copydata_run(buf: bytes | bytearray, pos: int, size: int) -> tuple[int, bytes]:
    """Walk the run of complete CopyData frames at `pos` (up to `size`).

    Returns the offset after the run's last complete frame and the frames'
    payloads, concatenated (the COPY data without headers). Stops where
    `py_datarow_run` does.
    """
    size = min(size, len(buf))
    if pos < 0 or pos > size:
        raise ValueError("pos out of range")
    payloads = bytearray()
    unpack = _LEN.unpack_from
    while size - pos >= 5 and buf[pos] == 100:  # 'd'
        length = unpack(buf, pos + 1)[0]
        if length < 4 or pos + 1 + length > size:
            break
        payloads += buf[pos + 5 : pos + 1 + length]
        pos += 1 + length
    return pos, bytes(payloads)


def py_splice_columns(
    region: bytes | memoryview, starts: list[int], replacements: tuple[bytes | None, ...]
) -> tuple[bytes, int]:
    """Rows with whole columns replaced by fixed values; NULLs stay NULL.

    `replacements[i]` is None (keep column i) or its new value with the
    4-byte length in front (b"\\xff\\xff\\xff\\xff" for NULL). Returns the new
    frames and how many values were replaced. Raises ValueError on a row
    with fewer columns than `replacements` or values past its frame.
    """
    size = len(region)
    columns = len(replacements)
    if not columns or not starts:
        return bytes(region), 0
    out = bytearray()
    replaced = 0
    unpack_value = _VALUE_LEN.unpack_from
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else size
        if start < 0 or end > size or end - start < 7 or region[start] != 68:
            raise ValueError("a DataRow frame is out of bounds")
        (ncols,) = _COUNT.unpack_from(region, start + 5)
        if ncols & 0xFFFF < columns:
            raise ValueError("a DataRow has fewer columns than its result")
        body = bytearray(region[start + 5 : start + 7])
        pos = start + 7
        copied = pos
        for column in range(columns):
            if end - pos < 4:
                raise ValueError("a DataRow's values run past its length")
            (length,) = unpack_value(region, pos)
            value_end = pos + 4 + max(length, 0)
            if value_end > end:
                raise ValueError("a DataRow's values run past its length")
            new = replacements[column]
            if new is not None and length >= 0:
                body += region[copied:pos]
                body += new
                copied = value_end
                replaced += 1
            pos = value_end
        body += region[copied:end]
        out += b"D" + _LEN.pack(len(body) + 4) + body
    return bytes(out), replaced


def py_walk_frames(
    buf: bytes | bytearray, pos: int, size: int, stop_kinds: bytes
) -> tuple[int, int, int]:
    """Skip complete frames from `pos`, noting ReadyForQuery ('Z') frames.

    Stops at an incomplete frame, a length below 4 (the caller's frame walk
    reports those) or a frame whose type is in `stop_kinds`. Returns where it
    stopped, how many ReadyForQuery frames it passed and the transaction
    status byte of the last one (0 if none).
    """
    size = min(size, len(buf))
    if pos < 0 or pos > size:
        raise ValueError("pos out of range")
    unpack = _LEN.unpack_from
    readies = 0
    status = 0
    while size - pos >= 5:
        kind = buf[pos]
        length = unpack(buf, pos + 1)[0]
        if length < 4 or pos + 1 + length > size or kind in stop_kinds:
            break
        if kind == 90:  # 'Z'
            readies += 1
            status = buf[pos + 5] if length > 4 else 73  # 'I'
        pos += 1 + length
    return pos, readies, status


def _row_bounds(region: bytes | memoryview, starts: list[int], i: int) -> tuple[int, int]:
    if not 0 <= i < len(starts):
        raise ValueError("a row index is out of range")
    start = starts[i]
    end = starts[i + 1] if i + 1 < len(starts) else len(region)
    if start < 0 or end > len(region) or end - start < 7 or region[start] != 68:
        raise ValueError("a DataRow frame is out of bounds")
    return start, end


def py_decode_rows(
    region: bytes | memoryview, starts: list[int], indexes: list[int]
) -> list[list[bytes | None]]:
    """The values of the rows `indexes` of a run of DataRows beginning at `starts`.

    Raises ValueError on a frame out of bounds or values past its frame.
    """
    unpack_value = _VALUE_LEN.unpack_from
    rows: list[list[bytes | None]] = []
    for i in indexes:
        start, end = _row_bounds(region, starts, i)
        (count,) = _COUNT.unpack_from(region, start + 5)
        pos = start + 7
        values: list[bytes | None] = []
        for _ in range(count):
            if end - pos < 4:
                raise ValueError("a DataRow's values run past its length")
            (length,) = unpack_value(region, pos)
            pos += 4
            if length < 0:
                values.append(None)
                continue
            if end - pos < length:
                raise ValueError("a DataRow's values run past its length")
            values.append(bytes(region[pos : pos + length]))  # of `bytes`: no copy
            pos += length
        rows.append(values)
    return rows


def py_rewrite_rows(
    region: bytes | memoryview, starts: list[int], changed: list[tuple[int, list[bytes | None]]]
) -> bytes:
    """The run with rows replaced: `changed` is (row index, new values), by index."""
    out = bytearray()
    copied = 0
    for i, values in changed:
        start, end = _row_bounds(region, starts, i)
        if start < copied:
            raise ValueError("changed rows must be in ascending order")
        if len(values) > 0x7FFF:
            raise ValueError("a DataRow has too many columns")
        body = bytearray(_COUNT.pack(len(values)))
        for value in values:
            if value is None:
                body += b"\xff\xff\xff\xff"
            else:
                if len(value) > 0x7FFFFFFF:
                    raise ValueError("a value is too large for a DataRow")
                body += _VALUE_LEN.pack(len(value))
                body += value
        out += region[copied:start]
        out += b"D" + _LEN.pack(len(body) + 4) + body
        copied = end
    out += region[copied:]
    return bytes(out)


DatarowRun = Callable[[bytes | bytearray | memoryview, int, int], tuple[int, list[int]]]
CopydataRun = Callable[[bytes | bytearray, int, int], tuple[int, bytes]]
SpliceColumns = Callable[
    [bytes | memoryview, list[int], tuple[bytes | None, ...]], tuple[bytes, int]
]
WalkFrames = Callable[[bytes | bytearray, int, int, bytes], tuple[int, int, int]]
DecodeRows = Callable[[bytes | memoryview, list[int], list[int]], list[list[bytes | None]]]
RewriteRows = Callable[[bytes | memoryview, list[int], list[tuple[int, list[bytes | None]]]], bytes]

datarow_run: DatarowRun
copydata_run: CopydataRun
splice_columns: SpliceColumns
decode_rows: DecodeRows
walk_frames: WalkFrames
rewrite_rows: RewriteRows
try:
    from sluice.protocols.postgres import _speedups
except ImportError:  # no compiler at install: the Python versions
    COMPILED = False
    datarow_run, splice_columns = py_datarow_run, py_splice_columns
    copydata_run = py_copydata_run
    decode_rows, rewrite_rows = py_decode_rows, py_rewrite_rows
    walk_frames = py_walk_frames
else:
    COMPILED = True
    datarow_run, splice_columns = _speedups.datarow_run, _speedups.splice_columns
    copydata_run = _speedups.copydata_run
    decode_rows, rewrite_rows = _speedups.decode_rows, _speedups.rewrite_rows
    walk_frames = _speedups.walk_frames
