"""The servers a benchmark run talks to: PostgreSQL, pgbouncer and Sluice.

Everything started here is registered with a `Lab` (an ExitStack) and an
atexit hook, so a crash or Ctrl-C still stops every process group and removes
every temporary directory.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sluice.devservers.postgres import SUPERUSER, Role, ThrowawayPostgres, free_port
from sluice.devservers.watchdog import Watchdog
from sluice.tls import generate_self_signed

BENCH_DB = "bench"
BENCH_ROLE = "bench"
BENCH_PASSWORD = "bench-secret-Pw7"
CONNECTION = "bench"  # the Sluice connection name, used as the client's dbname
AGENT_USER = "agent"
APPROVER_USER = "alice"
APPROVER_GROUP = "dba"
PG_PASSWORD_ENV = "SLUICE_BENCH_PG_PASSWORD"
PGBOUNCER_BIN = Path("/usr/sbin/pgbouncer")
# How long a server may take to accept connections before we give up.
START_TIMEOUT = 30.0
# How long a process gets after SIGTERM before SIGKILL.
STOP_GRACE = 10.0


class BenchSetupError(RuntimeError):
    """A server could not be started; the message says why and what to do."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """Where a client connects to reach the benchmark database through one target."""

    name: str
    port: int
    dbname: str
    user: str
    password: str
    host: str = "127.0.0.1"
    pid: int | None = None  # the gateway process, for RSS sampling

    def dsn(self, **extra: str) -> str:
        parts = [
            f"host={self.host}",
            f"port={self.port}",
            f"dbname={self.dbname}",
            f"user={self.user}",
            f"password={self.password}",
            "sslmode=require",
            *(f"{k}={v}" for k, v in extra.items()),
        ]
        return " ".join(parts)

    def pg_env(self) -> dict[str, str]:
        """libpq environment for pgbench/psql against this endpoint."""
        return {
            **os.environ,
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGDATABASE": self.dbname,
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGSSLMODE": "require",
        }


# Each live server with the watchdog that kills its group if this run dies
# without `atexit` (SIGKILL, or SIGTERM while a pgbench runs).
_LIVE: dict[subprocess.Popen[bytes], Watchdog] = {}


def _kill_group(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGTERM the process group, then SIGKILL it after `grace` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # Children that outlived their leader (e.g. sluice --workers) share the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    watchdog = _LIVE.pop(proc, None)
    if watchdog is not None:
        watchdog.release()


@atexit.register
def _kill_all() -> None:
    for proc in list(_LIVE):
        _kill_group(proc, grace=2.0)


def spawn(
    argv: list[str], *, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a long-running server in its own process group, output to `log`."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    _LIVE[proc] = Watchdog.start(kill_group=proc.pid)
    return proc


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """Wait until `port` accepts TCP connections; fail with the log if `proc` exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchSetupError(f"{what} exited with code {proc.returncode}:\n{tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise BenchSetupError(
        f"{what} did not listen on port {port} in {START_TIMEOUT:.0f}s:\n{tail(log)}"
    )


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _chown_to_postgres(*paths: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SUPERUSER)
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", SUPERUSER, "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class Lab:
    """Owns every server of one run; `close()` (or the context manager) stops them all."""

    keep_logs: Path | None = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sluice-bench-")))
    pg: ThrowawayPostgres | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stack.callback(shutil.rmtree, self.root, True)
        self.root.chmod(0o755)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stack.close()

    # PostgreSQL

    def start_postgres(self) -> Endpoint:
        pg = ThrowawayPostgres(
            roles=(Role(name=BENCH_ROLE, password=BENCH_PASSWORD),),
            databases=(BENCH_DB,),
            settings={"max_connections": "400"},
        )
        self.stack.enter_context(pg)
        self.pg = pg
        return Endpoint(
            name="direct", port=pg.port, dbname=BENCH_DB, user=BENCH_ROLE, password=BENCH_PASSWORD
        )

    def versions(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.pg is not None:
            out["postgres"] = self.pg.psql("SHOW server_version").strip()
        for name, argv in {
            "pgbouncer": [str(PGBOUNCER_BIN), "--version"],
            "pgbench": ["pgbench", "--version"],
        }.items():
            with contextlib.suppress(OSError):
                proc = subprocess.run(argv, capture_output=True, text=True, check=False)
                out[name] = (proc.stdout or proc.stderr).splitlines()[0].strip()
        return out

    # pgbouncer

    def start_pgbouncer(self) -> Endpoint:
        if not PGBOUNCER_BIN.exists():
            raise BenchSetupError(
                f"pgbouncer was not found at {PGBOUNCER_BIN}; install it with "
                "`apt-get install pgbouncer`"
            )
        assert self.pg is not None
        home = self.root / "pgbouncer"
        home.mkdir()
        port = free_port()
        cert, key = home / "client.crt", home / "client.key"
        generate_self_signed(cert, key, common_name="bench-pgbouncer")
        userlist = home / "userlist.txt"
        userlist.write_text(f'"{BENCH_ROLE}" "{BENCH_PASSWORD}"\n')
        log = home / "pgbouncer.log"
        ini = home / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{BENCH_DB} = host=127.0.0.1 port={self.pg.port} dbname={BENCH_DB}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {port}\n"
            "unix_socket_dir =\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {userlist}\n"
            "pool_mode = session\n"
            "max_client_conn = 1000\n"
            "default_pool_size = 100\n"
            f"logfile = {log}\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
            "client_tls_sslmode = require\n"
            f"client_tls_cert_file = {cert}\n"
            f"client_tls_key_file = {key}\n"
            "server_tls_sslmode = verify-full\n"
            f"server_tls_ca_file = {self.pg.ca_file}\n"
            "ignore_startup_parameters = extra_float_digits\n"
        )
        for path in (cert, key, userlist, ini):
            path.chmod(0o600)
        log.touch()
        _chown_to_postgres(home, cert, key, userlist, ini, log)
        stdout_log = self.root / "pgbouncer.stdout.log"
        proc = spawn(_as_postgres([str(PGBOUNCER_BIN), str(ini)]), log=stdout_log)
        self.stack.callback(_kill_group, proc)
        try:
            wait_port(port, proc, log, "pgbouncer")
        except BenchSetupError as exc:
            raise BenchSetupError(f"{exc}\n{tail(stdout_log)}") from None
        return Endpoint(
            name="pgbouncer",
            port=port,
            dbname=BENCH_DB,
            user=BENCH_ROLE,
            password=BENCH_PASSWORD,
            pid=proc.pid,
        )

    # The minimal pipe (a reference peer: the floor under any Python gateway)

    def start_pipe(self) -> Endpoint:
        assert self.pg is not None
        home = self.root / "pipe"
        home.mkdir()
        # PostgreSQL's own certificate: libpq's SCRAM channel binding hashes it.
        cert, key = self.pg.data_dir / "server.crt", self.pg.data_dir / "server.key"
        port = free_port()
        log = home / "pipe.log"
        argv = [
            sys.executable,
            "-m",
            "bench.pipe",
            "--listen",
            str(port),
            "--backend",
            str(self.pg.port),
            "--cert",
            str(cert),
            "--key",
            str(key),
            "--ca",
            str(self.pg.ca_file),
        ]
        proc = spawn(argv, log=log)
        self.stack.callback(_kill_group, proc)
        wait_port(port, proc, log, "bench.pipe")
        return Endpoint(
            name="uvloop-pipe",
            port=port,
            dbname=BENCH_DB,
            user=BENCH_ROLE,
            password=BENCH_PASSWORD,
            pid=proc.pid,
        )

    # Sluice

    def sluice_config(
        self,
        data_dir: Path,
        port: int,
        *,
        policy: bool,
        masking: dict[str, Any] | None,
        recording: bool = True,
    ) -> dict[str, Any]:
        assert self.pg is not None
        conn: dict[str, Any] = {
            "name": CONNECTION,
            "host": "127.0.0.1",
            "port": self.pg.port,
            "database": BENCH_DB,
            "user": BENCH_ROLE,
            "password": {"env": PG_PASSWORD_ENV},
            "tls": {
                "mode": "verify-full",
                "ca_file": str(self.pg.ca_file),
                "server_name": "localhost",
            },
        }
        raw: dict[str, Any] = {
            "data_dir": str(data_dir),
            "listen": {"postgres": f"127.0.0.1:{port}"},
            "connections": [conn],
        }
        if not recording:
            conn["recording"] = {"enabled": False}
        if policy:
            conn["policy"] = "agent"
            raw["policies"] = [{"name": "agent", "extends": "ai-agent"}]
        if masking is not None:
            conn["masking"] = [p["name"] for p in masking["profiles"]]
            raw["masking"] = masking
        return raw

    def start_sluice(
        self,
        name: str,
        *,
        policy: bool = False,
        masking: dict[str, Any] | None = None,
        workers: int = 1,
        provision: bool = False,
        pool: int = 0,
        recording: bool = True,
    ) -> tuple[Endpoint, Path]:
        """Start `sluice serve`; returns the endpoint and its config file.

        With `provision`, the self-signed certificate and the master key are
        created before the gateway starts, instead of by the gateway itself.
        """
        data_dir = self.root / name
        data_dir.mkdir(exist_ok=True)
        if provision:
            _provision(data_dir)
        port = free_port()
        config_file = data_dir / "sluice.yaml"
        raw = self.sluice_config(
            data_dir, port, policy=policy, masking=masking, recording=recording
        )
        if pool:
            raw["connections"][0]["pool"] = {"size": pool}
        config_file.write_text(yaml.safe_dump(raw, sort_keys=False))
        sluice = str(Path(sys.executable).parent / "sluice")
        token = create_token(config_file, AGENT_USER, groups=("agents",))
        env = {**os.environ, PG_PASSWORD_ENV: BENCH_PASSWORD}
        log = data_dir / "serve.log"
        argv = [sluice, "--config", str(config_file), "serve"]
        if workers != 1:
            argv += ["--workers", str(workers)]
        proc = spawn(argv, log=log, env=env)
        self.stack.callback(self._keep_log, log, name)
        self.stack.callback(_kill_group, proc)
        wait_port(port, proc, log, f"sluice serve ({name})")
        if workers != 1:
            time.sleep(1.0)  # let every worker bind its SO_REUSEPORT listener
            if proc.poll() is not None:
                raise BenchSetupError(f"sluice serve --workers {workers} exited:\n{tail(log)}")
        endpoint = Endpoint(
            name=name,
            port=port,
            dbname=CONNECTION,
            user=AGENT_USER,
            password=token,
            pid=proc.pid,
        )
        return endpoint, config_file

    def _keep_log(self, log: Path, name: str) -> None:
        if self.keep_logs is not None and log.exists():
            self.keep_logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(log, self.keep_logs / f"sluice-{name}.log")


def _provision(data_dir: Path) -> None:
    """Create the gateway's first-run files (TLS cert/key, master key) up front."""
    from sluice.credentials.vault import MASTER_KEY_FILE, Vault
    from sluice.tls import SELF_SIGNED_CERT, SELF_SIGNED_KEY, gateway_cert

    for stale in (SELF_SIGNED_CERT, SELF_SIGNED_KEY, MASTER_KEY_FILE):
        (data_dir / stale).unlink(missing_ok=True)
    gateway_cert(data_dir, None, None)
    Vault.open(data_dir, environ={})


def create_token(config_file: Path, user: str, *, groups: tuple[str, ...] = ()) -> str:
    """A Sluice token via the CLI, as an operator would create one."""
    import json

    sluice = str(Path(sys.executable).parent / "sluice")
    argv = [sluice, "--config", str(config_file), "tokens", "create", "--user", user, "--json"]
    for group in groups:
        argv += ["--group", group]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchSetupError(f"`sluice tokens create` failed:\n{proc.stderr or proc.stdout}")
    token: str = json.loads(proc.stdout)["token"]
    return token


def gateway_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user, system) used so far by a gateway process and its children."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    user = system = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            user += times.user
            system += times.system
    return user, system


def gateway_rss(pid: int) -> int:
    """Resident memory of a gateway process and its children (workers), in bytes."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total
