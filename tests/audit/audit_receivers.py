"""Real receivers for the audit tests: syslog over UDP and TCP, and HTTP."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the receiver")
        time.sleep(0.01)


# -- RFC 5424 -------------------------------------------------------------------

_HEADER = re.compile(
    r"<(?P<pri>\d{1,3})>(?P<version>1) (?P<timestamp>\S+) (?P<hostname>\S+) "
    r"(?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Syslog5424:
    pri: int
    version: int
    timestamp: str
    hostname: str
    app: str
    procid: str
    msgid: str
    sd_id: str
    params: dict[str, str]
    msg: str

    @property
    def facility(self) -> int:
        return self.pri // 8

    @property
    def severity(self) -> int:
        return self.pri % 8

    def json(self) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(self.msg)
        return obj


def parse_5424(data: bytes) -> Syslog5424:
    text = data.decode("utf-8")
    m = _HEADER.match(text)
    assert m is not None, text
    rest = text[m.end() :]
    assert rest.startswith("["), rest
    # STRUCTURED-DATA: [id k="v" ...] with \" \\ \] escapes in values
    i = 1
    sd_id_end = rest.index(" ", i)
    sd_id = rest[i:sd_id_end]
    i = sd_id_end
    params: dict[str, str] = {}
    while rest[i] != "]":
        assert rest[i] == " "
        eq = rest.index("=", i)
        name = rest[i + 1 : eq]
        assert rest[eq + 1] == '"'
        j = eq + 2
        value = []
        while rest[j] != '"':
            if rest[j] == "\\" and rest[j + 1] in '"\\]':
                value.append(rest[j + 1])
                j += 2
            else:
                value.append(rest[j])
                j += 1
        params[name] = "".join(value)
        i = j + 1
    assert rest[i + 1] == " "
    return Syslog5424(
        pri=int(m["pri"]),
        version=int(m["version"]),
        timestamp=m["timestamp"],
        hostname=m["hostname"],
        app=m["app"],
        procid=m["procid"],
        msgid=m["msgid"],
        sd_id=sd_id,
        params=params,
        msg=rest[i + 2 :],
    )


class UdpSyslogServer:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.messages: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.messages.append(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class TcpSyslogServer:
    """Accepts connections and splits octet-counted frames (RFC 6587 3.4.1)."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.messages: list[bytes] = []
        self.connections = 0
        self._readers: list[threading.Thread] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            reader = threading.Thread(target=self._read, args=(conn,), daemon=True)
            self._readers.append(reader)
            reader.start()

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(0.1)
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                buf += chunk
                while b" " in buf:
                    length_text, _, rest = buf.partition(b" ")
                    assert length_text.isdigit(), buf[:40]
                    length = int(length_text)
                    if len(rest) < length:
                        break
                    self.messages.append(rest[:length])
                    buf = rest[length:]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for reader in self._readers:
            reader.join()
        self.sock.close()


# -- HTTP ------------------------------------------------------------------------


@dataclass(slots=True)
class HttpBehaviour:
    fail_first: int = 0
    fail_status: int = 503
    status_for: Callable[[dict[str, Any]], int] | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class HttpReceiver:
    """A webhook receiver that fails the first N requests, then accepts."""

    def __init__(self, behaviour: HttpBehaviour | None = None, port: int = 0) -> None:
        self.behaviour = behaviour or HttpBehaviour()
        b = self.behaviour

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with b.lock:
                    b.requests += 1
                    if b.requests <= b.fail_first:
                        status = b.fail_status
                    elif b.status_for is not None:
                        status = b.status_for(body)
                    else:
                        status = 200
                    if 200 <= status < 300:
                        b.received.append(body)
                        b.headers.append(dict(self.headers.items()))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port: int = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()
