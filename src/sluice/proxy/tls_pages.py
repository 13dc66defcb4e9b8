"""Hand back the pages of an idle TLS connection's read buffer.

uvloop's TLS transport reads ciphertext into a buffer of its own, 256 KiB per
connection, allocated when the connection opens. A read touches as many of
its pages as it brings bytes, and a touched page stays resident until the
connection closes: a session that once read a large result kept up to
256 KiB per TLS leg (client and backend) for as long as it stayed open.

Between reads the buffer holds nothing live: each read is copied into
OpenSSL's incoming BIO before the loop runs anything else. Its whole pages
can then be handed back with `madvise(MADV_DONTNEED)`; the next read that
reaches them gets fresh zeroed pages. Only the pages inside the buffer are
advised, never the allocator's header before it or a neighbour's memory.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import mmap
import sys
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

MADV_DONTNEED: Final = 4  # Linux's value
PAGE_SIZE: Final = mmap.PAGESIZE

_ANY_BUFFER: Final = 1
"""Asked of `get_buffer`: a request no larger than the buffer makes uvloop
return the whole buffer as it is; it never reallocates for it."""


def _madvise() -> Callable[[int, int, int], int] | None:
    """The C library's madvise, or None off Linux or without one."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        advise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    advise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advise.restype = ctypes.c_int
    return advise


_MADVISE: Final = _madvise()


def _read_buffer(transport: asyncio.BaseTransport) -> memoryview | None:
    """The TLS read buffer of a uvloop transport, or None (plain TCP, another loop)."""
    try:
        protocol = transport.get_extra_info("uvloop.sslproto")
        get_buffer = getattr(protocol, "get_buffer", None)
        if get_buffer is None:
            return None
        view = get_buffer(_ANY_BUFFER)
    except Exception:  # a closed transport, or a uvloop that works otherwise
        return None
    if not isinstance(view, memoryview) or view.readonly or not view.c_contiguous:
        return None
    return view


def whole_pages(view: memoryview) -> tuple[int, int]:
    """The addresses of the first whole page inside a writable `view` and of
    the end of its last one (equal when no whole page lies inside it)."""
    address = ctypes.addressof(ctypes.c_char.from_buffer(view))
    start = -(-address // PAGE_SIZE) * PAGE_SIZE
    end = max(start, (address + view.nbytes) // PAGE_SIZE * PAGE_SIZE)
    return start, end


def release_read_buffer(transport: asyncio.BaseTransport) -> int:
    """Hand back the whole pages of `transport`'s TLS read buffer.

    Call it from the event loop, between callbacks (never while the loop is
    inside the transport's read). Returns the bytes handed back: 0 where
    there is no such buffer or the call failed; the buffer works either way.
    """
    if _MADVISE is None:
        return 0
    view = _read_buffer(transport)
    if view is None:
        return 0
    try:
        start, end = whole_pages(view)
    except (TypeError, ValueError):
        return 0
    if end <= start:
        return 0
    if _MADVISE(start, end - start, MADV_DONTNEED) != 0:
        log.debug("madvise of a TLS read buffer failed: errno %d", ctypes.get_errno())
        return 0
    return end - start
