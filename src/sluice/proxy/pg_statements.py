"""The backend's prepared statements, as its answers show them.

A statement name means what the *server* holds under it, which is not always
what the client last sent: a Parse or PREPARE of a name that exists fails
(`42P05`), a DEALLOCATE of a missing name fails, and after any error the
server skips the rest of the batch (to the next Sync, or the rest of a simple
Query). PREPARE and DEALLOCATE are not transactional: they take effect when
they succeed, even in a transaction that is then rolled back.

`BackendStatements` keeps the texts the server confirmed, and the changes
sent but not answered yet. Its mapping is the prediction for the next message
(every change in flight run as the server would run it, a failing one
skipping the rest of its batch); answers settle the changes, and where an
answer differs from the prediction the prediction is made again.

A message may still meet another text than predicted: when an earlier batch
is unanswered, each of its changes may or may not have taken effect.
`ambiguous` tells when the texts a name may hold differ; the session then
refuses to judge what runs it (the policy would judge one text while the
server runs another).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from typing import Final, TypeVar, overload

from sluice.policy.prepared import MAX_PREPARED_STATEMENTS, mentions_prepared
from sluice.policy.sql import Deallocate, Execute, Prepare, classify
from sluice.protocols.postgres.errors import TooManyPendingRequests

MAX_CHANGES_IN_FLIGHT = 100_000
"""Changes awaiting the server's answer; past this the session ends with a
protocol error, as for too many pipelined requests. (Not `Final`: compiled,
a Final is copied into the code, and tests lower this one.)"""

MAX_EXECUTE_DEPTH: Final = 8
"""How deep `ambiguous_in` follows a prepared `EXECUTE` of another statement."""

_ABSENT: Final = None
_UNKNOWN: Final = "\x00"
"""What the unnamed statement holds after a Parse of it failed or was skipped:
a text the server may still hold, or none. No SQL text contains a NUL."""


_T = TypeVar("_T")


class Change:
    """One sent change to the statement names: a Parse/PREPARE, a Close/
    DEALLOCATE, or forgetting all of them (DEALLOCATE ALL, DISCARD ALL)."""

    __slots__ = (
        "batch",
        "exclusive",
        "index",
        "name",
        "owner",
        "predicted",
        "required",
        "text",
    )

    def __init__(
        self,
        owner: BackendStatements,
        *,
        batch: int,
        name: str | None,
        text: str | None,
        exclusive: bool = False,
        required: bool = False,
        index: int = 0,
    ) -> None:
        self.batch = batch  # the Sync (or simple Query) it belongs to
        self.name = name  # None: every name
        self.text = text  # None: the name is removed
        self.exclusive = exclusive  # fails when the name exists (named Parse, PREPARE)
        self.required = required  # fails when the name is missing (SQL DEALLOCATE)
        self.index = index  # its statement's position in a simple Query
        self.predicted = True
        self.owner = owner

    def settle(self, applied: bool) -> None:
        """The server ran it (`applied`), or failed or skipped it."""
        self.owner.settle(self, applied)

    def applied_to(self, current: str | None) -> tuple[bool, str | None]:
        """(succeeds, the name's text after it) for a name now holding `current`."""
        if self.text is None:
            return (current is not None or not self.required), _ABSENT
        if self.exclusive and current is not None:
            return False, current
        return True, self.text

    def touches(self, name: str) -> bool:
        return self.name is None or self.name == name


class BackendStatements(Mapping[str, str]):
    """Statement name -> SQL text the next message will meet (see module doc).

    With `answered=False` no answers will come (a session that does not
    follow the server's responses): changes are taken as predicted at once.
    """

    __slots__ = (
        "_answered",
        "_confirmed",
        "_failed_batch",
        "_in_flight",
        "_unnamed_unknown",
        "_view",
    )

    def __init__(self, *, answered: bool = True) -> None:
        self._answered = answered
        self._confirmed: dict[str, str] = {}
        self._view: dict[str, str] = {}
        self._in_flight: deque[Change] = deque()
        # The batch an answer showed failing: the server skips what of it is
        # still in flight (batches are numbered from 0).
        self._failed_batch = -1
        # A Parse of the unnamed statement failed or was skipped: what the
        # server holds under "" is unknown until a change of it runs.
        self._unnamed_unknown = False

    # Mapping: the prediction

    def __getitem__(self, name: str) -> str:
        return self._view[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._view)

    def __len__(self) -> int:
        return len(self._view)

    def __contains__(self, name: object) -> bool:
        return name in self._view

    @overload
    def get(self, name: str, /) -> str | None: ...

    @overload
    def get(self, name: str, /, default: _T) -> str | _T: ...

    def get(self, name: str, /, default: object = None) -> object:
        """`Mapping.get`, compiled: the inherited one runs interpreted."""
        return self._view.get(name, default)

    def text(self, name: str) -> str | None:
        """The text the next message meets under `name`, or None."""
        return self._view.get(name)

    # Changes sent

    def parse(self, name: str, sql: str, batch: int) -> Change:
        """A protocol Parse (the unnamed statement is replaced; a named one must be new)."""
        return self._sent(Change(self, batch=batch, name=name, text=sql, exclusive=bool(name)))

    def close(self, name: str, batch: int) -> Change:
        """A protocol Close of a statement (no error when the name is missing)."""
        return self._sent(Change(self, batch=batch, name=name, text=None))

    def query(self, sql: str, batch: int) -> tuple[Change, ...]:
        """The PREPARE / DEALLOCATE [ALL] / DISCARD ALL statements of `sql`, in order."""
        if not mentions_prepared(sql):
            return ()
        changes = []
        for index, statement in enumerate(classify(sql).statements):
            effect = statement.effect
            if isinstance(effect, Prepare):
                change = Change(
                    self,
                    batch=batch,
                    name=effect.name,
                    text=statement.text,
                    exclusive=True,
                    index=index,
                )
            elif isinstance(effect, Deallocate):
                change = Change(
                    self,
                    batch=batch,
                    name=effect.name,
                    text=None,
                    required=effect.name is not None,
                    index=index,
                )
            else:
                continue
            changes.append(self._sent(change))
        return tuple(changes)

    def _sent(self, change: Change) -> Change:
        if not self._answered:
            # No answers and no Closes seen (the light path): the last text
            # sent under a name is taken to be the one it holds.
            change.exclusive = change.required = False
        failed_batch = self._batch_failed(change.batch)
        change.predicted = not failed_batch and self._apply(self._view, change)
        self._view = self._bounded(self._view)
        if self._answered:
            if len(self._in_flight) >= MAX_CHANGES_IN_FLIGHT:
                raise TooManyPendingRequests(
                    "too many prepared-statement changes awaiting the server's answers"
                )
            self._in_flight.append(change)
        else:
            self._confirmed = self._view
        return change

    def _batch_failed(self, batch: int) -> bool:
        """Whether a change of `batch` already sent failed or is predicted to
        fail (the server then skips the rest of that batch)."""
        if batch == self._failed_batch:
            return True
        for change in reversed(self._in_flight):
            if change.batch != batch:
                return False
            if not change.predicted:
                return True
        return False

    # Answers

    def settle(self, change: Change, applied: bool) -> None:
        """The server ran `change` (`applied`) or failed or skipped it."""
        try:
            if self._in_flight and self._in_flight[0] is change:
                self._in_flight.popleft()
            else:
                self._in_flight.remove(change)
        except ValueError:
            return  # settled already
        # A failed Parse drops the unnamed statement (a skipped one does not;
        # it is forgotten either way, so a Bind of it is refused).
        forgotten = not applied and change.name == "" and change.text is not None
        if applied:
            self._apply(self._confirmed, change)
            self._confirmed = self._bounded(self._confirmed)
            if change.touches(""):
                self._unnamed_unknown = False
        else:
            self._failed_batch = change.batch
            if forgotten:
                self._confirmed.pop("", None)
                self._unnamed_unknown = True
        if applied != change.predicted or forgotten:
            self._predict()
        # Otherwise the prediction stands: the view already holds what ran.

    def _predict(self) -> None:
        view = dict(self._confirmed)
        failed = self._failed_batch
        for change in self._in_flight:
            change.predicted = change.batch != failed and self._apply(view, change)
            if not change.predicted:
                failed = change.batch
        self._view = self._bounded(view)

    @staticmethod
    def _apply(texts: dict[str, str], change: Change) -> bool:
        if change.name is None:
            texts.clear()
            return True
        succeeds, text = change.applied_to(texts.get(change.name))
        if succeeds:
            if text is None:
                texts.pop(change.name, None)
            else:
                texts[change.name] = text
        return succeeds

    @staticmethod
    def _bounded(texts: dict[str, str]) -> dict[str, str]:
        while len(texts) > MAX_PREPARED_STATEMENTS:
            del texts[next(iter(texts))]  # the oldest: its EXECUTE is then refused
        return texts

    # What a message may meet

    def ambiguous(self, name: str, batch: int) -> bool:
        """Whether a message of `batch` may meet another text under `name` than
        the prediction: more than one, or one other.

        Each change of an earlier, unanswered batch may or may not have run;
        the changes of `batch` itself ran (or the message is skipped).
        """
        if not self._in_flight or self._in_flight[0].batch >= batch:
            return False
        unknown = name == "" and self._unnamed_unknown
        states: set[str | None] = {_UNKNOWN if unknown else self._confirmed.get(name)}
        for change in self._in_flight:
            if not change.touches(name):
                continue
            outcomes: set[str | None] = set()
            for state in states:
                succeeds, after = change.applied_to(state)
                if change.batch < batch:
                    outcomes.add(state)  # it may have failed, or been skipped
                if succeeds:
                    outcomes.add(after)
                # A change of `batch` itself that fails skips the message.
            states = outcomes
        present = states - {_ABSENT}
        if _UNKNOWN in present:
            return True  # a text the gateway never saw confirmed may run
        # One text may run, but not the one predicted: the prediction has the
        # earlier batch succeed, which would make this message's batch fail.
        return len(present) > 1 or (bool(present) and present != {self._view.get(name)})

    def ambiguous_in(self, sql: str, batch: int, depth: int = 0) -> str | None:
        """A statement name `sql` EXECUTEs (directly or through the texts it
        runs) that is `ambiguous` for `batch`, or None."""
        if not self._in_flight or self._in_flight[0].batch >= batch or not mentions_prepared(sql):
            return None
        for statement in classify(sql).statements:
            effect = statement.effect
            if not isinstance(effect, Execute):
                continue
            if self.ambiguous(effect.name, batch):
                return effect.name
            inner = self.text(effect.name)
            if inner is not None and depth < MAX_EXECUTE_DEPTH:
                found = self.ambiguous_in(inner, batch, depth + 1)
                if found is not None:
                    return found
        return None
