"""Inline masking through the gateway: no original sensitive value reaches the client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest
import yaml

from sluice.devservers.postgres import ThrowawayPostgres
from sluice.proxy.governance import SHOWN_PARSED_CHARS
from tests.conftest import APP_PASSWORD, base_config
from tests.helpers import GatewayThread

# Realistic PII; each value must never be seen by the client.
PEOPLE = [
    (
        "Maria Lopez",
        "maria.lopez@example.org",
        "+1 415-555-0132",
        "123-45-6789",
        "4111 1111 1111 1111",
        "GB82WEST12345698765432",
        "10.12.4.7",
    ),
    (
        "Jon Fischer",
        "j.fischer@mailbox.de",
        "+49 30 901820",
        "219-09-9999",
        "5500-0000-0000-0004",
        "DE89370400440532013000",
        "192.168.77.10",
    ),
    (
        "Aiko Tanaka",
        "aiko.tanaka@corp.jp",
        "(212) 555-0187",
        "078-05-1120",
        "340000000000009",
        "FR1420041010050500013M02606",
        "172.20.1.99",
    ),
]
SECRETS = ["AKIAIOSFODNN7EXAMPLE", "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"]
SENSITIVE = [v for person in PEOPLE for v in person[1:]] + SECRETS

PROFILES = {
    "profiles": [
        {
            "name": "pii",
            "content": True,
            "detectors": ["all"],
            "columns": [
                {"match": "public.people.ssn", "strategy": "partial", "keep_last": 4},
                {"match": "*card*", "strategy": "redact"},
            ],
        },
    ]
}


@pytest.fixture(scope="module", autouse=True)
def people(pg: ThrowawayPostgres) -> None:
    dsn = pg.dsn(user="app", password=APP_PASSWORD, dbname="app")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS people CASCADE")
        conn.execute(
            "CREATE TABLE people (id int PRIMARY KEY, name text, email text, phone text, "
            "ssn text, card_number text, iban text, ip inet, notes text, balance int, "
            "profile jsonb)"
        )
        for i, (name, email, phone, ssn, card, iban, ip) in enumerate(PEOPLE, 1):
            conn.execute(
                "INSERT INTO people VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    i,
                    name,
                    email,
                    phone,
                    ssn,
                    card,
                    iban,
                    ip,
                    f"call {phone} or write {email}; key {SECRETS[i % 2]}",
                    i * 100,
                    json.dumps({"contact": {"email": email, "tier": "gold"}, "id": i}),
                ),
            )
        conn.execute("CREATE VIEW people_view AS SELECT id, ssn AS tax_id FROM people")


@pytest.fixture(scope="module")
def masked(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    data_dir = tmp_path_factory.mktemp("masked")
    config = base_config(pg, data_dir, masking=("pii",))
    raw = config.model_dump(mode="json")
    raw["masking"] = PROFILES
    (data_dir / "sluice.yaml").write_text(yaml.safe_dump(raw))
    thread = GatewayThread(type(config).model_validate(raw)).start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def token(masked: GatewayThread) -> str:
    return masked.token()


def assert_clean(text: str) -> None:
    leaked = [value for value in SENSITIVE if value in text]
    assert not leaked, f"sensitive values reached the client: {leaked}"


def psql(
    masked: GatewayThread, token: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", "-X", masked.dsn(token), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )


QUERIES = {
    "plain": "SELECT * FROM people ORDER BY id",
    "aliases": "SELECT email AS contact, ssn AS x, card_number AS c FROM people",
    "expressions": "SELECT upper(email), substr(ssn, 1, 11), 'ssn:' || ssn, "
    "encode(convert_to(card_number, 'UTF8'), 'base64') FROM people",
    "json-and-aggregates": "SELECT json_agg(p), string_agg(ssn, ','), "
    "jsonb_build_object('s', max(ssn)) FROM people p",
    "cte-and-subquery": "WITH c AS (SELECT ssn AS s FROM people) "
    "SELECT (SELECT max(s) FROM c), s FROM c",
    "view": "SELECT tax_id FROM people_view",
    "free-text": "SELECT notes, profile FROM people",
    "union": "SELECT ssn FROM people UNION ALL SELECT card_number FROM people",
}


@pytest.mark.parametrize("sql", QUERIES.values(), ids=QUERIES.keys())
def test_psql_sees_no_sensitive_value(masked: GatewayThread, token: str, sql: str) -> None:
    result = psql(masked, token, "-A", "-c", sql)
    assert result.returncode == 0, result.stderr
    assert_clean(result.stdout + result.stderr)


def test_non_sensitive_values_arrive_unchanged(masked: GatewayThread, token: str) -> None:
    result = psql(
        masked,
        token,
        "-A",
        "-t",
        "-c",
        "SELECT id, name, balance, profile->'contact'->>'tier' FROM people ORDER BY id",
    )
    assert result.stdout.splitlines() == [
        "1|Maria Lopez|100|gold",
        "2|Jon Fischer|200|gold",
        "3|Aiko Tanaka|300|gold",
    ]


def test_column_rules_apply_their_strategy(masked: GatewayThread, token: str) -> None:
    result = psql(
        masked, token, "-A", "-t", "-c", "SELECT ssn, card_number FROM people WHERE id = 1"
    )
    ssn, card = result.stdout.strip().split("|")
    assert ssn.endswith("6789")
    assert "123-45" not in ssn
    assert card.startswith("[REDACTED")


@pytest.mark.parametrize("binary", [False, True])
def test_psycopg_text_and_binary(masked: GatewayThread, token: str, binary: bool) -> None:
    with psycopg.connect(masked.dsn(token)) as conn:
        rows = (
            conn.cursor(binary=binary)
            .execute("SELECT email, ssn, ip, profile, notes, balance FROM people ORDER BY id")
            .fetchall()
        )
    assert_clean(repr(rows))
    assert [r[5] for r in rows] == [100, 200, 300]


@pytest.mark.parametrize("binary", [False, True])
def test_bytea_values_are_scanned(masked: GatewayThread, token: str, binary: bool) -> None:
    """bytea comes as hex in text format and raw in binary: the detectors read
    the bytes, and what they find is masked inside the value, which stays a
    valid bytea."""
    with psycopg.connect(masked.dsn(token)) as conn:
        rows = (
            conn.cursor(binary=binary)
            .execute(
                "SELECT convert_to(notes, 'UTF8'), convert_to(name, 'UTF8'), "
                "decode('00ff', 'hex') FROM people ORDER BY id"
            )
            .fetchall()
        )
    notes = [bytes(r[0]) for r in rows]
    assert_clean(repr(notes))
    assert all(b"call " in n and b"or write" in n for n in notes)  # the rest stays
    assert [bytes(r[1]) for r in rows] == [p[0].encode() for p in PEOPLE]
    assert {bytes(r[2]) for r in rows} == {b"\x00\xff"}


def test_bytea_in_copy_is_scanned(masked: GatewayThread, token: str) -> None:
    result = psql(
        masked,
        token,
        "-c",
        "COPY (SELECT convert_to(notes, 'UTF8') FROM people) TO STDOUT",
        "-c",
        "COPY (SELECT convert_to(notes, 'UTF8') FROM people) TO STDOUT WITH (FORMAT csv)",
    )
    assert result.returncode == 0, result.stderr
    decoded = [
        bytes.fromhex(line.lstrip("\\").removeprefix("x"))
        for line in result.stdout.splitlines()
        if line.lstrip("\\").startswith("x")
    ]
    assert len(decoded) == 6
    assert_clean(repr(decoded))


@pytest.mark.parametrize("binary", [False, True])
def test_text_search_and_jsonpath_values_are_scanned(
    masked: GatewayThread, token: str, binary: bool
) -> None:
    """tsvector, tsquery and jsonpath values carry text: their lexemes and
    string literals are scanned like any text."""
    with psycopg.connect(masked.dsn(token)) as conn:
        rows = (
            conn.cursor(binary=binary)
            .execute(
                "SELECT to_tsvector('simple', email)::text, to_tsvector('simple', email), "
                "plainto_tsquery('simple', notes), "
                "format('$.a ? (@ == %s)', to_json(email))::jsonpath, "
                "'maria lopez'::tsvector FROM people ORDER BY id"
            )
            .fetchall()
        )
    assert_clean(repr(rows))
    assert "maria" in str(rows[0][4])  # a value without findings stays as it is


def test_bytea_in_escape_output_is_scanned(masked: GatewayThread, token: str) -> None:
    result = psql(
        masked,
        token,
        "-A",
        "-t",
        "-c",
        "SET bytea_output = 'escape'",
        "-c",
        "SELECT convert_to(email, 'UTF8') FROM people ORDER BY id",
    )
    assert result.returncode == 0, result.stderr
    assert_clean(result.stdout)
    assert len(result.stdout.splitlines()) == 4  # SET, then a row per person


def test_psycopg_pipeline_and_server_side_cursor(masked: GatewayThread, token: str) -> None:
    with psycopg.connect(masked.dsn(token)) as conn:
        with conn.pipeline():
            a = conn.execute("SELECT email FROM people WHERE id = %s", (1,))
            b = conn.execute("SELECT ssn FROM people WHERE id = %s", (2,))
        got = [a.fetchall(), b.fetchall()]
        with conn.cursor(name="c1") as cursor:
            cursor.execute("SELECT phone, iban FROM people")
            got.append(cursor.fetchmany(2))
            got.append(cursor.fetchall())
    assert_clean(repr(got))


def test_asyncpg_prepared_binary(masked: GatewayThread, token: str) -> None:
    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(masked.url(token), ssl="require")
        try:
            stmt = await conn.prepare("SELECT email, ssn, ip, profile FROM people WHERE id <= $1")
            return list(await stmt.fetch(3))
        finally:
            await conn.close()

    rows = asyncio.run(fetch())
    assert len(rows) == 3
    assert_clean(repr([tuple(r) for r in rows]))


def test_copy_to_stdout_text_and_csv(masked: GatewayThread, token: str, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    result = psql(
        masked,
        token,
        "-c",
        "COPY people TO STDOUT",
        "-c",
        f"\\copy (SELECT email, ssn, notes FROM people) TO '{out}' WITH (FORMAT csv)",
        "-c",
        "COPY (SELECT card_number, name FROM people) TO STDOUT WITH (FORMAT csv, HEADER true)",
    )
    assert result.returncode == 0, result.stderr
    assert_clean(result.stdout + out.read_text())
    assert "Maria Lopez" in result.stdout


def test_binary_copy_is_refused(masked: GatewayThread, token: str) -> None:
    result = psql(masked, token, "-c", "COPY people TO STDOUT WITH (FORMAT binary)")
    assert result.returncode != 0
    assert "binary COPY cannot be masked" in result.stderr
    assert_clean(result.stdout)


def test_errors_and_notices_quoting_values_are_masked(masked: GatewayThread, token: str) -> None:
    result = psql(
        masked,
        token,
        "-c",
        "SELECT ssn::int FROM people WHERE id = 1",
        "-c",
        "DO $$ BEGIN RAISE NOTICE 'customer % at %', "
        "(SELECT email FROM people WHERE id = 2), (SELECT ip FROM people WHERE id = 2); "
        "END $$",
        "-c",
        "INSERT INTO people (id, email) VALUES (1, 'maria.lopez@example.org')",
    )
    assert "invalid input syntax for type integer" in result.stderr
    # Column rules are on: a message from procedural code loses its text.
    assert "NOTICE:  [REDACTED] (raised by procedural code" in result.stderr
    assert "duplicate key value" in result.stderr
    assert_clean(result.stdout + result.stderr)


def test_notices_from_procedural_code_are_masked_by_content(
    content_masked: GatewayThread,
) -> None:
    """Without column rules, detectors mask what a notice holds; the rest stays."""
    result = psql(
        content_masked,
        content_masked.token(),
        "-c",
        "DO $$ BEGIN RAISE NOTICE 'customer % at %', "
        "(SELECT email FROM people WHERE id = 2), (SELECT ip FROM people WHERE id = 2); "
        "END $$",
    )
    assert "NOTICE:  customer [REDACTED:email] at" in result.stderr
    assert_clean(result.stdout + result.stderr)


def test_notify_payloads_are_masked(masked: GatewayThread, token: str) -> None:
    with (
        psycopg.connect(masked.dsn(token), autocommit=True) as listener,
        psycopg.connect(masked.dsn(token), autocommit=True) as sender,
    ):
        listener.execute("LISTEN leaks")
        sender.execute("SELECT pg_notify('leaks', 'card 4111 1111 1111 1111 for 123-45-6789')")
        note = next(listener.notifies(timeout=5))
    assert note.channel == "leaks"
    assert_clean(note.payload)
    assert note.payload.startswith("card ")


def test_fast_path_function_calls_are_refused(
    masked: GatewayThread, token: str, tmp_path: Path
) -> None:
    """A FunctionCall's result is one bare value outside any masking: psql's
    \\lo_export, which reads a large object through it, gets nothing."""
    source = tmp_path / "blob.txt"
    source.write_text(f"contact {SENSITIVE[0]}\n")
    target = tmp_path / "copy.txt"
    script = f"BEGIN;\n\\lo_import '{source}'\n\\lo_export :LASTOID '{target}'\nCOMMIT;\n"
    result = psql(masked, token, "-v", "ON_ERROR_STOP=1", stdin=script)
    assert result.returncode != 0
    assert "fast-path function call cannot be masked" in result.stderr
    assert not target.exists()
    assert_clean(result.stdout + result.stderr)


def test_audit_counts_what_was_masked_without_values(masked: GatewayThread, token: str) -> None:
    psql(masked, token, "-c", "SELECT email, notes FROM people")
    audit = (Path(masked.config.data_dir) / "audit.jsonl").read_text()
    events = [json.loads(line) for line in audit.splitlines()]
    applied = [e for e in events if e["type"] == "masking.applied"]
    assert applied
    assert any(c["count"] > 0 for e in applied for c in e["counts"])
    assert_clean(audit)  # statement texts are masked too


def test_a_text_parsed_again_is_masked_in_audit_every_time(
    masked: GatewayThread, token: str
) -> None:
    """psycopg parses the unnamed statement's text for every execution; its
    audited form is kept per text, and a text past the kept length is masked
    from scratch each time: both stay masked however often they run."""
    short = f"SELECT id FROM people WHERE '{SENSITIVE[0]}' <> '' AND id = %s"
    padding = " OR id = -1" * (SHOWN_PARSED_CHARS // 10)
    long = f"SELECT id FROM people WHERE '{SENSITIVE[1]}' <> '' AND (id = %s{padding})"
    with psycopg.connect(masked.dsn(token), autocommit=True) as conn:
        for run in range(3):
            assert conn.execute(short, (run + 1,)).fetchall() == [(run + 1,)]
            assert conn.execute(long, (run + 1,)).fetchall() == [(run + 1,)]
    audit = (Path(masked.config.data_dir) / "audit.jsonl").read_text()
    parsed = [
        e["statement"]
        for e in map(json.loads, audit.splitlines())
        if e["type"] == "statement.allowed" and e["origin"] == "parse"
    ]
    shown = [t for t in parsed if t.startswith("SELECT id FROM people WHERE '")]
    assert len(shown) == 6
    assert len({len(t) > SHOWN_PARSED_CHARS for t in shown}) == 2  # short and long texts
    assert_clean("\n".join(shown))


def test_recordings_hold_only_masked_rows(masked: GatewayThread, token: str) -> None:
    psql(masked, token, "-c", "SELECT * FROM people")
    assert masked.gateway is not None
    session = masked.gateway.store.list_sessions(limit=1)[0]
    env = {
        **os.environ,
        "SLUICE_CONFIG": str(Path(masked.config.data_dir) / "sluice.yaml"),
        "COLUMNS": "400",
    }
    replay = subprocess.run(
        [sys.executable, "-m", "sluice", "sessions", "replay", session.session_id],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    assert "Maria Lopez" in replay.stdout
    assert_clean(replay.stdout)


def test_policy_test_explains_masking(masked: GatewayThread) -> None:
    env = {**os.environ, "SLUICE_CONFIG": str(Path(masked.config.data_dir) / "sluice.yaml")}
    raw = yaml.safe_load((Path(masked.config.data_dir) / "sluice.yaml").read_text())
    raw["connections"][0]["policy"] = "agent"
    raw["policies"] = [{"name": "agent", "extends": "ai-agent"}]
    path = Path(masked.config.data_dir) / "policy-test.yaml"
    path.write_text(yaml.safe_dump(raw))
    env["SLUICE_CONFIG"] = str(path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sluice",
            "policy",
            "test",
            "--connection",
            "app",
            "--as",
            "x",
            "--sql",
            "SELECT upper(ssn) AS s, name FROM people",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    masking = json.loads(result.stdout)["masking"]
    by_column = {item["column"]: item for item in masking}
    assert by_column["s"]["strategy"] == "partial"
    assert "people.ssn" in by_column["s"]["why"]
    assert "name" not in by_column


@pytest.fixture(scope="module")
def content_masked(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    """Detectors only, no column rules."""
    config = base_config(
        pg,
        tmp_path_factory.mktemp("content-masked"),
        masking=("detect",),
        masking_profiles=[{"name": "detect", "content": True, "detectors": ["all"]}],
    )
    thread = GatewayThread(config).start()
    yield thread
    thread.stop()


def test_a_setting_reported_back_carries_no_value(content_masked: GatewayThread) -> None:
    """set_config('application_name', <a column>) makes the server report the
    value in a ParameterStatus, outside any result."""
    with psycopg.connect(content_masked.dsn(content_masked.token()), autocommit=True) as conn:
        conn.execute(
            "SELECT set_config('application_name', email || ' ' || ssn, false) FROM people"
        )
        reported = conn.info.parameter_status("application_name")
        assert reported is not None
        assert_clean(reported)
        assert conn.info.parameter_status("TimeZone") is not None  # formats go as they are


@pytest.fixture(scope="module")
def balances_masked(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    """A column rule on data no detector recognises (balances), under the
    ai-agent preset."""
    yield from _balances_gateway(
        pg,
        tmp_path_factory.mktemp("balances"),
        policy="agent",
        policies=[{"name": "agent", "extends": "ai-agent", "approvers": ["dba"]}],
    )


@pytest.fixture(scope="module")
def balances_unjudged(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    """The balances column rule with no policy: procedural code runs freely."""
    yield from _balances_gateway(pg, tmp_path_factory.mktemp("balances-unjudged"))


def _balances_gateway(
    pg: ThrowawayPostgres, data_dir: Path, **policy: object
) -> Iterator[GatewayThread]:
    """A gateway redacting `people.balance` (content detection off)."""
    config = base_config(
        pg,
        data_dir,
        masking=("balances",),
        masking_profiles=[
            {
                "name": "balances",
                "content": False,
                "columns": [{"match": "public.people.balance", "strategy": "redact"}],
            }
        ],
        **policy,  # type: ignore[arg-type]
    )
    thread = GatewayThread(config).start()
    yield thread
    thread.stop()


def test_procedural_code_cannot_raise_a_masked_value(balances_unjudged: GatewayThread) -> None:
    """RAISE writes whatever values the code gives it: under column rules a
    message from procedural code loses its text; the server's own keep theirs."""
    notices: list[str] = []
    with psycopg.connect(balances_unjudged.dsn(balances_unjudged.token()), autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute(
            "DO $$ BEGIN RAISE NOTICE 'b=%', (SELECT balance FROM people WHERE id = 1); END $$"
        )
        with pytest.raises(psycopg.errors.RaiseException) as raised:
            conn.execute(
                "DO $$ BEGIN RAISE EXCEPTION 'b=%', (SELECT balance FROM people WHERE id = 2)"
                " USING DETAIL = (SELECT balance FROM people WHERE id = 3)::text; END $$"
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="pg_notify"):
            conn.execute("SELECT pg_notify('ch', balance::text) FROM people")
        with pytest.raises(psycopg.errors.DivisionByZero, match="division by zero"):
            conn.execute("SELECT 1 / 0")
    diag = raised.value.diag
    assert notices
    assert all("100" not in n and "[REDACTED]" in n for n in notices)
    assert "200" not in (diag.message_primary or "")
    assert "300" not in (diag.message_detail or "")
    assert diag.sqlstate == "P0001"


def test_a_masked_column_cannot_be_parked_in_a_setting(balances_masked: GatewayThread) -> None:
    """set_config(name, balance) then current_setting(name) would hand the
    value back in a result with no column behind it: refused."""
    dsn = balances_masked.dsn(balances_masked.token("agent", groups=("agents",)), user="agent")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT balance FROM people WHERE id = 1").fetchone() != (100,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="set_config"):
            conn.execute("SELECT set_config('my.v', balance::text, false) FROM people WHERE id = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="set_config"):
            conn.execute(
                "SELECT set_config('my.v', (SELECT max(balance) FROM people)::text, false)"
            )
        assert conn.execute("SELECT current_setting('my.v', true)").fetchone() in ((None,), ("",))
        # A constant (or a parameter the client sends) carries no masked value.
        conn.execute("SELECT set_config('my.v', 'fine', false)")
        conn.execute("SELECT set_config('my.w', %s, false)", ("also fine",))
        assert conn.execute("SHOW my.v").fetchone() == ("fine",)


def test_a_relation_made_after_the_catalog_was_read_is_opaque(
    balances_masked: GatewayThread, pg: ThrowawayPostgres
) -> None:
    """A view made since the gateway read the catalog may compute from a
    masked column: its columns are of unknown origin until the catalog is
    read again. The system catalogs stay readable."""
    dsn = balances_masked.dsn(balances_masked.token("agent", groups=("agents",)), user="agent")
    with psycopg.connect(dsn, autocommit=True) as conn:  # the catalog is read now
        assert conn.execute("SELECT 1").fetchone() == (1,)
    direct = pg.dsn(user="app", password=APP_PASSWORD, dbname="app")
    with psycopg.connect(direct, autocommit=True) as conn:
        conn.execute("DROP VIEW IF EXISTS late_view")
        conn.execute("CREATE VIEW late_view AS SELECT id, balance * 1 AS b FROM people")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT id, b FROM late_view ORDER BY id").fetchall()
            assert not {100, 200, 300} & {v for row in rows for v in row}
            assert conn.execute(
                "SELECT relname FROM pg_class WHERE relname = 'pg_class'"
            ).fetchone() == ("pg_class",)
            assert conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_name = 'people'"
            ).fetchone() == ("people",)
    finally:
        with psycopg.connect(direct, autocommit=True) as conn:
            conn.execute("DROP VIEW late_view")


def test_the_audit_names_the_profiles_a_rule_attached(
    pg: ThrowawayPostgres, tmp_path: Path
) -> None:
    """A mask rule's profiles join the session's for the rest of it; each
    result's masking.applied event names the profiles in force when it came."""
    config = base_config(
        pg,
        tmp_path,
        policy="agent",
        masking=("detect",),
        masking_profiles=[
            {"name": "detect", "content": True, "detectors": ["all"]},
            {"name": "names", "columns": [{"match": "public.people.name", "strategy": "redact"}]},
        ],
        policies=[
            {
                "name": "agent",
                "extends": "ai-agent",
                "rules": [
                    {
                        "name": "mask-names",
                        "when": {"tables": ["public.people"]},
                        "action": "mask",
                        "mask_profiles": ["names"],
                    }
                ],
            }
        ],
    )
    thread = GatewayThread(config).start()
    try:
        with psycopg.connect(thread.dsn(thread.token()), autocommit=True) as conn:
            assert conn.execute(f"SELECT '{PEOPLE[0][1]}'").fetchone() == ("[REDACTED:email]",)
            assert conn.execute("SELECT name FROM people WHERE id = 1").fetchone() == (
                "[REDACTED]",
            )
    finally:
        thread.stop()
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    applied = [e for e in events if e["type"] == "masking.applied"]
    assert [e["profiles"] for e in applied] == [["detect"], ["detect", "names"]]
    assert [e["counts"] for e in applied] == [
        [
            {"column": "?column?", "detector": "*", "count": 1},
            {"column": "*", "detector": "email", "count": 1},
        ],
        [{"column": "name", "detector": "*", "count": 1}],
    ]
    started = next(e for e in events if e["type"] == "session.start")
    for event in applied:
        assert event["session_id"] == started["session_id"]
        assert event["identity"] == started["identity"]
        assert event["connection"] == "app"
