"""Either stream cut into reads anywhere gives the other side the same bytes.

The session walks each read in place and copies only a message split across
reads; these tests drive a `PgSession` without sockets (the transports
collect what is written) and hold every cutting of a response, and of a batch
of client messages, equal to the same bytes read whole, on the light path and
on the governed one (policy, masking and recording on), and bad input split
across reads still fails closed.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.config import Config
from sluice.events import Identity, Protocol, SessionContext
from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.framing import frame
from sluice.proxy.governance import Governor
from sluice.proxy.governance_setup import build_services
from sluice.proxy.pg_session import PgSession
from sluice.store.db import Store

EMAIL = b"jane.roe@example.com"


class Collect(asyncio.Transport):
    """A transport that keeps what the session writes."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


class Keep(Collect):
    """Keeps the very objects written."""

    def __init__(self, written: list[object]) -> None:
        super().__init__()
        self.written = written

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(data)


def _config(data_dir: Path, *, governed: bool, recorded: bool = False) -> Config:
    conn: dict[str, Any] = {
        "name": "db",
        "host": "127.0.0.1",
        "port": 5432,
        "database": "db",
        "user": "db",
        "password": {"env": "UNUSED"},
    }
    raw: dict[str, Any] = {"data_dir": str(data_dir), "connections": [conn]}
    if governed:
        conn["policy"] = "agent"
        conn["masking"] = ["pii"]
        raw["policies"] = [{"name": "agent", "extends": "ai-agent"}]
        raw["masking"] = {"profiles": [{"name": "pii", "detectors": ["all"], "content": True}]}
    elif not recorded:
        conn["recording"] = {"enabled": False}
    return Config.model_validate(raw)


@contextmanager
def _session(
    tmp: Path,
    *,
    governed: bool,
    recorded: bool = False,
    parameters: dict[str, str] | None = None,
) -> Iterator[tuple[PgSession, Collect]]:
    async def no_catalog(sql: str) -> list[list[list[bytes | None]]]:
        return [[], []]

    config = _config(tmp, governed=governed, recorded=recorded)
    store = Store(f"sqlite:///{tmp / 'sluice.db'}")
    governance = Governor(build_services(config, store)).session(
        SessionContext(
            session_id=f"reads-{governed}",
            identity=Identity(user="agent", groups=("agents",)),
            connection="db",
            protocol=Protocol.POSTGRES,
            client_addr="127.0.0.1",
        ),
        config.connections[0],
    )
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(governance.start_masking(no_catalog))
        client = Collect()

        async def make() -> PgSession:
            return PgSession(
                client=client,
                backend=Collect(),
                governance=governance,
                limits=config.limits,
                transaction_status="I",
                on_finish=lambda s: None,
                parameters=parameters,
            )

        session = loop.run_until_complete(make())
        yield session, client
        session.finish("client_terminated")
        governance.close(reason="client_terminated", detail=None)
    finally:
        loop.close()
        store.close()


def _text_columns(*names: str) -> bytes:
    """A RowDescription of text columns."""
    fields = [
        m.FieldDescription(
            name=name, table_oid=0, column=0, type_oid=25, type_size=-1, type_modifier=-1, format=0
        )
        for name in names
    ]
    return m.encode_row_description(fields)


def _response(rows: int) -> bytes:
    body = bytearray(_text_columns("id", "note"))
    for i in range(rows):
        note = b"write to " + EMAIL if i % 3 == 0 else b"nothing to see " * (i % 5)
        body += m.encode_data_row([str(i).encode(), note])
    body += m.command_complete(f"SELECT {rows}") + m.ready_for_query("T")
    return bytes(body)


QUERY = m.encode_query("SELECT id, note FROM notes")
RESPONSE = _response(12)


@pytest.fixture(scope="module")
def sessions(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[bool, tuple[PgSession, Collect]]]:
    """One light and one governed session; each test round trip reuses them."""
    with (
        _session(tmp_path_factory.mktemp("light"), governed=False) as light,
        _session(tmp_path_factory.mktemp("governed"), governed=True) as governed,
    ):
        yield {False: light, True: governed}


def _through(session: tuple[PgSession, Collect], reads: list[bytes]) -> tuple[bytes, str]:
    pg, client = session
    client.data.clear()
    pg.transaction_status = "I"  # the response's ReadyForQuery says T
    pg.client_data(QUERY)
    for read in reads:
        pg.backend_data(read)
    return bytes(client.data), pg.transaction_status


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, *(c % (len(data) + 1) for c in cuts), len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@pytest.mark.parametrize("governed", [False, True], ids=["light", "governed"])
def test_every_single_cut_gives_the_same_bytes(
    sessions: dict[bool, tuple[PgSession, Collect]], governed: bool
) -> None:
    session = sessions[governed]
    whole, status = _through(session, [RESPONSE])
    assert status == "T"
    if governed:
        assert EMAIL not in whole
        assert whole != RESPONSE
    else:
        assert whole == RESPONSE
    for cut in range(1, len(RESPONSE)):
        got = _through(session, [RESPONSE[:cut], RESPONSE[cut:]])
        assert got == (whole, "T"), f"cut at byte {cut}"
    assert session[0].end_reason is None


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(RESPONSE)), max_size=40))
def test_any_cutting_gives_the_same_bytes(
    sessions: dict[bool, tuple[PgSession, Collect]], cuts: list[int]
) -> None:
    for session in sessions.values():
        whole = _through(session, [RESPONSE])
        assert _through(session, _cut(RESPONSE, cuts)) == whole


def test_a_whole_read_is_forwarded_as_the_object_that_arrived(tmp_path: Path) -> None:
    with _session(tmp_path, governed=False) as (session, _client):
        written: list[object] = []
        session.client = Keep(written)
        session.client_data(QUERY)
        session.backend_data(RESPONSE)
        assert written
        assert written[0] is RESPONSE


@pytest.mark.parametrize("governed", [False, True], ids=["light", "governed"])
def test_a_read_ending_inside_a_frame_is_forwarded_without_a_copy(
    tmp_path: Path, governed: bool
) -> None:
    """What precedes the partial frame goes on as a view of the read itself;
    only the partial frame is copied, to be completed by the next read."""
    read = RESPONSE[:-3]
    with _session(tmp_path, governed=governed) as (session, _client):
        written: list[object] = []
        session.client = Keep(written)
        session.client_data(QUERY)
        session.backend_data(read)
        session.backend_data(RESPONSE[-3:])
        first = written[0]
        if not governed:  # governed masks the email: its rows are new bytes
            assert isinstance(first, memoryview)
            assert first.obj is read
        assert _concat(written) == _through_whole(tmp_path, governed)


class Sends(Collect):
    """Counts the calls that each become a send (and, over TLS, a record) of their
    own, and keeps the largest amount one call handed over: over TLS, what it put
    into the connection's memory BIO, which keeps that size."""

    def __init__(self) -> None:
        super().__init__()
        self.sends = 0
        self.largest = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writelines((data,))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        parts = list(list_of_data)
        self.sends += 1
        self.largest = max(self.largest, sum(len(p) for p in parts))
        for data in parts:
            super().write(data)


@pytest.mark.parametrize("governed", [False, True], ids=["light", "governed"])
def test_a_read_completing_a_split_frame_goes_on_in_one_send(
    tmp_path: Path, governed: bool
) -> None:
    """The frame completed from the head of a read leaves with the rest of
    that read: on large results nearly every read starts inside a row."""
    inside_a_row = RESPONSE.index(b"nothing to see") + 3
    with _session(tmp_path, governed=governed) as (session, _client):
        client = Sends()
        session.client = client
        session.client_data(QUERY)
        session.backend_data(RESPONSE[:inside_a_row])
        session.backend_data(RESPONSE[inside_a_row:])
        assert client.sends == 2
        assert bytes(client.data) == _through_whole(tmp_path, governed)
        assert session.bytes_to_client == len(client.data)


def _concat(written: list[object]) -> bytes:
    assert all(isinstance(w, bytes | memoryview) for w in written)
    return b"".join(w for w in written if isinstance(w, bytes | memoryview))


def _through_whole(tmp_path: Path, governed: bool) -> bytes:
    with _session(tmp_path / "whole", governed=governed) as (session, _client):
        written: list[object] = []
        session.client = Keep(written)
        session.client_data(QUERY)
        session.backend_data(RESPONSE)
        return _concat(written)


@pytest.mark.parametrize("governed", [False, True], ids=["light", "governed"])
def test_a_bad_length_split_across_reads_fails_closed(tmp_path: Path, governed: bool) -> None:
    bad = b"D" + (2).to_bytes(4, "big")  # a length shorter than the length field itself
    with _session(tmp_path, governed=governed) as (session, client):
        session.client_data(QUERY)
        session.backend_data(RESPONSE[:-6] + bad[:3])
        session.backend_data(bad[3:])
        assert session.end_reason == "backend_protocol_error"
        assert b"08P01" in client.data


def test_a_blocked_statements_error_is_rewritten_however_it_is_cut(
    sessions: dict[bool, tuple[PgSession, Collect]],
) -> None:
    """The backend's error for the stand-in statement carries the gateway's
    marker; cut anywhere, the client still gets Sluice's 42501, never the marker."""
    pg, client = sessions[True]
    backend = pg.backend
    assert isinstance(backend, Collect)

    def blocked_round_trip(reads_of: Callable[[bytes], list[bytes]]) -> bytes:
        backend.data.clear()
        client.data.clear()
        pg.client_data(m.encode_query("DROP TABLE notes"))
        marker = re.search(rb"sluice-[0-9a-f]+", bytes(backend.data))
        assert marker is not None  # the stand-in statement went to the backend
        response = m.error_response(
            "42703", f'column "{marker.group().decode()}" does not exist'
        ) + m.ready_for_query("I")
        for read in reads_of(response):
            pg.backend_data(read)
        return bytes(client.data)

    whole = blocked_round_trip(lambda r: [r])
    assert b"42501" in whole
    assert b"blocked by Sluice" in whole
    assert b"sluice-" not in whole
    for cut in range(1, 40):
        got = blocked_round_trip(_split_at(cut))
        assert got == whole, f"cut at byte {cut}"
    assert pg.transaction_status == "I"
    assert pg.end_reason is None


def _split_at(cut: int) -> Callable[[bytes], list[bytes]]:
    return lambda data: [data[:cut], data[cut:]]


# The client's stream


def _extended(sql: str) -> bytes:
    """Parse, Bind, Describe, Execute and Sync of an unnamed statement, no parameters."""
    return (
        frame(b"P", b"\0" + sql.encode() + b"\0\0\0")
        + frame(b"B", b"\0\0" + b"\0\0" * 3)
        + frame(b"D", b"P\0")
        + frame(b"E", b"\0\0\0\0\0")
        + frame(b"S")
    )


# Allowed, blocked (governed only) and allowed again, in both protocols.
BATCH = (
    m.encode_query("SELECT 1")
    + _extended("SELECT id FROM notes")
    + m.encode_query("DROP TABLE notes")
    + _extended("DROP TABLE notes")
    + m.encode_query("SELECT 2")
)
_MARKER = re.compile(rb"sluice-[0-9a-f]{20}")


def _sent(session: tuple[PgSession, Collect], reads: list[bytes]) -> bytes:
    """What the backend gets for the client's `reads` (markers made comparable)."""
    pg, _client = session
    backend = pg.backend
    assert isinstance(backend, Collect)
    backend.data.clear()
    for read in reads:
        pg.client_data(read)
    assert not pg._cbuf
    return _MARKER.sub(b"sluice-MARKER", bytes(backend.data))


@pytest.mark.parametrize("governed", [False, True], ids=["light", "governed"])
def test_client_messages_cut_anywhere_reach_the_backend_the_same(
    sessions: dict[bool, tuple[PgSession, Collect]], governed: bool
) -> None:
    session = sessions[governed]
    whole = _sent(session, [BATCH])
    if governed:
        # Both DROPs went as stand-ins that fail on the backend; the SELECTs as sent.
        assert b"DROP" not in whole
        assert whole.count(b"sluice-MARKER") == 2
        assert m.encode_query("SELECT 1") in whole
        assert _extended("SELECT id FROM notes") in whole
    else:
        assert whole == BATCH
    for cut in range(1, len(BATCH)):
        assert _sent(session, [BATCH[:cut], BATCH[cut:]]) == whole, f"cut at byte {cut}"
    assert session[0].end_reason is None


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(BATCH)), max_size=40))
def test_client_messages_in_any_cutting_reach_the_backend_the_same(
    sessions: dict[bool, tuple[PgSession, Collect]], cuts: list[int]
) -> None:
    for session in sessions.values():
        assert _sent(session, _cut(BATCH, cuts)) == _sent(session, [BATCH])


@pytest.mark.parametrize("governed", [False, True], ids=["light", "governed"])
def test_a_whole_client_message_is_forwarded_as_the_object_that_arrived(
    tmp_path: Path, governed: bool
) -> None:
    with _session(tmp_path, governed=governed) as (session, _client):
        written: list[object] = []
        session.backend = Keep(written)
        session.client_data(QUERY)
        assert len(written) == 1
        assert written[0] is QUERY


@pytest.mark.parametrize(
    ("bad", "sqlstate", "detail"),
    [
        (b"Q" + (3).to_bytes(4, "big"), b"08P01", b"invalid message length 3"),
        (b"Z" + (4).to_bytes(4, "big"), b"08P01", b"unexpected message type 'Z'"),
        (b"d" + (1 << 30).to_bytes(4, "big"), b"54000", b"over the limit"),
    ],
    ids=["short-length", "server-message-type", "oversized"],
)
@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
def test_bad_client_messages_fail_closed_after_what_came_before(
    tmp_path: Path, bad: bytes, sqlstate: bytes, detail: bytes, split: bool
) -> None:
    """Messages before the bad one still go; nothing after it does."""
    after = m.encode_query("SELECT 2")
    with _session(tmp_path, governed=False) as (session, client):
        backend = session.backend
        assert isinstance(backend, Collect)
        stream = QUERY + bad + after
        reads = [stream[: len(QUERY) + 2], stream[len(QUERY) + 2 :]] if split else [stream]
        for read in reads:
            session.client_data(read)
        assert session.end_reason == "protocol_error"
        assert sqlstate in client.data
        assert detail in client.data
        assert bytes(backend.data).startswith(QUERY)
        assert after not in backend.data


def test_messages_after_terminate_are_not_sent(tmp_path: Path) -> None:
    with _session(tmp_path, governed=True) as (session, _client):
        backend = session.backend
        assert isinstance(backend, Collect)
        session.client_data(QUERY + m.TERMINATE_MESSAGE + m.encode_query("SELECT 2"))
        assert session.end_reason == "client_terminated"
        assert bytes(backend.data) == QUERY + m.TERMINATE_MESSAGE


def test_copy_out_is_recorded_whole_however_it_is_cut(tmp_path: Path) -> None:
    """Recording without masking takes runs of CopyData frames in one piece;
    every cutting forwards the same bytes and records the same data."""
    from sluice.proxy.governance_setup import recording_store
    from sluice.recording import replay
    from sluice.recording.records import CopyRecord

    lines = [f"{i}\tline {i}\n".encode() * (i % 4) for i in range(40)]  # some empty
    response = (
        frame(b"H", b"\0\0\2\0\0\0\0")
        + b"".join(frame(b"d", line) for line in lines)
        + frame(b"c", b"")
        + m.command_complete("COPY 40")
        + m.ready_for_query("I")
    )
    query = m.encode_query("COPY notes TO STDOUT")
    cuts = list(range(1, len(response)))
    with _session(tmp_path, governed=False, recorded=True) as (session, client):
        for cut in [None, *cuts]:
            client.data.clear()
            session.client_data(query)
            reads = [response] if cut is None else [response[:cut], response[cut:]]
            for read in reads:
                session.backend_data(read)
            assert bytes(client.data) == response, f"cut at byte {cut}"
        config = _config(tmp_path, governed=False, recorded=True)
    path = recording_store(config).path_for("reads-False")
    recorded = b"".join(r.data for r in replay(path) if isinstance(r, CopyRecord))
    assert recorded == b"".join(lines) * (1 + len(cuts))


def _copy_stream(data: bytes) -> tuple[bytes, tuple[int, ...]]:
    """The COPY data the client got (CopyData payloads joined), and the other message kinds."""
    payloads = bytearray()
    kinds = []
    pos = 0
    while pos < len(data):
        kind, length = data[pos], int.from_bytes(data[pos + 1 : pos + 5], "big")
        if kind == ord("d"):
            payloads += data[pos + 5 : pos + 1 + length]
        else:
            kinds.append(kind)
        pos += 1 + length
    return bytes(payloads), tuple(kinds)


def test_masked_copy_out_is_the_same_stream_however_it_is_cut(tmp_path: Path) -> None:
    """With masking, runs of CopyData are masked at once and go on as one
    message: the message boundaries follow the reads, the data does not."""
    lines = [
        f"{i}\tnote {i}\t{'mail ' + EMAIL.decode() if i % 4 == 0 else 'nothing'}\n".encode()
        for i in range(24)
    ]
    response = (
        frame(b"H", b"\0\0\3\0\0\0\0\0\0")
        + b"".join(frame(b"d", line) for line in lines)
        + frame(b"c", b"")
        + m.command_complete("COPY 24")
        + m.ready_for_query("I")
    )
    query = m.encode_query("COPY notes TO STDOUT")
    with _session(tmp_path, governed=True) as (session, client):
        outcomes = set()
        for cut in [None, *range(1, len(response))]:
            client.data.clear()
            session.client_data(query)
            reads = [response] if cut is None else [response[:cut], response[cut:]]
            for read in reads:
                session.backend_data(read)
            outcomes.add(_copy_stream(bytes(client.data)))
            assert session.end_reason is None, f"cut at byte {cut}"
    assert len(outcomes) == 1
    ((stream, kinds),) = outcomes
    assert EMAIL not in stream
    assert stream.count(b"\n") == 24
    assert b"note 23\tnothing\n" in stream
    assert kinds == tuple(b"HcCZ")


@pytest.mark.parametrize("governed", [False, True], ids=["light", "governed"])
def test_a_big_row_or_statement_reaches_the_other_side_in_slices(
    tmp_path: Path, governed: bool
) -> None:
    """A 3 MB value is sent on in writes of at most 256 KiB (SEND_SLICE), whole
    and in order, however the reads cut it; so is a 3 MB statement to the backend."""
    most = 256 * 1024
    big = b"nothing to see " * (3 * 1024 * 1024 // 15)
    response = (
        _text_columns("note")
        + m.encode_data_row([big])
        + m.command_complete("SELECT 1")
        + m.ready_for_query("I")
    )
    statement = m.encode_query(f"SELECT '{big.decode()}' AS note")
    with _session(tmp_path, governed=governed) as (session, _client):
        client, backend = Sends(), Sends()
        session.client, session.backend = client, backend
        for start in range(0, len(statement), 200_000):
            session.client_data(statement[start : start + 200_000])
        for start in range(0, len(response), 100_000):  # every read ends inside the row
            session.backend_data(response[start : start + 100_000])
        assert bytes(backend.data) == statement
        assert bytes(client.data) == response
        assert 0 < client.largest <= most
        assert 0 < backend.largest <= most
        assert session.bytes_to_client == len(response)
