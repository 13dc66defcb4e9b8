"""bench.profile reads perf's report as perf prints it."""

from __future__ import annotations

from bench.profile import Share, merge_unnamed, parse_report

REPORT = """\
# To display the perf.data header info, please use --header/--header-only options.
#
# Total Lost Samples: 0
#
# Samples: 6K of event 'cpu-clock:ppp'
# Event count (approx.): 6141141135
#
# Overhead  Shared Object                                Symbol
# ........  ...........................................  ..............
#
     7.51%  libc.so.6             [.] __memmove_avx512_unaligned_erms    -      -
     4.37%  [kernel.kallsyms]             [k] _raw_spin_unlock_irqrestore        -      -
     2.00%  _hs_ext.cpython-311-x86_64-linux-gnu.so  [.] 0x000000000022c724                 -      -
     0.57%  _hs_ext.cpython-311-x86_64-linux-gnu.so  [.] 0x000000000022c73b                 -      -
    12.10%  libpython3.11.so.1.0             [.] _PyEval_EvalFrameDefault           -      -


"""


def test_rows_are_read_largest_first_without_perf_columns() -> None:
    shares = parse_report(REPORT)
    assert [s.percent for s in shares] == [12.10, 7.51, 4.37, 2.00, 0.57]
    assert shares[0] == Share(12.10, "libpython3.11.so.1.0 [.] _PyEval_EvalFrameDefault")
    assert shares[2].name == "[kernel.kallsyms] [k] _raw_spin_unlock_irqrestore"


def test_addresses_of_a_stripped_library_merge_into_one_row() -> None:
    merged = merge_unnamed(parse_report(REPORT))
    hs = [s for s in merged if s.name.startswith("_hs_ext")]
    assert len(hs) == 1
    assert hs[0].name.endswith("(unnamed symbols)")
    assert round(hs[0].percent, 2) == 2.57
    assert len(merged) == 4


def test_a_report_by_shared_object_alone() -> None:
    text = (
        "    26.06%  _hs_ext.cpython-311-x86_64-linux-gnu.so    \n    22.36%  [kernel.kallsyms]\n"
    )
    assert parse_report(text) == [
        Share(26.06, "_hs_ext.cpython-311-x86_64-linux-gnu.so"),
        Share(22.36, "[kernel.kallsyms]"),
    ]
