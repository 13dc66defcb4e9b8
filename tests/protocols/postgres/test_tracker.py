"""QueryTracker: which request each server response answers, and the rows' shape."""

from __future__ import annotations

import pytest

from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres import tracker as tracker_module
from sluice.protocols.postgres.errors import RemoteProtocolError, TooManyPendingRequests
from sluice.protocols.postgres.framing import frame
from sluice.protocols.postgres.messages import FieldDescription
from sluice.protocols.postgres.tracker import Pending, QueryTracker, ResultShape


def field(name: str, type_oid: int = 25, fmt: int = 0) -> FieldDescription:
    return FieldDescription(
        name=name,
        table_oid=16384,
        column=1,
        type_oid=type_oid,
        type_size=-1,
        type_modifier=-1,
        format=fmt,
    )


def row_description(*fields: FieldDescription) -> bytes:
    return m.encode_row_description(list(fields))[5:]


def names(shape: ResultShape | None) -> list[str]:
    assert shape is not None
    return [f.name for f in shape.fields]


def formats(shape: ResultShape | None) -> list[int]:
    assert shape is not None
    return [f.format for f in shape.fields]


class Server:
    """Feeds the tracker server messages by letter, as the session does."""

    def __init__(self, tracker: QueryTracker):
        self.t = tracker

    def __call__(self, *kinds: str) -> None:
        for kind in kinds:
            self.t.on_server(ord(kind))

    def describe(self, *fields: FieldDescription) -> None:
        self.t.on_server(m.ROW_DESCRIPTION, row_description(*fields))


@pytest.fixture
def t() -> QueryTracker:
    return QueryTracker()


def test_simple_query_with_multiple_results(t: QueryTracker) -> None:
    srv = Server(t)
    t.on_query("SELECT a FROM x; SELECT b, c FROM y")
    assert t.rows_shape() is None
    srv.describe(field("a"))
    shape = t.rows_shape()
    assert names(shape) == ["a"]
    assert shape is not None
    assert shape.sql == "SELECT a FROM x; SELECT b, c FROM y"
    assert shape.statement_index == 0
    srv("C")
    assert t.rows_shape() is None
    srv.describe(field("b"), field("c"))
    shape = t.rows_shape()
    assert names(shape) == ["b", "c"]
    assert shape is not None
    assert shape.statement_index == 1
    srv("C", "Z")
    assert t.rows_shape() is None
    assert not t.pending
    # The index restarts with the next query.
    t.on_query("SELECT d")
    srv.describe(field("d"))
    shape = t.rows_shape()
    assert shape is not None
    assert shape.statement_index == 0


def test_simple_query_error_keeps_query_until_ready(t: QueryTracker) -> None:
    srv = Server(t)
    t.on_query("SELECT 1; SELECT nope")
    srv.describe(field("?column?"))
    srv("C", "E")
    assert t.rows_shape() is None
    assert [r.kind for r in t.pending] == [Pending.QUERY]
    srv("Z")
    assert not t.pending


def test_empty_query(t: QueryTracker) -> None:
    t.on_query("")
    Server(t)("I", "Z")
    assert not t.pending


def test_extended_parse_bind_describe_portal_execute(t: QueryTracker) -> None:
    # What libpq's PQexecParams sends: Parse, Bind, Describe P, Execute, Sync.
    srv = Server(t)
    t.on_parse("", "SELECT id, email FROM users WHERE id = $1")
    t.on_bind("", "", (1,))
    t.on_describe("P", "")
    t.on_execute("")
    t.on_sync()
    srv("1", "2")
    srv.describe(field("id", 23, 1), field("email", 25, 1))
    shape = t.rows_shape()
    assert names(shape) == ["id", "email"]
    assert formats(shape) == [1, 1]
    assert shape is not None
    assert shape.sql == "SELECT id, email FROM users WHERE id = $1"
    srv("C")
    assert t.rows_shape() is None
    srv("Z")
    assert not t.pending


def test_describe_statement_then_bind_binary_then_execute(t: QueryTracker) -> None:
    # Prepare once and describe the statement (formats are always 0 there)...
    srv = Server(t)
    t.on_parse("s1", "SELECT id, name, photo FROM users")
    t.on_describe("S", "s1")
    t.on_sync()
    srv("1", "t")
    srv.describe(field("id", 23), field("name"), field("photo", 17))
    srv("Z")
    assert t.statement_sql("s1") == "SELECT id, name, photo FROM users"
    # ...then execute with per-column result formats and no RowDescription.
    t.on_bind("p", "s1", (1, 0, 1))
    t.on_execute("p")
    t.on_sync()
    srv("2")
    assert t.portal_statement("p") == "s1"
    shape = t.rows_shape()
    assert names(shape) == ["id", "name", "photo"]
    assert formats(shape) == [1, 0, 1]
    assert shape is not None
    assert shape.sql == "SELECT id, name, photo FROM users"
    srv("C", "Z")
    # One format code applies to every column; none means text.
    for fmts, expected in [((1,), [1, 1, 1]), ((), [0, 0, 0]), ((1, 1), [1, 1, 0])]:
        t.on_bind("p", "s1", fmts)
        t.on_execute("p")
        t.on_sync()
        srv("2")
        assert formats(t.rows_shape()) == expected
        srv("C", "Z")
    assert not t.pending


def test_describe_statement_after_bind(t: QueryTracker) -> None:
    srv = Server(t)
    t.on_parse("s", "SELECT a")
    t.on_bind("", "s", (1,))
    t.on_describe("S", "s")
    t.on_execute("")
    t.on_sync()
    srv("1", "2", "t")
    srv.describe(field("a"))
    assert formats(t.rows_shape()) == [1]
    srv("C", "Z")


def test_statement_without_description_has_no_shape(t: QueryTracker) -> None:
    srv = Server(t)
    t.on_parse("s", "SELECT a")
    t.on_bind("", "s", ())
    t.on_execute("")
    t.on_sync()
    srv("1", "2")
    assert t.rows_shape() is None
    srv("C", "Z")
    assert not t.pending


def test_pipelined_extended_sequences(t: QueryTracker) -> None:
    srv = Server(t)
    for i in range(3):
        t.on_parse(f"s{i}", f"SELECT c{i}")
        t.on_bind(f"p{i}", f"s{i}", (i % 2,))
        t.on_describe("P", f"p{i}")
        t.on_execute(f"p{i}")
    t.on_sync()
    for i in range(3):
        srv("1", "2")
        srv.describe(field(f"c{i}", fmt=i % 2))
        shape = t.rows_shape()
        assert names(shape) == [f"c{i}"]
        assert formats(shape) == [i % 2]
        srv("C")
    srv("Z")
    assert not t.pending
    # Named portals from a finished transaction may linger; statements remain.
    assert set(t.statements) == {"s0", "s1", "s2"}


def test_pipelined_syncs_each_answered_in_order(t: QueryTracker) -> None:
    srv = Server(t)
    t.on_parse("a", "SELECT 1 AS one")
    t.on_describe("S", "a")
    t.on_sync()
    t.on_bind("", "a", ())
    t.on_execute("")
    t.on_sync()
    srv("1", "t")
    srv.describe(field("one", 23))
    srv("Z")
    assert [r.kind for r in t.pending] == [Pending.BIND, Pending.EXECUTE, Pending.SYNC]
    srv("2")
    assert names(t.rows_shape()) == ["one"]
    srv("C", "Z")
    assert not t.pending


def test_execute_with_row_limit_portal_suspended(t: QueryTracker) -> None:
    srv = Server(t)
    t.on_parse("s", "SELECT a")
    t.on_describe("S", "s")
    t.on_bind("p", "s", ())
    t.on_execute("p")
    t.on_execute("p")
    t.on_sync()
    srv("1", "t")
    srv.describe(field("a"))
    srv("2")
    assert names(t.rows_shape()) == ["a"]
    srv("s")  # PortalSuspended
    assert names(t.rows_shape()) == ["a"]
    srv("C", "Z")
    assert not t.pending


def test_no_data_for_statement_without_result(t: QueryTracker) -> None:
    srv = Server(t)
    t.on_parse("", "UPDATE x SET a = 1")
    t.on_bind("", "", ())
    t.on_describe("P", "")
    t.on_execute("")
    t.on_sync()
    srv("1", "2", "n")
    assert t.rows_shape() is None
    srv("C", "Z")
    assert not t.pending


def test_error_discards_until_sync(t: QueryTracker) -> None:
    srv = Server(t)
    t.on_parse("bad", "SELEC 1")
    t.on_bind("", "bad", ())
    t.on_describe("P", "")
    t.on_execute("")
    t.on_sync()
    t.on_parse("good", "SELECT 2 AS two")
    t.on_describe("S", "good")
    t.on_sync()
    srv("E")
    assert [r.kind for r in t.pending] == [
        Pending.SYNC,
        Pending.PARSE,
        Pending.DESCRIBE_STATEMENT,
        Pending.SYNC,
    ]
    assert "bad" not in t.statements
    srv("Z", "1", "t")
    srv.describe(field("two", 23))
    srv("Z")
    assert not t.pending
    assert t.statements["good"][1] == [field("two", 23)]


def test_error_mid_result_clears_shape(t: QueryTracker) -> None:
    srv = Server(t)
    t.on_parse("s", "SELECT 1/0")
    t.on_describe("S", "s")
    t.on_bind("", "s", ())
    t.on_execute("")
    t.on_sync()
    srv("1", "t")
    srv.describe(field("x"))
    srv("2")
    assert names(t.rows_shape()) == ["x"]
    srv("E")
    assert t.rows_shape() is None
    assert [r.kind for r in t.pending] == [Pending.SYNC]
    srv("Z")
    assert not t.pending


def test_error_discards_messages_sent_after_it_until_sync(t: QueryTracker) -> None:
    # The server ignores everything up to Sync, a simple Query included, even
    # messages the client sends after the error arrived.
    srv = Server(t)
    t.on_parse("", "SELEC 1")
    srv("E")
    assert not t.pending
    t.on_query("SELECT ssn FROM people")
    t.on_bind("", "", ())
    t.on_execute("")
    t.on_sync()
    assert [r.kind for r in t.pending] == [Pending.SYNC]
    srv("Z")
    assert not t.pending
    t.on_query("SELECT name FROM people")
    srv.describe(field("name"))
    assert names(t.rows_shape()) == ["name"]
    srv("C", "Z")
    assert not t.pending


def test_error_discards_a_pipelined_query_before_sync(t: QueryTracker) -> None:
    srv = Server(t)
    t.on_parse("", "SELEC 1")
    t.on_query("SELECT a")
    t.on_sync()
    srv("E", "Z")
    assert not t.pending
    t.on_query("SELECT b")
    srv.describe(field("b"))
    assert names(t.rows_shape()) == ["b"]


def test_error_at_sync_commit(t: QueryTracker) -> None:
    # A deferred constraint fails at the implicit COMMIT of Sync.
    srv = Server(t)
    t.on_parse("", "INSERT INTO x VALUES (1)")
    t.on_bind("", "", ())
    t.on_execute("")
    t.on_sync()
    t.on_query("SELECT a")
    srv("1", "2", "C", "E", "Z")
    assert [r.kind for r in t.pending] == [Pending.QUERY]
    srv.describe(field("a"))
    assert names(t.rows_shape()) == ["a"]


def test_close_statement_and_portal(t: QueryTracker) -> None:
    srv = Server(t)
    t.on_parse("s", "SELECT a")
    t.on_bind("p", "s", ())
    t.on_sync()
    srv("1", "2", "Z")
    assert t.statement_sql("s") == "SELECT a"
    assert t.portal_statement("p") == "s"
    t.on_close("P", "p")
    t.on_close("S", "s")
    t.on_sync()
    srv("3")
    assert t.portal_statement("p") is None
    assert t.statement_sql("s") == "SELECT a"
    srv("3", "Z")
    assert t.statement_sql("s") is None
    assert not t.pending


def test_ready_for_query_drops_unnamed_portal(t: QueryTracker) -> None:
    srv = Server(t)
    t.on_parse("", "SELECT 1")
    t.on_bind("", "", ())
    t.on_sync()
    srv("1", "2")
    assert t.portal_statement("") == ""
    srv("Z")
    assert t.portal_statement("") is None


def test_reparsed_statement_does_not_change_bound_portal(t: QueryTracker) -> None:
    # The portal was bound to the first text of the unnamed statement; a new
    # Parse (and Describe) under the same name must not relabel its rows.
    srv = Server(t)
    t.on_parse("", "SELECT ssn FROM people")
    t.on_describe("S", "")
    t.on_bind("p", "", ())
    t.on_parse("", "SELECT 'x' AS harmless")
    t.on_describe("S", "")
    t.on_execute("p")
    t.on_sync()
    srv("1", "t")
    srv.describe(field("ssn"))
    srv("2", "1", "t")
    srv.describe(field("harmless"))
    shape = t.rows_shape()
    assert names(shape) == ["ssn"]
    assert shape is not None
    assert shape.sql == "SELECT ssn FROM people"
    srv("C", "Z")


def test_reparsed_undescribed_statement_gives_no_shape(t: QueryTracker) -> None:
    srv = Server(t)
    t.on_parse("", "SELECT ssn FROM people")
    t.on_bind("p", "", ())
    t.on_parse("", "SELECT 'x' AS harmless")
    t.on_describe("S", "")
    t.on_execute("p")
    t.on_sync()
    srv("1", "2", "1", "t")
    srv.describe(field("harmless"))
    assert t.rows_shape() is None  # unknown, never the other statement's columns
    srv("C", "Z")


def test_function_call_answered_by_ready_for_query(t: QueryTracker) -> None:
    srv = Server(t)
    t.on_function_call()
    t.on_query("SELECT a")
    srv("V")
    assert [r.kind for r in t.pending] == [Pending.FUNCTION_CALL, Pending.QUERY]
    srv("Z")
    assert [r.kind for r in t.pending] == [Pending.QUERY]
    srv.describe(field("a"))
    assert names(t.rows_shape()) == ["a"]
    srv("C", "Z")
    assert not t.pending


def test_function_call_error(t: QueryTracker) -> None:
    srv = Server(t)
    t.on_function_call()
    t.on_query("SELECT a")
    srv("E")
    assert [r.kind for r in t.pending] == [Pending.FUNCTION_CALL, Pending.QUERY]
    srv("Z")
    assert [r.kind for r in t.pending] == [Pending.QUERY]


def test_server_messages_with_nothing_pending_are_harmless(t: QueryTracker) -> None:
    srv = Server(t)
    srv("1", "2", "3", "n", "t", "C", "s", "V", "E", "Z")
    srv.describe(field("x"))
    assert t.rows_shape() is None
    assert not t.pending
    t.on_query("SELECT 1")
    assert [r.kind for r in t.pending] == [Pending.QUERY]


def test_malformed_row_description_is_a_protocol_error(t: QueryTracker) -> None:
    t.on_query("SELECT 1")
    with pytest.raises(RemoteProtocolError):
        t.on_server(m.ROW_DESCRIPTION, b"\x00\x01x")
    with pytest.raises(RemoteProtocolError):
        t.on_server(m.ROW_DESCRIPTION)


def test_pending_is_bounded(t: QueryTracker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracker_module, "MAX_PENDING_REQUESTS", 5)
    for _ in range(5):
        t.on_sync()
    with pytest.raises(TooManyPendingRequests) as info:
        t.on_sync()
    # A remote protocol error for the I/O layer, and still the OverflowError it was.
    assert isinstance(info.value, RemoteProtocolError)
    assert isinstance(info.value, OverflowError)
    assert info.value.sqlstate == "54000"


def test_row_description_frame_roundtrip_used_by_helpers() -> None:
    body = row_description(field("a"))
    assert frame(b"T", body) == m.encode_row_description([field("a")])
    assert m.decode_row_description(body) == [field("a")]
