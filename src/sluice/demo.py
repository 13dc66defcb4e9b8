"""`sluice demo`: a throwaway PostgreSQL with fake customers, behind the gateway.

Everything lives in a temporary directory and disappears on Ctrl-C. The demo
prints the psql commands to try as an agent and as an approver.
"""

from __future__ import annotations

import io
import os
import secrets
import sys
import tempfile
from pathlib import Path

from faker import Faker
from rich.console import Console
from rich.progress import Progress

from sluice.config import Config
from sluice.devservers.postgres import Role, ThrowawayPostgres
from sluice.devservers.watchdog import Watchdog

DEMO_DB = "shop"
DEMO_ROLE = "shop_app"

SCHEMA = """
CREATE TABLE customers (
    id          serial PRIMARY KEY,
    full_name   text NOT NULL,
    email       text NOT NULL,
    phone       text,
    ssn         text,
    card_number text,
    iban        text,
    address     text,
    last_login_ip inet,
    notes       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id          serial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers(id),
    amount_cents int NOT NULL,
    status      text NOT NULL,
    placed_at   timestamptz NOT NULL
);
"""


def seed_rows(rows: int, *, seed: int = 7) -> tuple[str, str]:
    """COPY text for customers and orders, from a seeded Faker."""
    fake = Faker("en_US")
    Faker.seed(seed)
    customers = io.StringIO()
    orders = io.StringIO()
    order_id = 0
    for cid in range(1, rows + 1):
        name = fake.name()
        email = f"{name.lower().replace(' ', '.')}@{fake.free_email_domain()}"
        note = fake.random_element(
            [
                f"Call back on {fake.phone_number()} after 5pm",
                f"Prefers email ({email}); VIP since {fake.year()}",
                "Asked to close the account",
                f"Paid with card {fake.credit_card_number()} last time",
                "",
            ]
        )
        fields = [
            str(cid),
            name,
            email,
            fake.phone_number(),
            fake.ssn(),
            fake.credit_card_number(),
            fake.iban(),
            fake.address().replace("\n", ", "),
            fake.ipv4_private() if cid % 3 else fake.ipv4_public(),
            note,
        ]
        customers.write("\t".join(_copy_escape(f) for f in fields) + "\n")
        for _ in range(fake.random_int(0, 3)):
            order_id += 1
            orders.write(
                f"{order_id}\t{cid}\t{fake.random_int(500, 50000)}\t"
                f"{fake.random_element(['paid', 'shipped', 'refunded'])}\t"
                f"{fake.date_time_this_year().isoformat()}+00\n"
            )
    return customers.getvalue(), orders.getvalue()


def _copy_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", " ").replace("\n", " ")


def demo_config(*, data_dir: Path, pg: ThrowawayPostgres, port: int) -> Config:
    return Config.model_validate(
        {
            "data_dir": str(data_dir),
            "listen": {"postgres": f"127.0.0.1:{port}"},
            "connections": [
                {
                    "name": DEMO_DB,
                    "host": pg.host,
                    "port": pg.port,
                    "database": DEMO_DB,
                    "user": DEMO_ROLE,
                    "password": {"env": "SLUICE_DEMO_PASSWORD"},
                    "tls": {
                        "mode": "verify-full",
                        "ca_file": str(pg.ca_file),
                        "server_name": "localhost",
                    },
                    "policy": "agent",
                    "masking": ["pii"],
                }
            ],
            "policies": [{"name": "agent", "extends": "ai-agent"}],
            "masking": {"profiles": [{"name": "pii", "detectors": ["all"], "content": True}]},
            "recording": {"dir": str(data_dir / "recordings")},
            "audit": {"sinks": [{"type": "file", "path": str(data_dir / "audit.jsonl")}]},
        }
    )


def run_demo(*, port: int, rows: int) -> None:
    from sluice.proxy.server import build_gateway, run

    console = Console()
    password = secrets.token_urlsafe(18)
    os.environ["SLUICE_DEMO_PASSWORD"] = password
    with (
        tempfile.TemporaryDirectory(prefix="sluice-demo-") as tmp,
        # Its store, master key and tokens go too if the demo is killed.
        Watchdog.start(remove=Path(tmp)),
        ThrowawayPostgres(
            roles=(Role(name=DEMO_ROLE, password=password),), databases=(DEMO_DB,)
        ) as pg,
    ):
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("Seeding fake customers", total=3)
            pg.psql(SCHEMA, dbname=DEMO_DB)
            progress.advance(task)
            customers, orders = seed_rows(rows)
            progress.advance(task)
            _copy(
                pg,
                "customers (id, full_name, email, phone, ssn, card_number, iban, address, "
                "last_login_ip, notes)",
                customers,
            )
            _copy(pg, "orders", orders)
            pg.psql(
                f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {DEMO_ROLE}; "
                f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {DEMO_ROLE}",
                dbname=DEMO_DB,
            )
            progress.advance(task)
        data_dir = Path(tmp) / "data"
        config = demo_config(data_dir=data_dir, pg=pg, port=port)
        gateway = build_gateway(config)
        _, agent_token = gateway.store.create_token(
            user="agent", groups=["agents"], description="demo agent"
        )
        _, dba_token = gateway.store.create_token(
            user="alice", groups=["dba"], description="demo approver"
        )
        env = f"SLUICE_CONFIG={data_dir / 'sluice.yaml'}"
        installed = Path(sys.executable).parent / "sluice"
        cli = str(installed) if installed.exists() else "sluice"
        _write_config(data_dir / "sluice.yaml", config)
        console.print(
            f"\n[bold green]Sluice demo is up.[/] A throwaway PostgreSQL with {rows} "
            f"fake customers sits behind the gateway on 127.0.0.1:{port}.\n"
        )
        console.print("As an AI agent (reads pass, PII is masked, writes wait for approval):")
        console.print(
            f'  psql "host=127.0.0.1 port={port} dbname={DEMO_DB} user=agent '
            f'password={agent_token} sslmode=require"',
            highlight=False,
            soft_wrap=True,
        )
        console.print("  then try:  SELECT full_name, email, ssn FROM customers LIMIT 5;")
        console.print("             DELETE FROM orders;   UPDATE orders SET status='x' WHERE id=1;")
        console.print("\nAs the approver (alice, group dba), in another terminal:")
        console.print(f"  export {env} SLUICE_TOKEN={dba_token}", highlight=False, soft_wrap=True)
        console.print(f"  {cli} approvals list", highlight=False)
        console.print(f"  {cli} approvals approve <id> --reason 'looks right'", highlight=False)
        console.print(
            f"\nSessions: {env} {cli} sessions list   Press Ctrl-C to stop.\n",
            highlight=False,
            soft_wrap=True,
        )
        run(gateway)


def _copy(pg: ThrowawayPostgres, target: str, data: str) -> None:
    table = target.split(" ", 1)[0]
    path = Path(pg.root or tempfile.gettempdir()) / f"{table}.tsv"
    path.write_text(data)
    os.chmod(path, 0o644)
    # Server-side COPY by the throwaway server's own superuser, from its own directory.
    pg.psql(f"COPY {target} FROM '{path}'", dbname=DEMO_DB)
    pg.psql(
        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))",  # noqa: S608
        dbname=DEMO_DB,
    )


def _write_config(path: Path, config: Config) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
    )
