"""Test helpers: a real gateway running in a background thread on uvloop."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from sluice.config import Config
from sluice.proxy.gateway import Gateway
from sluice.proxy.server import build_gateway, serve


@dataclass
class GatewayThread:
    """Runs `serve()` for a config in its own thread and event loop."""

    config: Config
    governor_factory: Callable[[Config], Any] | None = None
    gateway: Gateway | None = None
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None

    def start(self) -> GatewayThread:
        governor = self.governor_factory(self.config) if self.governor_factory else None
        self.gateway = build_gateway(self.config, governor=governor)
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError(f"gateway did not start: {self._error}")
        if self._error:
            raise RuntimeError("gateway failed to start") from self._error
        return self

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(bound: list[tuple[str, int]]) -> None:
                self.port = bound[0][1]
                self._ready.set()

            assert self.gateway is not None
            await serve(self.gateway, ready=ready, stop=self._stop)

        try:
            uvloop.run(main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the gateway's loop and return its result."""
        assert self._loop is not None
        result: list[Any] = []
        done = threading.Event()

        def wrapper() -> None:
            result.append(fn())
            done.set()

        self._loop.call_soon_threadsafe(wrapper)
        done.wait(10)
        return result[0]

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)
        if self.gateway is not None:
            self.gateway.store.close()

    def token(self, user: str = "alice", groups: tuple[str, ...] = ("dev",), **kw: Any) -> str:
        assert self.gateway is not None
        _, plaintext = self.gateway.store.create_token(user=user, groups=groups, **kw)
        return plaintext

    def dsn(
        self,
        token: str,
        *,
        user: str = "alice",
        dbname: str = "app",
        sslmode: str = "require",
        **extra: str,
    ) -> str:
        parts = [
            f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}",
            f"password={token} sslmode={sslmode}",
        ]
        parts += [f"{k}='{v}'" for k, v in extra.items()]
        return " ".join(parts)

    def url(
        self,
        token: str,
        *,
        user: str = "alice",
        dbname: str = "app",
        driver: str = "postgresql",
        sslmode: str = "require",
    ) -> str:
        return f"{driver}://{user}:{token}@127.0.0.1:{self.port}/{dbname}?sslmode={sslmode}"


@contextmanager
def disk_full_for(suffix: str) -> Iterator[None]:
    """Writes to files whose path ends with `suffix` fail with ENOSPC; others go through."""
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(suffix):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    os.write = write
    try:
        yield
    finally:
        os.write = real_write


@contextmanager
def fsync_of(suffix: str, replacement: Callable[[int], None]) -> Iterator[list[int]]:
    """os.fsync calls `replacement` for files whose path ends with `suffix`
    (and yields the list of their descriptors, as they come); others go through."""
    real_fsync = os.fsync
    seen: list[int] = []

    def fsync(fd: Any) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(suffix):
            seen.append(fd)
            replacement(fd)
        else:
            real_fsync(fd)

    os.fsync = fsync
    try:
        yield seen
    finally:
        os.fsync = real_fsync


def process_running(pid: int) -> bool:
    """Whether `pid` is running: not gone, and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def fd_is_open_on(fd: int | str, path: Path) -> bool:
    """Descriptor `fd` of this process is open on `path`."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == str(path)
    except FileNotFoundError:
        return False


def handles_on(path: Path) -> list[str]:
    """This process's descriptors open on `path`."""
    return [fd for fd in os.listdir("/proc/self/fd") if fd_is_open_on(fd, path)]


def latest_session(gateway: GatewayThread, user: str = "agent") -> str:
    """The id of `user`'s latest session, once it has ended (its log sealed)."""
    assert gateway.gateway is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sessions = gateway.gateway.store.list_sessions(limit=1, user=user)
        if sessions and sessions[0].ended_at is not None:
            return sessions[0].session_id
        time.sleep(0.05)
    raise AssertionError("no ended session")
