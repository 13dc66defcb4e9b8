"""BackendStatements against a model of the server's statement names.

The server side here runs PostgreSQL's rules: a named Parse or PREPARE of a
name that exists fails, a Close of a missing name does not, DEALLOCATE of a
missing name fails, the unnamed statement is replaced, and after a failure
the rest of the batch is skipped. Any message may also fail for reasons of
its own (a syntax error, a lost lock). Whatever the client pipelines, a Bind
that is not `ambiguous` must run the text the gateway predicted.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.proxy.pg_statements import BackendStatements, Change

NAMES = ("", "a", "b")


@dataclass
class Op:
    verb: str  # parse, close, deallocate, bind
    name: str
    text: str = ""
    fails: bool = False  # fails on the server for a reason of its own


ops = st.builds(
    Op,
    verb=st.sampled_from(("parse", "close", "deallocate", "bind")),
    name=st.sampled_from(NAMES),
    text=st.sampled_from(("SELECT 1", "SELECT 2", "SELECT 3")),
    fails=st.sampled_from((False, False, False, True)),
)
batches = st.lists(
    st.tuples(st.lists(ops, min_size=1, max_size=4), st.booleans()), min_size=1, max_size=8
)


@dataclass
class Sent:
    op: Op
    change: Change | None = None
    predicted: str | None = None
    ambiguous: bool = False


def _send(statements: BackendStatements, op: Op, batch: int) -> Sent:
    if op.verb == "parse":
        return Sent(op, statements.parse(op.name, op.text, batch))
    if op.verb == "close":
        return Sent(op, statements.close(op.name, batch))
    if op.verb == "deallocate":
        op.name = op.name or "a"  # the unnamed statement has no SQL name
        (change,) = statements.query(f"DEALLOCATE {op.name}", batch)
        return Sent(op, change)
    return Sent(op, None, statements.get(op.name), statements.ambiguous(op.name, batch))


def _serve(server: dict[str, str], batch: list[Sent]) -> None:
    """Run one batch as PostgreSQL would, settling each change."""
    failed = False
    for sent in batch:
        op = sent.op
        ran = False
        if failed:
            pass  # skipped: the batch failed before it
        elif op.verb == "parse":
            if not op.name:
                server.pop("", None)  # dropped before the new one is parsed
            ran = not op.fails and not (op.name and op.name in server)
            if ran:
                server[op.name] = op.text
        elif op.fails:
            pass
        elif op.verb == "close":
            server.pop(op.name, None)
            ran = True
        elif op.verb == "deallocate":
            ran = server.pop(op.name, None) is not None
        elif sent.predicted is not None:  # else the gateway refused it (unknown)
            ran = op.name in server
            if ran and not sent.ambiguous:
                assert server[op.name] == sent.predicted, (op, server)
        failed = failed or not ran
        if sent.change is not None:
            sent.change.settle(ran)


# At 400 examples a run rarely met the skipped Parse of the unnamed statement
# that c7d7448 fixed; 1,500 take about 4 s.
@settings(max_examples=1500, deadline=None)
@given(batches)
def test_what_a_bind_meets_is_what_was_predicted(plan: list[tuple[list[Op], bool]]) -> None:
    statements = BackendStatements()
    server: dict[str, str] = {}
    unanswered: list[list[Sent]] = []
    for number, (batch_ops, answer_first) in enumerate(plan):
        if answer_first:
            for batch in unanswered:
                _serve(server, batch)
            unanswered.clear()
        unanswered.append([_send(statements, op, number) for op in batch_ops])
    for batch in unanswered:
        _serve(server, batch)
    # Every answer is in: the prediction is the server's state, except that
    # an unnamed statement whose Parse failed or was skipped is unknown.
    known = dict(statements)
    if "" not in known:
        server.pop("", None)
    assert known == server


def test_a_duplicate_name_keeps_its_text() -> None:
    statements = BackendStatements()
    statements.parse("s", "SELECT 1", 0).settle(True)
    change = statements.parse("s", "SELECT 2", 1)
    assert not change.predicted
    assert statements["s"] == "SELECT 1"
    change.settle(False)
    assert statements["s"] == "SELECT 1"


def test_a_failure_skips_the_rest_of_its_batch() -> None:
    statements = BackendStatements()
    statements.parse("s", "SELECT 1", 0).settle(True)
    statements.parse("s", "SELECT 2", 1)  # fails: s exists
    close = statements.close("s", 1)  # skipped with it
    assert not close.predicted
    assert statements["s"] == "SELECT 1"


def test_an_unexpected_answer_redoes_the_prediction() -> None:
    statements = BackendStatements()
    first = statements.parse("s", "SELECT 1", 0)
    second = statements.parse("s", "SELECT 2", 1)
    assert not second.predicted  # a duplicate, if the first runs
    first.settle(False)  # it did not (a syntax error, say)
    assert second.predicted
    assert statements["s"] == "SELECT 2"
    second.settle(True)
    assert statements["s"] == "SELECT 2"


def test_without_answers_the_last_text_sent_counts() -> None:
    statements = BackendStatements(answered=False)
    statements.parse("s", "SELECT 1", 0)
    statements.parse("s", "SELECT 2", 1)
    assert statements["s"] == "SELECT 2"
    statements.query("DEALLOCATE ALL", 2)
    assert len(statements) == 0


def test_deallocate_all_and_discard_all_forget_every_name() -> None:
    statements = BackendStatements()
    statements.parse("a", "SELECT 1", 0).settle(True)
    statements.query("PREPARE b AS SELECT 2", 1)[0].settle(True)
    (discard,) = statements.query("DISCARD ALL", 2)
    assert len(statements) == 0
    discard.settle(True)
    assert len(statements) == 0


def test_ambiguity_is_another_text_than_the_prediction() -> None:
    statements = BackendStatements()
    statements.parse("s", "SELECT 1", 0).settle(True)
    statements.close("s", 1)
    # SELECT 1 if the Close was skipped, where the prediction has nothing.
    assert statements.ambiguous("s", 2)
    statements.parse("s", "SELECT 2", 2)
    assert not statements.ambiguous("s", 2)  # after its own batch's Parse: SELECT 2
    assert statements.ambiguous("s", 3)  # SELECT 1 (Close skipped) or SELECT 2
    assert statements.ambiguous_in("EXECUTE s", 3) == "s"
    assert statements.ambiguous_in("SELECT 1", 3) is None


def test_an_unnamed_statement_whose_parse_was_skipped_is_unknown_not_absent() -> None:
    """Parse "" (SELECT 2) runs, a Parse that fails on the server skips the
    batch's Parse "" (SELECT 1): the server still holds SELECT 2. A later
    batch's Parse "" may be skipped too, so a Bind of "" behind it may meet
    SELECT 2, which the gateway never saw confirmed: ambiguous."""
    statements = BackendStatements()
    kept = statements.parse("", "SELECT 2", 0)
    failing = statements.parse("a", "SELECT 1", 0)
    skipped = statements.parse("", "SELECT 1", 0)
    kept.settle(True)
    failing.settle(False)
    assert not skipped.predicted  # the rest of a failed batch is skipped
    assert "" not in statements or statements[""] == "SELECT 2"
    skipped.settle(False)
    assert "" not in statements  # forgotten: a Bind of it now is refused
    statements.parse("", "SELECT 1", 1)  # may be skipped in its turn
    assert statements[""] == "SELECT 1"
    assert statements.ambiguous("", 2)
    assert not statements.ambiguous("", 1)  # its own batch: it ran, or the Bind is skipped


def test_a_change_sent_after_its_batch_failed_is_predicted_to_fail() -> None:
    statements = BackendStatements()
    statements.parse("a", "SELECT 1", 0).settle(False)  # the batch fails here
    late = statements.parse("b", "SELECT 2", 0)  # sent before the Sync: skipped
    assert not late.predicted
    assert "b" not in statements
    assert statements.parse("b", "SELECT 3", 1).predicted  # the next batch runs
