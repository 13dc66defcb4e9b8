"""Per-session memory of prepared statements.

PostgreSQL keeps protocol-level (Parse) and SQL-level (PREPARE) statements in
one namespace, so one map serves both. The I/O layer mutates it as the session
runs; the decision function only reads it (it is a `Mapping`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Final, TypeVar, overload

from sluice.policy.sql import Deallocate, Prepare, classify

MAX_PREPARED_STATEMENTS: Final = 10_000
"""Per-session bound on remembered statements; the oldest is forgotten first,
and EXECUTE of a forgotten statement is blocked (fail closed)."""


_T = TypeVar("_T")


class PreparedStatements(Mapping[str, str]):
    """Statement name -> SQL text. The unnamed protocol statement is ``""``.

    For SQL PREPARE the stored text is the whole ``PREPARE name AS ...``
    statement, which classifies as the statement it prepares.
    """

    __slots__ = ("_texts",)

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        return self._texts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)

    @overload
    def get(self, name: str, /) -> str | None: ...

    @overload
    def get(self, name: str, /, default: _T) -> str | _T: ...

    def get(self, name: str, /, default: object = None) -> object:
        """`Mapping.get`, compiled: the inherited one runs interpreted (once per execution)."""
        return self._texts.get(name, default)

    def parse(self, name: str, sql: str) -> None:
        """Protocol Parse: remember `sql` under `name` (replacing the unnamed one)."""
        self._texts.pop(name, None)
        self._texts[name] = sql
        while len(self._texts) > MAX_PREPARED_STATEMENTS:
            del self._texts[next(iter(self._texts))]

    def close(self, name: str) -> None:
        """Protocol Close of a statement."""
        self._texts.pop(name, None)

    def clear(self) -> None:
        self._texts.clear()

    def observe(self, sql: str) -> None:
        """Apply the PREPARE / DEALLOCATE [ALL] / DISCARD ALL statements of `sql`,
        in order. Call it once the query string was allowed and sent upstream."""
        for statement in classify(sql).statements:
            effect = statement.effect
            if isinstance(effect, Prepare):
                self.parse(effect.name, statement.text)
            elif isinstance(effect, Deallocate):
                if effect.name is None:
                    self.clear()
                else:
                    self.close(effect.name)


_SESSION_WORDS: Final = ("prepare", "execute", "deallocate", "discard")
_SESSION_WORDS_RE: Final = re.compile("|".join(_SESSION_WORDS), re.IGNORECASE)


def py_mentions_any(sql: str, words: tuple[str, ...]) -> bool | None:
    """Whether ASCII `sql` holds one of the lower-case `words` in any letter
    case; None when `sql` is not ASCII (Unicode case folding can spell ASCII
    letters with others: `\u212a` is a K), and the caller asks its regex."""
    if not sql.isascii():
        return None
    low = sql.lower()
    return any(word in low for word in words)


def _compiled_mentions_any() -> Callable[[str, tuple[str, ...]], bool | None]:
    try:  # compiled when a compiler was there at install; same answers (tests/policy)
        from sluice.policy._sqlkey import mentions_any as compiled
    except ImportError:
        return py_mentions_any
    return compiled


# Final: compiled, a static, where a module global is a dict lookup per call.
mentions_any: Final = _compiled_mentions_any()


def mentions_words(sql: str, words: tuple[str, ...], pattern: re.Pattern[str]) -> bool:
    """Whether `sql` holds any of `words` (lower case), in any letter case.

    `pattern` is the words' case-insensitive regex, asked only of texts
    that are not ASCII.
    """
    found = mentions_any(sql, words)
    if found is not None:  # the usual case: plain substring tests, same answer as the regex
        return found
    return pattern.search(sql) is not None


def mentions_prepared(sql: str) -> bool:
    """Whether `sql` may hold PREPARE, EXECUTE, DEALLOCATE or DISCARD.

    Keywords cannot be escaped or quoted into existence, so a text without
    these words holds none of those statements: a cheap pre-filter.
    """
    return mentions_words(sql, _SESSION_WORDS, _SESSION_WORDS_RE)


# search_path may be spelled in a Unicode-escaped identifier (U&"..."), and
# set_config's setting name is a string that may be escaped or computed: any
# of these words sends the text to the parser.
_SEARCH_PATH_WORDS: Final = ("search_path", "set_config", "u&")
_SEARCH_PATH_WORDS_RE: Final = re.compile("|".join(_SEARCH_PATH_WORDS), re.IGNORECASE)


def changes_search_path(sql: str) -> bool:
    """Whether `sql` may change the session's search_path (SET, RESET,
    set_config, or a procedural block that mentions it)."""
    if not mentions_words(sql, _SEARCH_PATH_WORDS, _SEARCH_PATH_WORDS_RE):
        return False
    return any(statement.changes_search_path for statement in classify(sql).statements)
