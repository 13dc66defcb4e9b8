"""Encryption at rest for stored backend credentials, and credential references.

The master key is a Fernet key (AES-128-CBC + HMAC-SHA256) taken from
`SLUICE_MASTER_KEY`, or generated on first use into `<data_dir>/master.key`
with mode 0600. Losing the key makes stored credentials unreadable, by design.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from sluice.config import CredentialRef, EnvCredential, FileCredential, StoredCredential
from sluice.errors import CredentialError

MASTER_KEY_ENV = "SLUICE_MASTER_KEY"
MASTER_KEY_FILE = "master.key"


class Vault:
    """Encrypts and decrypts secrets with the master key."""

    def __init__(self, key: bytes):
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise CredentialError(
                "the master key is not a valid Fernet key",
                hint=f"generate one with `sluice credentials keygen` and set {MASTER_KEY_ENV}",
            ) from exc

    @classmethod
    def open(cls, data_dir: Path, environ: Mapping[str, str] | None = None) -> Vault:
        environ = os.environ if environ is None else environ
        if key := environ.get(MASTER_KEY_ENV):
            return cls(key.encode())
        path = data_dir / MASTER_KEY_FILE
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            # Write a private temporary file, then link it into place: another
            # process never sees a half-written key, and the first key wins.
            tmp = data_dir / f".{MASTER_KEY_FILE}.{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(Fernet.generate_key())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return cls(path.read_bytes().strip())

    def encrypt(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def decrypt(self, ciphertext: bytes) -> str:
        try:
            return self._fernet.decrypt(ciphertext).decode()
        except InvalidToken as exc:
            raise CredentialError(
                "a stored credential cannot be decrypted with this master key",
                hint=f"use the {MASTER_KEY_ENV} the credential was stored with, or set it again",
            ) from exc


def resolve_credential(
    ref: CredentialRef | None,
    *,
    load_stored: Callable[[str], str],
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Turn a credential reference into the secret, or raise CredentialError."""
    environ = os.environ if environ is None else environ
    match ref:
        case None:
            return None
        case EnvCredential(env=name):
            if name not in environ:
                raise CredentialError(
                    f"the backend password is read from ${name}, which is not set",
                    hint=f"export {name}=... in the gateway's environment",
                )
            return environ[name]
        case FileCredential(file=path):
            try:
                return path.read_text().splitlines()[0].strip() if path.stat().st_size else ""
            except (OSError, IndexError) as exc:
                raise CredentialError(f"cannot read the backend password file {path}") from exc
        case StoredCredential(stored=name):
            return load_stored(name)
    raise CredentialError("unknown credential reference")  # pragma: no cover
