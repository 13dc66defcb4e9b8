"""TLS material: the gateway's client-facing certificate and SSL contexts."""

from __future__ import annotations

import datetime as dt
import fcntl
import functools
import ipaddress
import os
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SELF_SIGNED_CERT = "gateway.crt"
SELF_SIGNED_KEY = "gateway.key"


def generate_self_signed(
    cert_path: Path, key_path: Path, *, common_name: str = "sluice", hosts: tuple[str, ...] = ()
) -> None:
    """Write a self-signed ECDSA P-256 certificate valid for localhost and `hosts`."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for host in ("127.0.0.1", "::1", *hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def gateway_cert(
    data_dir: Path, cert_file: Path | None, key_file: Path | None
) -> tuple[Path, Path]:
    """The configured certificate, or the self-signed one (generated once and kept)."""
    if cert_file is not None and key_file is not None:
        return cert_file, key_file
    cert, key = data_dir / SELF_SIGNED_CERT, data_dir / SELF_SIGNED_KEY
    if cert.exists() and key.exists():
        return cert, key
    data_dir.mkdir(parents=True, exist_ok=True)
    # Several processes may start at once: one generates, the others wait.
    with (data_dir / ".tls.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cert.exists() and key.exists()):
            tmp_cert, tmp_key = cert.with_suffix(".crt.tmp"), key.with_suffix(".key.tmp")
            generate_self_signed(tmp_cert, tmp_key)
            os.replace(tmp_key, key)
            os.replace(tmp_cert, cert)
    return cert, key


class DirectSSLObject(ssl.SSLObject):
    """An `ssl.SSLObject` whose `read`, `write` and `pending` are the C methods
    of the `_ssl` object it wraps, bound on the instance.

    uvloop's TLS layer calls them on every read (`pending`, `read`, `pending`)
    and every write of a connection, and `ssl.SSLObject`'s own methods only
    forward to them: each call was an interpreted frame entered from C, eight
    per PostgreSQL round trip through the gateway. Bound this way they are
    plain C calls, with the same arguments, results and exceptions (the one
    difference: `read` needs its size; uvloop and asyncio always pass one).
    """

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> DirectSSLObject:
        created: DirectSSLObject = super()._create(*args, **kwargs)  # type: ignore[misc]
        inner = getattr(created, "_sslobj", None)
        if inner is not None:  # else a Python without it: the standard methods serve
            # Instance attributes take precedence over the class's methods.
            vars(created).update(read=inner.read, write=inner.write, pending=inner.pending)
        return created


def _direct(ctx: ssl.SSLContext) -> ssl.SSLContext:
    # `wrap_bio` makes its objects with the class's private `_create`; a
    # Python without it keeps the standard class (tests/test_tls.py notices).
    if callable(getattr(ssl.SSLObject, "_create", None)):
        ctx.sslobject_class = DirectSSLObject
    return ctx


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = _direct(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    # No TLS 1.3 session tickets (nor TLS 1.2 ones): database clients do not
    # resume sessions, so tickets would only cost every handshake two more
    # encrypted messages. PostgreSQL disables them too.
    ctx.num_tickets = 0
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


@functools.lru_cache(maxsize=64)
def backend_context(mode: str, ca_file: Path | None) -> ssl.SSLContext:
    """An SSL context for the backend with libpq's sslmode semantics.

    Cached: building one (and loading its CA file) per connection costs more
    than the handshake's own Python work. A changed CA file needs a restart.
    """
    ctx = _direct(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode in ("verify-ca", "verify-full"):
        if ca_file is not None:
            ctx.load_verify_locations(ca_file)
        else:
            ctx.load_default_certs()
        ctx.check_hostname = mode == "verify-full"
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
