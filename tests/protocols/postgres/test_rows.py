"""The per-row loops: the compiled and the Python versions give the same answers."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.protocols.postgres import rows
from sluice.protocols.postgres.framing import frame
from sluice.protocols.postgres.messages import decode_data_row, encode_data_row

Impl = tuple[rows.DatarowRun, rows.SpliceColumns]
LOOPS: list[tuple[str, Impl]] = [("python", (rows.py_datarow_run, rows.py_splice_columns))]
if rows.COMPILED:
    from sluice.protocols.postgres import _speedups

    LOOPS.append(("compiled", (_speedups.datarow_run, _speedups.splice_columns)))
IMPLEMENTATIONS = [pytest.param(impl, id=name) for name, impl in LOOPS]


def test_the_compiled_loops_are_built_where_a_compiler_is() -> None:
    """The install builds them (setup.py); CI machines have gcc and the headers."""
    assert rows.COMPILED


values = st.one_of(st.none(), st.binary(max_size=12))
row_lists = st.lists(st.lists(values, min_size=3, max_size=5), min_size=1, max_size=20)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_run_stops_at_the_first_frame_that_is_not_a_complete_datarow(
    impl: tuple[rows.DatarowRun, rows.SpliceColumns],
) -> None:
    datarow_run, _ = impl
    run = encode_data_row([b"a"]) + encode_data_row([None, b"bc"])
    tail = b"C\x00\x00\x00\x0dSELECT 2\x00"
    data = b"junk" + run + tail
    end, starts = datarow_run(data, 4, len(data))
    assert end == 4 + len(run)
    assert starts == [0, len(encode_data_row([b"a"]))]
    # An incomplete frame ends the run where it starts.
    end, starts = datarow_run(data[: 4 + len(run) - 1], 4, 4 + len(run) - 1)
    assert (end, starts) == (4 + len(encode_data_row([b"a"])), [0])
    # A length below 4 is not walked over.
    assert datarow_run(b"D\x00\x00\x00\x02xx", 0, 7) == (0, [])


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_splicing_replaces_whole_columns_and_keeps_nulls(
    impl: tuple[rows.DatarowRun, rows.SpliceColumns],
) -> None:
    datarow_run, splice = impl
    region = encode_data_row([b"1", b"alice@example.com", None]) + encode_data_row(
        [b"2", None, b"x"]
    )
    _, starts = datarow_run(region, 0, len(region))
    redacted = b"\x00\x00\x00\x08REDACTED"
    out, replaced = splice(region, starts, (None, redacted))
    assert replaced == 1
    _, out_starts = datarow_run(out, 0, len(out))
    ends = [*out_starts[1:], len(out)]
    decoded = [decode_data_row(out[s + 5 : e]) for s, e in zip(out_starts, ends, strict=True)]
    assert decoded == [[b"1", b"REDACTED", None], [b"2", None, b"x"]]
    view = memoryview(b"Z" + region)[1:]  # a run inside a read, as the session passes it
    assert datarow_run(view, 0, len(view)) == (len(region), starts)
    assert splice(view, starts, (None, redacted)) == (out, 1)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_splicing_refuses_rows_it_cannot_read(
    impl: tuple[rows.DatarowRun, rows.SpliceColumns],
) -> None:
    _, splice = impl
    short = encode_data_row([b"1"])
    with pytest.raises(ValueError, match="fewer columns"):
        splice(short, [0], (None, b"\xff\xff\xff\xff"))
    lying = b"D\x00\x00\x00\x0e\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x09b"  # 2nd value too long
    with pytest.raises(ValueError, match="past its length"):
        splice(lying, [0], (None, b"\xff\xff\xff\xff"))
    with pytest.raises(ValueError, match="out of bounds"):
        splice(short, [3], (b"\xff\xff\xff\xff",))


@settings(max_examples=300, deadline=None)
@given(
    data=row_lists,
    replacements=st.lists(
        st.one_of(st.none(), st.just(b"\xff\xff\xff\xff"), st.binary(max_size=6)), max_size=4
    ),
    cut=st.integers(min_value=0, max_value=400),
)
def test_both_versions_agree_on_any_input(
    data: list[list[bytes | None]], replacements: list[bytes | None], cut: int
) -> None:
    region = b"".join(encode_data_row(r) for r in data)
    prefixed = tuple(
        None if r is None else r if r == b"\xff\xff\xff\xff" else len(r).to_bytes(4, "big") + r
        for r in replacements
    )
    partial = region[: min(cut, len(region))]
    results = []
    for _, (datarow_run, splice) in LOOPS:
        walked = datarow_run(partial, 0, len(partial))
        _, starts = datarow_run(region, 0, len(region))
        try:
            spliced: object = splice(region, starts, prefixed)
        except ValueError as exc:
            spliced = ("error", str(exc))
        results.append((walked, spliced))
    assert all(result == results[0] for result in results)


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=200), starts=st.lists(st.integers(-5, 250), max_size=6))
def test_garbage_raises_only_value_errors(garbage: bytes, starts: list[int]) -> None:
    """Untrusted bytes and offsets: a clean error, never a crash or an overread."""
    for _, (datarow_run, splice) in LOOPS:
        end, found = datarow_run(garbage, 0, len(garbage))
        assert 0 <= end <= len(garbage)
        assert all(0 <= s < len(garbage) for s in found)
        with contextlib.suppress(ValueError):
            splice(garbage, sorted(starts), (None, b"\xff\xff\xff\xff"))


RowCodec = tuple[rows.DecodeRows, rows.RewriteRows]
CODECS: list[tuple[str, RowCodec]] = [("python", (rows.py_decode_rows, rows.py_rewrite_rows))]
if rows.COMPILED:
    CODECS.append(("compiled", (_speedups.decode_rows, _speedups.rewrite_rows)))
CODEC_PARAMS = [pytest.param(codec, id=name) for name, codec in CODECS]


def _run_of(row_values: list[list[bytes | None]]) -> tuple[bytes, list[int]]:
    frames = [encode_data_row(r) for r in row_values]
    starts = [sum(len(f) for f in frames[:i]) for i in range(len(frames))]
    return b"".join(frames), starts


@settings(max_examples=200, deadline=None)
@given(rows_=row_lists, data=st.data())
def test_decoding_and_rewriting_rows_agree_with_the_codec(
    rows_: list[list[bytes | None]], data: st.DataObject
) -> None:
    region, starts = _run_of(rows_)
    bounds = [*starts, len(region)]
    indexes = sorted(data.draw(st.sets(st.integers(0, len(rows_) - 1))))
    new_rows = data.draw(
        st.lists(st.lists(values, max_size=4), min_size=len(indexes), max_size=len(indexes))
    )
    changed = list(zip(indexes, new_rows, strict=True))
    replaced = dict(changed)
    expected = b"".join(encode_data_row(replaced.get(i, r)) for i, r in enumerate(rows_))
    decoded = [decode_data_row(region[bounds[i] + 5 : bounds[i + 1]]) for i in indexes]
    # As the session hands rows over: a view into a larger read, not a copy.
    view = memoryview(b"\0\0\0" + region + b"Z")[3 : 3 + len(region)]
    for _, (decode_rows, rewrite_rows) in CODECS:
        assert decode_rows(region, starts, indexes) == decoded
        from_view = decode_rows(view, starts, indexes)
        assert from_view == decoded
        assert all(type(v) is bytes for row in from_view for v in row if v is not None)
        assert rewrite_rows(region, starts, changed) == expected
        assert rewrite_rows(view, starts, changed) == expected


def _outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except ValueError as exc:
        return ("ValueError", str(exc))


@settings(max_examples=300, deadline=None)
@given(
    region=st.binary(max_size=40),
    starts=st.lists(st.integers(-2, 45), max_size=4),
    indexes=st.lists(st.integers(-1, 4), max_size=4),
)
def test_decoding_garbage_gives_the_same_answer_or_the_same_error(
    region: bytes, starts: list[int], indexes: list[int]
) -> None:
    changed: list[tuple[int, list[bytes | None]]] = [(i, [b"x", None]) for i in indexes]
    outcomes = [
        (
            _outcome(functools.partial(decode_rows, region, starts, indexes)),
            _outcome(functools.partial(rewrite_rows, region, starts, changed)),
        )
        for _, (decode_rows, rewrite_rows) in CODECS
    ]
    assert all(o == outcomes[0] for o in outcomes)


@pytest.mark.parametrize("codec", CODEC_PARAMS)
def test_rows_with_values_past_their_frame_are_refused(codec: RowCodec) -> None:
    decode_rows, _ = codec
    frame = bytearray(encode_data_row([b"abc"]))
    frame[7:11] = (99).to_bytes(4, "big")  # the value claims 99 bytes
    with pytest.raises(ValueError, match="past its length"):
        decode_rows(bytes(frame), [0], [0])
    frame[7:11] = (4).to_bytes(4, "big")  # one byte more than the frame holds
    with pytest.raises(ValueError, match="past its length"):
        decode_rows(bytes(frame) + encode_data_row([b"next"]), [0, len(frame)], [0])
    with pytest.raises(ValueError, match="out of range"):
        decode_rows(encode_data_row([b"a"]), [0], [1])


WALKERS = [pytest.param(rows.py_walk_frames, id="python")]
if rows.COMPILED:
    WALKERS.append(pytest.param(_speedups.walk_frames, id="compiled"))


@settings(max_examples=300, deadline=None)
@given(
    garbage=st.binary(max_size=60),
    pos=st.integers(0, 60),
    size=st.integers(0, 70),
    stop_kinds=st.sampled_from([b"", b"E", b"DZ"]),
)
def test_walking_frames_gives_the_same_answer_on_any_input(
    garbage: bytes, pos: int, size: int, stop_kinds: bytes
) -> None:
    framed = garbage[:3] + frame(b"Z", b"T") + frame(b"E", b"x") + frame(b"Z", b"") + garbage[3:]
    walks: list[rows.WalkFrames] = [rows.py_walk_frames]
    if rows.COMPILED:
        walks.append(_speedups.walk_frames)
    for data in (garbage, framed):
        outcomes: list[object] = []
        for walk in walks:
            try:
                outcomes.append(walk(data, pos, size, stop_kinds))
            except ValueError as exc:
                outcomes.append(str(exc))
        assert all(o == outcomes[0] for o in outcomes)


@pytest.mark.parametrize("walk", WALKERS)
def test_walking_frames_counts_ready_and_stops_where_asked(walk: rows.WalkFrames) -> None:
    data = (
        encode_data_row([b"a"])
        + frame(b"C", b"SELECT 1\0")
        + frame(b"Z", b"T")
        + frame(b"E", b"SERROR\0\0")
        + frame(b"Z", b"I")
        + b"D\x00\x00"
    )
    error_at = data.index(b"E\x00")
    assert walk(data, 0, len(data), b"") == (len(data) - 3, 2, ord("I"))  # stops at the partial
    assert walk(data, 0, len(data), b"E") == (error_at, 1, ord("T"))
    assert walk(bytearray(b"Z\x00\x00\x00\x03"), 0, 5, b"") == (0, 0, 0)  # a length below 4


COPY_RUNS = [pytest.param(rows.py_copydata_run, id="python")]
if rows.COMPILED:
    COPY_RUNS.append(pytest.param(_speedups.copydata_run, id="compiled"))


@pytest.mark.parametrize("copydata_run", COPY_RUNS)
def test_a_copydata_run_gives_the_payloads_up_to_the_first_other_or_incomplete_frame(
    copydata_run: rows.CopydataRun,
) -> None:
    lines = [b"1\tann\n", b"", b"2\tbob\n"]
    run = b"".join(frame(b"d", line) for line in lines)
    data = b"xx" + run + frame(b"c", b"") + frame(b"d", b"after")
    assert copydata_run(data, 2, len(data)) == (2 + len(run), b"".join(lines))
    assert copydata_run(data, 2 + len(run), len(data)) == (2 + len(run), b"")
    # A frame cut by `size` (a read that ends inside it) is not taken.
    assert copydata_run(data, 2, 2 + len(run) - 1) == (
        2 + len(frame(b"d", lines[0])) + 5,
        b"1\tann\n",
    )
    bad_length = frame(b"d", b"ok") + b"d\x00\x00\x00\x02" + b"zz"
    assert copydata_run(bad_length, 0, len(bad_length)) == (7, b"ok")
    with pytest.raises(ValueError, match="out of range"):
        copydata_run(data, len(data) + 1, len(data))


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=60), pos=st.integers(0, 70), size=st.integers(0, 80))
def test_copydata_runs_give_the_same_answer_on_any_input(
    garbage: bytes, pos: int, size: int
) -> None:
    framed = garbage[:3] + frame(b"d", garbage[3:9]) + frame(b"d", b"") + garbage[9:]
    for data in (garbage, framed):
        outcomes: list[object] = []
        for run in [rows.py_copydata_run] + ([_speedups.copydata_run] if rows.COMPILED else []):
            try:
                outcomes.append(run(data, pos, size))
            except ValueError as exc:
                outcomes.append(str(exc))
        assert all(o == outcomes[0] for o in outcomes)


@pytest.mark.skipif(not rows.COMPILED, reason="the compiled loops are not built")
def test_the_compiled_walkers_check_their_arguments() -> None:
    """They take positional arguments without a tuple (METH_FASTCALL) and
    check them as the argument parser did: any bytes-like buffer, indexes as
    integers, and nothing held after an error."""
    run = frame(b"D", b"\x00\x00") + frame(b"Z", b"I")
    walkers: list[tuple[Callable[..., object], tuple[object, ...]]] = [
        (_speedups.datarow_run, (run, 0, len(run))),
        (_speedups.copydata_run, (run, 0, len(run))),
        (_speedups.walk_frames, (run, 0, len(run), b"")),
    ]
    for walker, good in walkers:
        first = walker(*good)
        for buffer in (bytearray(run), memoryview(run)):
            assert walker(buffer, *good[1:]) == first
        with pytest.raises(TypeError, match="takes exactly"):
            walker(*good[:-1])
        with pytest.raises(TypeError, match="takes exactly"):
            walker(*good, 0)
        with pytest.raises(TypeError, match="bytes-like"):
            walker(run.decode("latin-1"), *good[1:])
        with pytest.raises(TypeError):
            walker(run, "0", *good[2:])
        with pytest.raises(OverflowError):
            walker(run, 0, 1 << 70, *good[3:])
        with pytest.raises(ValueError, match="out of range"):
            walker(run, -1, *good[2:])
    walk_untyped: Callable[..., object] = _speedups.walk_frames
    with pytest.raises(TypeError, match="bytes-like"):
        walk_untyped(run, 0, len(run), "Z")
    # A buffer is not left exported after an error: a bytearray can still grow.
    growing = bytearray(run)
    with pytest.raises(ValueError, match="out of range"):
        _speedups.walk_frames(growing, len(run) + 1, len(run), b"")
    with pytest.raises(TypeError, match="bytes-like"):
        walk_untyped(growing, 0, len(run), "Z")
    growing += b"more"
    # Both versions answer alike for the same input (the Python one, as reference).
    assert _speedups.walk_frames(run, 0, len(run), b"") == rows.py_walk_frames(
        run, 0, len(run), b""
    )
    assert _speedups.datarow_run(run, 0, len(run)) == rows.py_datarow_run(run, 0, len(run))
