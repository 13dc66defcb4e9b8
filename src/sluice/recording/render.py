"""Render a session log on a rich console, in order, as it happened.

Everything recorded came from clients or databases, so every string is shown
as plain text (never rich markup) and control characters are made visible:
replaying a log must not let its contents drive the operator's terminal.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sluice.recording.records import (
    ApprovalRecord,
    BindRecord,
    BindValue,
    CapRecord,
    Column,
    CompleteRecord,
    CopyRecord,
    EndRecord,
    ErrorRecord,
    NoticeRecord,
    OmittedRecord,
    OmittedValue,
    Record,
    ResultRecord,
    RowsRecord,
    SealRecord,
    StartRecord,
    StatementRecord,
    VerdictRecord,
)

MAX_RENDER_ROWS: Final = 200
"""Rows shown per result table; the rest are counted (a replay is for reading)."""

MAX_COPY_LINES: Final = 200
"""Lines of COPY data shown per COPY; the rest are counted."""

MAX_CELL_CHARS: Final = 200
"""Longer cell values are cut in the table (the log keeps them whole)."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _safe(value: str) -> str:
    """Make control characters (ANSI escapes, bidi overrides...) visible."""
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


def _param(index: int, value: BindValue) -> str:
    """`$n=value` of a recorded parameter, cut like a cell."""
    if value is None:
        shown = "NULL"
    elif isinstance(value, OmittedValue):
        shown = f"<{value.size} bytes not recorded: {value.reason}>"
    elif isinstance(value, bytes):
        shown = "\\x" + value.hex()
    else:
        shown = "'" + _safe(value).replace("'", "''") + "'"
    if len(shown) > MAX_CELL_CHARS:
        shown = shown[:MAX_CELL_CHARS] + "..."
    return f"${index}={shown}"


def _cell(value: str | None) -> Text:
    if value is None:
        return Text("NULL", style="dim italic")
    shown = _safe(value)
    if len(shown) > MAX_CELL_CHARS:
        shown = shown[:MAX_CELL_CHARS] + "..."
    return Text(shown)


class _Renderer:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.columns: tuple[Column, ...] = ()
        self.rows: list[tuple[str | None, ...]] = []
        self.hidden = 0
        self.open_result = False
        self.copy_lines = 0  # of the current COPY, shown so far
        self.copy_hidden = 0

    def stamp(self, record: Record) -> Text:
        return Text(f"[+{record.t:9.3f}s] ", style="dim")

    def line(self, record: Record, *parts: tuple[str, str] | str) -> None:
        text = self.stamp(record)
        for part in parts:
            if isinstance(part, tuple):
                text.append(_safe(part[0]), style=part[1])
            else:
                text.append(_safe(part))
        self.console.print(text, soft_wrap=True)

    def flush_table(self) -> None:
        if not self.open_result:
            return
        table = Table(show_lines=False, header_style="bold")
        width = max(len(self.columns), max((len(r) for r in self.rows), default=0))
        for i in range(width):
            col = self.columns[i] if i < len(self.columns) else Column(name=f"?{i}")
            header = Text(_safe(col.name))
            if col.type:
                header.append(f" ({_safe(col.type)})", style="dim")
            table.add_column(header)
        for row in self.rows:
            cells = [_cell(v) for v in row] + [Text("")] * (width - len(row))
            table.add_row(*cells)
        if width:
            self.console.print(table)
        if self.hidden:
            self.console.print(Text(f"... {self.hidden} more rows not shown", style="dim"))
        # Columns stay: a result repeating the last columns has no result record.
        self.rows, self.hidden, self.open_result = [], 0, False

    def copy(self, record: CopyRecord) -> None:
        """COPY data, as text lines (the first MAX_COPY_LINES of each COPY)."""
        arrow = "to the client" if record.direction == "out" else "from the client"
        if record.omitted is not None:
            self.line(
                record,
                (f"COPY data {arrow} not recorded", "yellow"),
                f" ({record.size} bytes): {record.omitted}",
            )
            return
        if self.copy_lines == 0 and self.copy_hidden == 0:
            self.line(record, (f"COPY data {arrow}", "cyan"))
        lines = record.data.decode("utf-8", "replace").splitlines()
        room = max(MAX_COPY_LINES - self.copy_lines, 0)
        for text in lines[:room]:
            self.console.print(Text(_safe(text)), soft_wrap=True)
        self.copy_lines += min(len(lines), room)
        self.copy_hidden += max(len(lines) - room, 0)

    def end_copy(self) -> None:
        if self.copy_hidden:
            self.console.print(
                Text(f"... {self.copy_hidden} more lines of COPY data not shown", style="dim")
            )
        self.copy_lines = self.copy_hidden = 0

    def render(self, record: Record) -> None:
        if isinstance(record, CopyRecord):
            self.flush_table()
            self.copy(record)
            return
        self.end_copy()
        if isinstance(record, RowsRecord):
            self.open_result = True
            room = MAX_RENDER_ROWS - len(self.rows)
            self.rows.extend(record.rows[: max(room, 0)])
            self.hidden += max(len(record.rows) - max(room, 0), 0)
            return
        if isinstance(record, OmittedRecord | CapRecord):
            pass  # shown below, inside the current result
        else:
            self.flush_table()
        if isinstance(record, StartRecord):
            groups = f" ({', '.join(record.groups)})" if record.groups else ""
            self.console.print(
                Text.assemble(
                    ("Session ", "bold"),
                    (_safe(record.session_id), "bold cyan"),
                    f": {_safe(record.user)}{_safe(groups)} -> ",
                    (_safe(record.connection), "bold"),
                    f" [{_safe(record.protocol)}] from {_safe(record.client_addr)}, "
                    f"started {_safe(record.started_at)}",
                ),
                soft_wrap=True,
            )
        elif isinstance(record, StatementRecord):
            name = f" {record.statement_name}" if record.statement_name else ""
            self.line(record, (f"{record.origin}{name}> ", "bold blue"), (record.sql, "bold"))
        elif isinstance(record, BindRecord):
            name = record.statement_name or "(unnamed)"
            params = ", ".join(_param(i, v) for i, v in enumerate(record.params, 1))
            self.line(record, (f"execute {_safe(name)}", "blue"), f" {params}".rstrip())
        elif isinstance(record, VerdictRecord):
            style = {"allow": "green", "block": "bold red"}.get(record.verdict, "yellow")
            extra = ""
            if record.mask_profiles:
                extra += f" mask={','.join(record.mask_profiles)}"
            if record.approver_groups:
                extra += f" approvers={','.join(record.approver_groups)}"
            reason = f": {record.reason}" if record.reason else ""
            self.line(
                record, (record.verdict.upper(), style), f" rule={record.rule}{extra}{reason}"
            )
        elif isinstance(record, ApprovalRecord):
            actor = f" by {record.actor}" if record.actor else ""
            reason = f": {record.reason}" if record.reason else ""
            self.line(
                record,
                (f"approval {record.state}", "yellow"),
                f" {record.approval_id}{actor}{reason}",
            )
        elif isinstance(record, ResultRecord):
            self.columns = record.columns
            self.open_result = True
        elif isinstance(record, CompleteRecord):
            self.line(record, (record.tag, "green"))
        elif isinstance(record, ErrorRecord):
            self.line(
                record,
                (f"ERROR {record.sqlstate}", "bold red"),
                f" ({record.source}): {record.message}",
            )
        elif isinstance(record, NoticeRecord):
            self.line(record, (record.severity, "yellow"), f": {record.message}")
        elif isinstance(record, OmittedRecord):
            self.line(
                record, (f"{record.rows} row(s) not recorded", "yellow"), f": {record.reason}"
            )
        elif isinstance(record, CapRecord):
            self.line(
                record,
                ("size cap reached", "bold yellow"),
                f": rows and COPY data past {record.limit_bytes} bytes were not recorded",
            )
        elif isinstance(record, EndRecord):
            copied = ""
            if record.copy_bytes_recorded or record.copy_bytes_dropped:
                copied = (
                    f"{record.copy_bytes_recorded} bytes of COPY data recorded, "
                    f"{record.copy_bytes_dropped} not recorded, "
                )
            self.line(
                record,
                ("session end", "bold"),
                f": {record.reason}; {record.statements} statements, "
                f"{record.rows_recorded} rows recorded, {record.rows_dropped} not recorded, "
                f"{copied}{record.bytes_in} bytes in, {record.bytes_out} bytes out",
            )
        elif isinstance(record, SealRecord):
            self.line(record, ("sealed", "dim"), f" after {record.records} records")


def render_replay(
    console: Console,
    records: Iterable[Record],
    *,
    realtime: bool = False,
    speed: float = 1.0,
    max_gap: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print a session: statements, verdicts, result tables, errors, with offsets.

    With `realtime`, waits between records as long as the session did
    (divided by `speed`, each pause capped at `max_gap` seconds).
    """
    renderer = _Renderer(console)
    last_t: float | None = None
    for record in records:
        if realtime and last_t is not None and speed > 0:
            pause = min(max(record.t - last_t, 0.0), max_gap) / speed
            if pause > 0:
                renderer.flush_table()
                sleep(pause)
        last_t = record.t
        renderer.render(record)
    renderer.flush_table()
    renderer.end_copy()
