"""A throwaway PostgreSQL server, configured like production.

Used by `sluice demo`, the test suite and the benchmarks: initdb into a
temporary directory on a free port, SCRAM-SHA-256 passwords, TLS on, and
never the machine's own cluster. PostgreSQL refuses to run as root, so as
root it runs as the `postgres` user (`runuser`), as on a user's laptop.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sluice.devservers.watchdog import Watchdog
from sluice.errors import SluiceError
from sluice.tls import generate_self_signed

SUPERUSER = "postgres"


class DevServerError(SluiceError):
    """A throwaway server could not be set up or run."""


def find_pg_bin() -> Path:
    """The directory of initdb/pg_ctl, from pg_config or Debian's layout."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.insert(0, out.stdout.strip())
    for cand in candidates:
        if (Path(cand) / "initdb").exists():
            return Path(cand)
    raise DevServerError(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found; "
        "install them with `apt-get install postgresql`"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True, kw_only=True)
class Role:
    """An extra login role; `auth` picks its pg_hba method."""

    name: str
    password: str | None
    auth: str = "scram-sha-256"  # or md5, password, trust


class ThrowawayPostgres:
    """Start with `with ThrowawayPostgres(...) as pg:`; stopped and deleted on exit."""

    def __init__(
        self,
        *,
        superuser_password: str = "postgres-secret",  # noqa: S107 - a throwaway server
        roles: tuple[Role, ...] = (),
        databases: tuple[str, ...] = (),
        tls: bool = True,
        require_tls: bool = False,
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ):
        self.superuser_password = superuser_password
        self.roles = roles
        self.databases = databases
        self.tls = tls
        self.require_tls = require_tls
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.settings = settings or {}
        self.bin = find_pg_bin()
        self.root: Path | None = None
        self._running = False
        self._watchdog: Watchdog | None = None

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None
        return self.root / "sock"

    @property
    def ca_file(self) -> Path:
        assert self.root is not None
        return self.root / "server.crt"

    def dsn(
        self,
        *,
        user: str = SUPERUSER,
        password: str | None = None,
        dbname: str = "postgres",
        sslmode: str = "prefer",
    ) -> str:
        pw = self.superuser_password if password is None and user == SUPERUSER else password
        parts = [
            f"host={self.host}",
            f"port={self.port}",
            f"user={user}",
            f"dbname={dbname}",
            f"sslmode={sslmode}",
        ]
        if pw is not None:
            parts.append(f"password={pw}")
        return " ".join(parts)

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", SUPERUSER, "--", *argv]
        return argv

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SUPERUSER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, argv: list[str], *, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(
            self._as_owner(argv), capture_output=True, text=True, env=env, check=False
        )
        if proc.returncode != 0:
            raise DevServerError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def start(self) -> ThrowawayPostgres:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sluice-pg-"))
        # Stops the server and deletes its directory should this process die
        # without `stop()` (a test run killed with SIGTERM or SIGKILL).
        self._watchdog = Watchdog.start(stop=self._as_owner(self._pg_ctl_stop()), remove=self.root)
        self._chown(self.root)
        self.root.chmod(0o755)
        self.socket_dir.mkdir()
        self._chown(self.socket_dir)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        self._chown(pwfile)
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--pwfile",
                str(pwfile),
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        pwfile.unlink()
        conf = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "password_encryption": "'scram-sha-256'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
            "shared_buffers": "128MB",
            **self.settings,
        }
        if self.tls:
            cert, key = self.data_dir / "server.crt", self.data_dir / "server.key"
            generate_self_signed(cert, key, common_name="throwaway-postgres")
            self._chown(cert)
            self._chown(key)
            shutil.copy(cert, self.ca_file)
            conf.update(ssl="on", ssl_cert_file="'server.crt'", ssl_key_file="'server.key'")
        with (self.data_dir / "postgresql.conf").open("a") as handle:
            for name, value in conf.items():
                handle.write(f"{name} = {value}\n")
        host_kind = "hostssl" if self.require_tls and self.tls else "host"
        hba = ["local all all scram-sha-256"]
        for role in self.roles:
            hba.append(f"{host_kind} all {role.name} 127.0.0.1/32 {role.auth}")
        hba.append(f"{host_kind} all all 127.0.0.1/32 scram-sha-256")
        (self.data_dir / "pg_hba.conf").write_text("\n".join(hba) + "\n")
        self._running = True  # from here `stop()` has a server to stop, maybe half-started
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.root / "postgres.log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        self._create_objects()

    def psql(self, sql: str, *, dbname: str = "postgres") -> str:
        """Run SQL as the superuser over the Unix socket; return the output."""
        env = {**os.environ, "PGPASSWORD": self.superuser_password}
        return self._run(
            [
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                dbname,
                "-c",
                sql,
            ],
            env=env,
        )

    def _create_objects(self) -> None:
        for role in self.roles:
            encryption = "md5" if role.auth == "md5" else "scram-sha-256"
            password = f" PASSWORD '{role.password}'" if role.password is not None else ""
            self.psql(
                f"SET password_encryption = '{encryption}'; "
                f'CREATE ROLE "{role.name}" LOGIN{password};'
            )
        for name in self.databases:
            self.psql(f'CREATE DATABASE "{name}"')
            for role in self.roles:
                self.psql(f'GRANT ALL ON DATABASE "{name}" TO "{role.name}"')
                self.psql(f'GRANT ALL ON SCHEMA public TO "{role.name}"', dbname=name)

    def stop(self) -> None:
        if self._running:
            self._running = False
            with contextlib.suppress(DevServerError):
                self._run(self._pg_ctl_stop())
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        if self._watchdog is not None:
            self._watchdog.release()
            self._watchdog = None

    def _pg_ctl_stop(self) -> list[str]:
        return [str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"]

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
