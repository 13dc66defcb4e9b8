"""The gateway's side of a backend connection's startup and authentication.

Sans-IO: feed it each message the server sends during startup; it returns
the bytes to answer with, and collects ParameterStatus and BackendKeyData
until ReadyForQuery. Every auth method a server asks for is handled: trust,
cleartext, md5 and SCRAM-SHA-256 (see scram.py).
"""

from __future__ import annotations

import hashlib

from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.errors import RemoteProtocolError
from sluice.protocols.postgres.framing import frame
from sluice.protocols.postgres.messages import BackendKeyData
from sluice.protocols.postgres.scram import ScramClient, ScramError


class BackendAuthError(RemoteProtocolError):
    """The backend refused us, or asked for something we cannot do."""

    sqlstate = "08001"

    def __init__(self, message: str, *, fields: dict[str, str] | None = None):
        super().__init__(message)
        self.fields = fields or {}


def md5_password(user: str, password: str, salt: bytes) -> str:
    """PostgreSQL's md5 response: 'md5' + md5(md5(password + user) + salt)."""
    inner = hashlib.md5((password + user).encode(), usedforsecurity=False).hexdigest()
    outer = hashlib.md5(inner.encode() + salt, usedforsecurity=False).hexdigest()
    return "md5" + outer


class BackendHandshake:
    """State of one backend connection from StartupMessage to ReadyForQuery."""

    def __init__(self, *, user: str, password: str | None, parameters: dict[str, str]):
        self.user = user
        self._password = password
        self.startup = m.encode_startup({"user": user, **parameters})
        self.parameters: dict[str, str] = {}
        self.key: BackendKeyData | None = None
        self.notices: list[bytes] = []
        self.transaction_status = "I"
        self.done = False
        self.auth_method = "trust"
        self._scram: ScramClient | None = None
        self._scram_verified = False

    def _need_password(self, method: str) -> str:
        if self._password is None:
            raise BackendAuthError(
                f"the backend asks for {method} authentication but the connection "
                "has no password configured"
            )
        return self._password

    def handle(self, kind: int, body: bytes) -> bytes:
        """Process one server message; return what to send back (maybe nothing)."""
        if self.done:
            raise RemoteProtocolError("message after ReadyForQuery in handshake")
        if kind == m.AUTHENTICATION:
            return self._auth(m.decode_authentication(body))
        if kind == m.PARAMETER_STATUS:
            name, value = m.decode_parameter_status(body)
            self.parameters[name] = value
            return b""
        if kind == m.BACKEND_KEY_DATA:
            self.key = m.decode_backend_key(body)
            return b""
        if kind == m.NOTICE_RESPONSE:
            self.notices.append(frame(b"N", body))
            return b""
        if kind == m.READY_FOR_QUERY:
            self.transaction_status = body.decode("ascii", "replace")
            self.done = True
            return b""
        if kind == m.ERROR_RESPONSE:
            fields = m.decode_fields(body)
            raise BackendAuthError(
                f"the backend refused the connection: {fields.get('M', 'no message')}",
                fields=fields,
            )
        if kind == m.NEGOTIATE_PROTOCOL_VERSION:
            return b""
        raise RemoteProtocolError(f"unexpected message {chr(kind)!r} during backend startup")

    def _auth(self, req: m.AuthenticationRequest) -> bytes:
        if req.code == m.AUTH_OK:
            if self._scram is not None and not self._scram_verified:
                # SCRAM is mutual: without the server's signature we have not
                # checked that the backend knows the password.
                raise BackendAuthError(
                    "the backend ended SCRAM authentication without proving it knows "
                    "the password (no SASLFinal)"
                )
            return b""
        if req.code == m.AUTH_CLEARTEXT:
            self.auth_method = "password"
            return m.encode_password(self._need_password("password"))
        if req.code == m.AUTH_MD5:
            if len(req.payload) != 4:
                raise RemoteProtocolError("md5 salt must be 4 bytes")
            self.auth_method = "md5"
            return m.encode_password(
                md5_password(self.user, self._need_password("md5"), req.payload)
            )
        if req.code == m.AUTH_SASL:
            mechanisms = m.decode_sasl_mechanisms(req.payload)
            if "SCRAM-SHA-256" not in mechanisms:
                raise BackendAuthError(
                    f"the backend offers SASL mechanisms {mechanisms}; "
                    "the gateway supports SCRAM-SHA-256"
                )
            self.auth_method = "scram-sha-256"
            self._scram = ScramClient(password=self._need_password("SCRAM-SHA-256"), user=self.user)
            return m.encode_sasl_initial("SCRAM-SHA-256", self._scram.first_message())
        if req.code == m.AUTH_SASL_CONTINUE:
            if self._scram is None:
                raise RemoteProtocolError("SASLContinue before SASL")
            try:
                final = self._scram.final_message(req.payload)
            except ScramError as exc:
                raise BackendAuthError(f"SCRAM exchange with the backend failed: {exc}") from exc
            return m.encode_sasl_response(final)
        if req.code == m.AUTH_SASL_FINAL:
            if self._scram is None:
                raise RemoteProtocolError("SASLFinal before SASL")
            try:
                self._scram.verify_server_final(req.payload)
            except ScramError as exc:
                raise BackendAuthError(
                    f"the backend's SCRAM signature did not verify: {exc}"
                ) from exc
            self._scram_verified = True
            return b""
        raise BackendAuthError(
            f"the backend asks for authentication method {req.code}, which the gateway "
            "does not support (use trust, password, md5 or scram-sha-256)"
        )
