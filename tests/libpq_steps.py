"""Run protocol steps through libpq, one JSON line per result: a separate
process, since blocking libpq calls would hold up a gateway in this one.

    python -m tests.libpq_steps DSN "sql:SELECT 1" "parse:s1:SELECT 2" "bind:s1"

`sql:` runs a simple Query; `parse:NAME:SQL` a Parse (PQprepare); `bind:NAME`
a Bind, Describe and Execute of statement NAME (PQsendQueryPrepared).
"""

from __future__ import annotations

import json
import sys

from psycopg import pq
from psycopg.pq.abc import PGresult


def _report(step: str, result: PGresult) -> None:
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
    print(
        json.dumps(
            {
                "step": step,
                "ok": pq.ExecStatus(result.status)
                in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK),
                "tag": (result.command_status or b"").decode(),
                "sqlstate": sqlstate.decode() if sqlstate else None,
                "message": result.error_message.decode().strip(),
            }
        ),
        flush=True,
    )


def main(dsn: str, steps: list[str]) -> int:
    conn = pq.PGconn.connect(dsn.encode())
    if conn.status != pq.ConnStatus.OK:
        print(conn.error_message.decode(), file=sys.stderr)
        return 1
    for step in steps:
        verb, _, rest = step.partition(":")
        if verb == "sql":
            _report(step, conn.exec_(rest.encode()))
        elif verb == "parse":
            name, _, sql = rest.partition(":")
            _report(step, conn.prepare(name.encode(), sql.encode()))
        elif verb == "bind":
            conn.send_query_prepared(rest.encode(), None)
            while (result := conn.get_result()) is not None:
                _report(step, result)
        else:
            print(f"unknown step {step!r}", file=sys.stderr)
            return 2
    conn.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
