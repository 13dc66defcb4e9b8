"""Fast-path function calls (FunctionCall, 'F') are in the session log: the
arguments sent and the value returned, as for any statement. psql's
\\lo_import writes a file through lowrite calls and \\lo_export reads it
back through loread calls, both on the fast path."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.devservers.postgres import ThrowawayPostgres
from sluice.proxy.governance import FUNCTION_RESULT_TAG
from sluice.proxy.governance_setup import recording_store
from sluice.recording import replay, verify
from sluice.recording.records import BindRecord, CompleteRecord, RowsRecord, StatementRecord
from tests.conftest import base_config
from tests.helpers import GatewayThread, latest_session

USER = "blobber"


@pytest.fixture(scope="module")
def recorded(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    thread = GatewayThread(base_config(pg, tmp_path_factory.mktemp("fast-path"))).start()
    yield thread
    thread.stop()


def test_large_object_calls_are_recorded_both_ways(recorded: GatewayThread, tmp_path: Path) -> None:
    content = b"quarterly numbers \x00\x01\xfe and more\n" * 40
    source = tmp_path / "blob.bin"
    source.write_bytes(content)
    target = tmp_path / "copy.bin"
    script = (
        f"BEGIN;\n\\lo_import '{source}'\n\\lo_export :LASTOID '{target}'\n"
        "SELECT lo_unlink(:LASTOID);\nCOMMIT;\n"
    )
    result = subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", recorded.dsn(recorded.token(user=USER), user=USER)],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == content

    path = recording_store(recorded.config).path_for(latest_session(recorded, USER))
    report = verify(path)
    assert report.ok, report
    assert report.sealed, report
    records = list(replay(path))
    calls = [r for r in records if isinstance(r, StatementRecord) and r.origin == "function_call"]
    assert calls
    assert all(r.sql.startswith("-- fast-path function call of function oid") for r in calls)
    # What was written: the bytes arguments of the calls (lowrite's data).
    written = b"".join(
        value
        for r in records
        if isinstance(r, BindRecord) and r.statement_name is None and r.portal is None
        for value in r.params
        if isinstance(value, bytes) and len(value) > 4
    )
    assert written == content
    # What was read: each call's value, a one-row result tagged FUNCTION CALL.
    results = [
        (rows, done)
        for rows, done in itertools.pairwise(records)
        if isinstance(rows, RowsRecord)
        and isinstance(done, CompleteRecord)
        and done.tag == FUNCTION_RESULT_TAG
    ]
    assert len(results) == len(calls)  # each call answers with one value
    read = b"".join(
        bytes.fromhex(value[2:])
        for rows, _ in results
        for (value,) in rows.rows
        if value is not None and value.startswith("\\x") and len(value) > 10
    )
    assert read == content
