"""A small blocking JSON POST client (standard library), run in worker threads.

Redirects are not followed (a 3xx is a failed delivery) and nothing but
http and https is accepted, so a webhook URL cannot be turned into a file
read or a request to another host.
"""

from __future__ import annotations

import http.client
import random
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

MAX_RESPONSE_BYTES: Final = 64 * 1024
"""Bytes of a response body read (for error messages); the rest is discarded."""

USER_AGENT: Final = "sluice-webhook/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpResult:
    status: int | None  # None when no response was received
    error: str = ""  # transport error or a short excerpt of a non-2xx body

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff with full jitter on the upper half."""

    initial: float = 0.5
    maximum: float = 60.0
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1 for the first retry)."""
        base = min(self.maximum, self.initial * self.factor ** max(attempt - 1, 0))
        return base / 2 + random.uniform(0, base / 2)


def check_url(url: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook URL must be http(s)://host/...: {url!r}")
    return parts


def post_json(
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> HttpResult:
    """POST `body` as application/json; never raises for network or HTTP errors."""
    parts = check_url(url)
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        ctx = ssl_context or ssl.create_default_context()
        conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    all_headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **(headers or {}),
    }
    try:
        conn.request("POST", target, body=body, headers=all_headers)
        resp = conn.getresponse()
        excerpt = resp.read(MAX_RESPONSE_BYTES)
        if 200 <= resp.status < 300:
            return HttpResult(status=resp.status)
        text = excerpt[:200].decode("utf-8", "replace")
        return HttpResult(status=resp.status, error=f"HTTP {resp.status}: {text}")
    except (OSError, http.client.HTTPException) as exc:
        return HttpResult(status=None, error=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
