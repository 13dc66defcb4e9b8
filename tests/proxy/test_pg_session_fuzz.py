"""Random client pipelines and server answers through a governed session.

Whatever arrives, in whatever order (answers that match nothing sent,
errors mid-batch, names reused, Closes, PREPARE and DEALLOCATE in query
strings), the session either goes on or ends with a protocol or masking
error: never with the gateway's own failure (XX000), and never raising.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.framing import frame
from tests.proxy.test_pg_session_reads import _session

NAMES = st.sampled_from(["", "a", "b"])
TEXTS = st.sampled_from(["SELECT 1", "SELECT 2", "EXECUTE a", "PREPARE b AS SELECT 3"])
QUERIES = st.sampled_from(
    [
        "PREPARE a AS SELECT 1",
        "PREPARE b AS SELECT 2; EXECUTE b",
        "DEALLOCATE a",
        "DEALLOCATE ALL",
        "DISCARD ALL",
        "EXECUTE a",
        "SELECT 1",
    ]
)

CLIENT = st.one_of(
    st.builds(lambda n, t: frame(b"P", f"{n}\0{t}\0".encode() + b"\0\0"), NAMES, TEXTS),
    st.builds(lambda n: frame(b"B", f"\0{n}\0".encode() + b"\0\0\0\0\0\0"), NAMES),
    st.builds(lambda n: frame(b"C", f"S{n}\0".encode()), NAMES),
    st.builds(lambda n: frame(b"D", f"S{n}\0".encode()), NAMES),
    st.just(frame(b"E", b"\0\0\0\0\0")),
    st.just(frame(b"S", b"")),
    st.builds(m.encode_query, QUERIES),
    # Fast-path calls: lo_close(0) with its result in binary, and a truncated one.
    st.just(frame(b"F", b"\0\0\3\xbb\0\1\0\1\0\1\0\0\0\4\0\0\0\0\0\1")),
    st.just(frame(b"F", b"\0\0\3")),
)
SERVER = st.sampled_from(
    [
        frame(b"1", b""),  # ParseComplete
        frame(b"2", b""),  # BindComplete
        frame(b"3", b""),  # CloseComplete
        frame(b"n", b""),  # NoData
        m.command_complete("SELECT 1"),
        m.command_complete("PREPARE"),
        m.command_complete("DEALLOCATE"),
        m.error_response("42P05", "prepared statement already exists"),
        m.ready_for_query("I"),
        m.ready_for_query("E"),
        frame(b"V", b"\0\0\0\4\0\0\0\0"),  # FunctionCallResponse
    ]
)
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("client"), st.lists(CLIENT, min_size=1, max_size=6)),
        st.tuples(st.just("server"), st.lists(SERVER, min_size=1, max_size=6)),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(STEPS)
def test_any_pipeline_and_answers_leave_the_gateway_standing(
    steps: list[tuple[str, list[bytes]]],
) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        _session(Path(tmp), governed=True) as (session, client),
    ):
        for side, frames in steps:
            if session.end_reason is not None:
                break
            if side == "client":
                session.client_data(b"".join(frames))
            else:
                session.backend_data(b"".join(frames))
        assert b"XX000" not in client.data
        assert session.end_reason in (None, "protocol_error", "backend_protocol_error")
