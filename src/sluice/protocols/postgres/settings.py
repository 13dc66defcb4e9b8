"""The settings a startup packet asks the server to apply.

PostgreSQL takes every startup parameter but `user`, `database`,
`replication` and `options` as a setting (`search_path=billing`,
`role=admin`), and `options` as command-line switches: `-c name=value` or
`--name=value` for a setting, and a few single-letter switches that set
others. A gateway that judges `SET` must judge these too: they take effect
before the first statement.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

NOT_SETTINGS = frozenset({"user", "database", "replication", "options"})

_SIMPLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?")


class UnreadableOptions(ValueError):
    """`options` holds a switch other than a setting (`-c`, `--`)."""


def split_options(options: str) -> list[str]:
    """`options` split as the server splits it: at whitespace, where a
    backslash makes the next character (a space, a backslash) plain."""
    words: list[str] = []
    current: list[str] = []
    in_word = False
    escaped = False
    for char in options:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = in_word = True
        elif char.isspace():
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            current.append(char)
            in_word = True
    if escaped:
        raise UnreadableOptions("options end in a lone backslash")
    if in_word:
        words.append("".join(current))
    return words


def _long_option(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise UnreadableOptions(f"-c {text!r} is not name=value")
    return name.replace("-", "_"), value


def startup_settings(parameters: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, value) of each setting the startup applies, in order.

    Raises UnreadableOptions for an `options` switch that is not a setting
    (`-B`, `-d`, `-O`, ...): which settings those change is the server's to
    say, so such a startup cannot be judged.
    """
    settings = [(k, v) for k, v in parameters.items() if k not in NOT_SETTINGS]
    words = iter(split_options(parameters.get("options", "")))
    for word in words:
        if word.startswith("--"):
            settings.append(_long_option(word[2:]))
        elif word == "-c":
            following = next(words, None)
            if following is None:
                raise UnreadableOptions("-c without name=value")
            settings.append(_long_option(following))
        elif word.startswith("-c"):
            settings.append(_long_option(word[2:]))
        else:
            raise UnreadableOptions(f"the switch {word!r} is not -c name=value")
    return settings


def as_set_statement(name: str, value: str) -> str:
    """`SET name = 'value'`: what the setting amounts to, for a policy to judge."""
    shown = name if _SIMPLE_NAME.fullmatch(name) else '"' + name.replace('"', '""') + '"'
    return f"SET {shown} = '" + value.replace("'", "''") + "'"
