import re
from collections.abc import Callable, Sequence
from typing import Any

_Raw = tuple[int, int, str]

class Collector:
    def __init__(self, n: int, use_end: bool = False, /) -> None: ...
    def __call__(self, idx: int, start: int, end: int, flags: int, ctx: object, /) -> None: ...
    def __len__(self) -> int: ...

def validate(
    collector: Collector,
    buf: bytes,
    fast: Sequence[
        tuple[
            Callable[[bytes, int], re.Match[bytes] | None],
            tuple[str, ...],
            bool,
            tuple[tuple[str, Callable[[bytes, bytes], bool]], ...],
            Any,
            bytes | None,
        ]
    ],
    window: Callable[[Any, bytes, int, list[_Raw]], None],
    out: list[_Raw],
    context_bytes: int,
    /,
) -> None: ...
def rows_holding(collector: Collector, starts: list[int], /) -> list[int]: ...
def place(
    raw: list[_Raw],
    values: Sequence[bytes],
    prio: dict[str, int],
    secret_priority: int,
    finding: type[Any],
    across: Callable[..., None],
    /,
) -> dict[int, list[Any]]: ...

class FastValidator:
    def __init__(
        self, kind: str, reference: Callable[[bytes, bytes], bool], data: object = None, /
    ) -> None: ...
    def __call__(self, value: bytes, before: bytes, /) -> bool: ...
