"""Session counts shared by every worker of one gateway.

`sluice serve --workers N` forks N processes that accept from one port. The
caps an operator sets (`limits.max_sessions`, `limits.max_sessions_per_user`)
are the gateway's, not each process's: a user capped at 5 sessions must not
get 5 per worker. The counts live in an anonymous shared mapping made before
the workers fork, under a process-shared lock; a worker that dies takes the
gateway down (see `runner`), so no count outlives the sessions it counts.

Users are kept by a 64-bit BLAKE2b hash of their name in an open-addressing
table (linear probing). A user's entry stays, at zero, when their last
session ends; the table is rebuilt without those once they fill half of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import multiprocessing
import struct
from collections.abc import Iterator
from typing import Final

from sluice.errors import SluiceError

TABLE_SLOTS: Final = 1 << 16
"""Users with sessions at once, at most (1 MiB of shared memory, touched as used)."""

_ENTRY: Final = struct.Struct("<Qq")  # user hash (0: never used), sessions
_TOTAL: Final = struct.Struct("<qq")  # sessions, entries in use (live or at zero)
_HEADER_BYTES: Final = _TOTAL.size

LOCK_TIMEOUT: Final = 2.0
"""Seconds to wait for the lock. It is held for microseconds; a wait this long
means a worker died holding it, and the gateway is going down."""


class SlotsUnavailable(SluiceError):
    """The shared counts could not be read: the session is refused (fail closed)."""

    sqlstate = "53300"


def _user_key(user: str) -> int:
    key = int.from_bytes(hashlib.blake2b(user.encode(), digest_size=8).digest(), "little")
    return key or 1


class SessionSlots:
    """The gateway's open sessions, in all and per user, across its processes.

    Made before the workers fork; every method takes the shared lock for a
    few microseconds. `try_enter` and `try_enter_user` count a session in
    when it fits under its cap; `leave` and `leave_user` count it out.
    """

    def __init__(self, *, table_slots: int = TABLE_SLOTS, lock_timeout: float = LOCK_TIMEOUT):
        if table_slots & (table_slots - 1):
            raise ValueError("table_slots must be a power of two")
        self._slots = table_slots
        self._mem = mmap.mmap(-1, _HEADER_BYTES + table_slots * _ENTRY.size)  # MAP_SHARED
        self._lock = multiprocessing.get_context("fork").Lock()
        self._lock_timeout = lock_timeout

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self._lock.acquire(timeout=self._lock_timeout):
            raise SlotsUnavailable(
                f"the gateway's session counts stayed locked for {self._lock_timeout:.0f}s"
            )
        try:
            yield
        finally:
            self._lock.release()

    @property
    def sessions(self) -> int:
        with self._locked():
            sessions: int = _TOTAL.unpack_from(self._mem, 0)[0]
            return sessions

    def try_enter(self, cap: int) -> bool:
        """Count one more session, unless `cap` are open already."""
        with self._locked():
            sessions, used = _TOTAL.unpack_from(self._mem, 0)
            if sessions >= cap:
                return False
            _TOTAL.pack_into(self._mem, 0, sessions + 1, used)
            return True

    def leave(self) -> None:
        with self._locked():
            sessions, used = _TOTAL.unpack_from(self._mem, 0)
            _TOTAL.pack_into(self._mem, 0, max(0, sessions - 1), used)

    def user_sessions(self, user: str) -> int:
        key = _user_key(user)
        with self._locked():
            offset = self._find(key)
            if offset is None:
                return 0
            count: int = _ENTRY.unpack_from(self._mem, offset)[1]
            return count

    def try_enter_user(self, user: str, cap: int) -> bool:
        """Count one more session of `user`, unless they have `cap` already
        (or the table holds as many users as it can: refused, not lost)."""
        key = _user_key(user)
        with self._locked():
            offset = self._find(key)
            if offset is None:
                if cap < 1:
                    return False
                offset = self._insert(key)
                if offset is None:
                    return False
            count = _ENTRY.unpack_from(self._mem, offset)[1]
            if count >= cap:
                return False
            _ENTRY.pack_into(self._mem, offset, key, count + 1)
            return True

    def leave_user(self, user: str) -> None:
        key = _user_key(user)
        with self._locked():
            offset = self._find(key)
            if offset is not None:
                count = _ENTRY.unpack_from(self._mem, offset)[1]
                _ENTRY.pack_into(self._mem, offset, key, max(0, count - 1))

    # The table, under the lock

    def _offset(self, index: int) -> int:
        return _HEADER_BYTES + (index & (self._slots - 1)) * _ENTRY.size

    def _find(self, key: int) -> int | None:
        index = key
        for _ in range(self._slots):
            offset = self._offset(index)
            found = _ENTRY.unpack_from(self._mem, offset)[0]
            if found == key:
                return offset
            if found == 0:
                return None
            index += 1
        return None

    def _insert(self, key: int) -> int | None:
        """A new zero entry for `key` (not in the table), or None when full."""
        sessions, used = _TOTAL.unpack_from(self._mem, 0)
        if used >= self._slots // 2:
            used = self._compact()
            if used >= self._slots // 2:
                return None
        index = key
        while True:
            offset = self._offset(index)
            if _ENTRY.unpack_from(self._mem, offset)[0] == 0:
                _ENTRY.pack_into(self._mem, offset, key, 0)
                _TOTAL.pack_into(self._mem, 0, sessions, used + 1)
                return offset
            index += 1

    def _compact(self) -> int:
        """Rebuild the table with only the users who have sessions; their count."""
        live = []
        for index in range(self._slots):
            key, count = _ENTRY.unpack_from(self._mem, self._offset(index))
            if key and count > 0:
                live.append((key, count))
        start = _HEADER_BYTES
        self._mem[start:] = bytes(len(self._mem) - start)
        for key, count in live:
            index = key
            while _ENTRY.unpack_from(self._mem, self._offset(index))[0] != 0:
                index += 1
            _ENTRY.pack_into(self._mem, self._offset(index), key, count)
        sessions = _TOTAL.unpack_from(self._mem, 0)[0]
        _TOTAL.pack_into(self._mem, 0, sessions, len(live))
        return len(live)
