"""Cache keys of statement texts, asked once per statement.

Compiled with the hot path (`sluice._compiled`): kept out of `sql`, whose
parser runs interpreted, so that a plain text's keys cost no interpreted call.
"""

from __future__ import annotations

from sluice.policy.sql import lexed_keys, literal_key, plain_numbers_zeroed

TextKeys = tuple[tuple[str, str], tuple[str, str] | None]
"""(kind, text) keys of a statement text; see `text_keys`."""


def text_keys(sql: str) -> TextKeys | None:
    """Cache keys of `sql`, each (kind, text); kinds keep keys of different
    making apart. None when the text cannot be scanned.

    The first maps only texts that differ in numbers (the plain-text one
    needs no lexer; a text with standard literals only is its own key). The
    second, for texts with string literals, maps texts that differ in
    numbers and literals: only what reads no literal's value may be shared
    under it (`StatementInfo.literal_blind`, column lineage).
    """
    text = plain_numbers_zeroed(sql)
    if text is not None:
        return ("plain", text), None
    blanked = literal_key(sql)  # without the lexer
    if blanked is not None:
        return ("text", sql), ("literals", blanked)
    keys = lexed_keys(sql)
    if keys is None:
        return None
    numbers, literals = keys
    return ("lexed", numbers), None if literals is None else ("lexed-literals", literals)
