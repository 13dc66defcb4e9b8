"""Shared helpers for the recording tests (a plain module: no conftest clashes)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from sluice.events import Identity, Protocol, SessionContext
from sluice.policy.verdict import Allow, Block, MaskPlan
from sluice.recording import Recorder, RecordingSpec, RecordingStore
from sluice.recording.format import Chain, ChainHash, MacAlgorithm, encode_record

KEY = b"0123456789abcdef0123456789abcdef"


def context(session_id: str = "sess-1") -> SessionContext:
    return SessionContext(
        session_id=session_id,
        identity=Identity(user="alice", groups=("dba", "oncall"), token_id="tok-1"),
        connection="prod-db",
        protocol=Protocol.POSTGRES,
        client_addr="10.0.0.7:51234",
    )


class FakeClock:
    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> float:
        return 100.0 + next(self._ticks) * 0.25


def store(tmp_path: Path, *, key: bytes | None = None, **spec: Any) -> RecordingStore:
    return RecordingStore(
        RecordingSpec(dir=tmp_path / "rec", **spec), hmac_key=key, clock=FakeClock()
    )


def write_session(rec: Recorder) -> None:
    """A typical session: start, 13 records, end and seal (16 records, seq 0..15)."""
    rec.statement("SELECT id, email FROM users", origin="simple")  # 1
    rec.verdict(Allow(rule="read-only", mask=MaskPlan(rule="pii", profiles=("email",))))  # 2
    rec.columns(["id", "email"], ["int4", "text"])  # 3
    rec.rows(["id", "email"], [["1", "a***@example.com"], ["2", None]])  # 4
    rec.complete("SELECT 2")  # 5
    rec.statement("DROP TABLE users", origin="simple")  # 6
    rec.verdict(Block(rule="no-ddl", reason="DDL is not allowed"))  # 7
    rec.error(sqlstate="42501", message="blocked by rule no-ddl", source="gateway")  # 8
    rec.statement("UPDATE users SET x = 1", origin="parse", statement_name="s1")  # 9
    rec.approval(state="requested", approval_id="ap-1")  # 10
    rec.approval(state="approved", approval_id="ap-1", actor="bob")  # 11
    rec.notice("table rewritten", severity="WARNING")  # 12
    rec.complete("UPDATE 1")  # 13
    rec.end(reason="client closed", bytes_in=123, bytes_out=456)  # 14 end, 15 seal (0 is start)


def make_log(
    tmp_path: Path, *, key: bytes | None = None, hash: ChainHash = ChainHash.SHA256_BLAKE3
) -> Path:
    st = store(tmp_path, key=key, hash=hash)
    rec = st.open(context())
    write_session(rec)
    return rec.path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def rechain(
    objs: list[dict[str, Any]], key: bytes | None = None, hash: ChainHash | None = None
) -> bytes:
    """What a forger does: rewrite records and recompute every link and digest
    (with the hash the start record names, unless `hash` is given)."""
    chain = Chain(key, MacAlgorithm(objs[0]["mac"]).hash if hash is None else hash)
    prev = chain.genesis(objs[0]["session_id"], objs[0]["started_at"])
    out = b""
    for seq, obj in enumerate(objs):
        body = {k: v for k, v in obj.items() if k != "h"}
        body["seq"], body["prev"] = seq, prev
        if body["kind"] == "seal":
            body["records"], body["bytes"] = seq, len(out)
        line, prev = encode_record(body, chain)
        out += line
    return out


def parse(path: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in lines(path)]
