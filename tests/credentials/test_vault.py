"""The credential vault: encryption at rest, the master key, credential references."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from sluice.config import EnvCredential, FileCredential, StoredCredential
from sluice.credentials.vault import MASTER_KEY_ENV, MASTER_KEY_FILE, Vault, resolve_credential
from sluice.errors import CredentialError
from sluice.store.db import Store

SECRET = "correct-horse-battery-staple"


def test_encrypt_decrypt_roundtrip() -> None:
    vault = Vault(Fernet.generate_key())
    token = vault.encrypt(SECRET)
    assert SECRET.encode() not in token
    assert vault.decrypt(token) == SECRET
    assert vault.encrypt(SECRET) != token  # a fresh IV each time
    assert vault.decrypt(vault.encrypt("é ü 😀")) == "é ü 😀"


def test_decrypt_with_another_key_fails_clearly() -> None:
    token = Vault(Fernet.generate_key()).encrypt(SECRET)
    with pytest.raises(CredentialError, match="cannot be decrypted with this master key") as info:
        Vault(Fernet.generate_key()).decrypt(token)
    assert info.value.hint is not None
    assert MASTER_KEY_ENV in info.value.hint


def test_decrypt_garbage_fails_clearly() -> None:
    with pytest.raises(CredentialError):
        Vault(Fernet.generate_key()).decrypt(b"not a fernet token")


@pytest.mark.parametrize("key", [b"", b"short", b"x" * 44])
def test_invalid_master_key(key: bytes) -> None:
    with pytest.raises(CredentialError, match="not a valid Fernet key") as info:
        Vault(key)
    assert "sluice credentials keygen" in (info.value.hint or "")


def test_master_key_file_created_0600_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    vault = Vault.open(data_dir, environ={})
    key_file = data_dir / MASTER_KEY_FILE
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = vault.encrypt(SECRET)
    again = Vault.open(data_dir, environ={})
    assert again.decrypt(token) == SECRET
    Fernet(key_file.read_bytes().strip())  # a valid key


def test_master_key_from_environment_wins(tmp_path: Path) -> None:
    key = Fernet.generate_key()
    vault = Vault.open(tmp_path / "data", environ={MASTER_KEY_ENV: key.decode()})
    assert not (tmp_path / "data" / MASTER_KEY_FILE).exists()
    assert Vault(key).decrypt(vault.encrypt(SECRET)) == SECRET


def test_master_key_from_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key()
    monkeypatch.setenv(MASTER_KEY_ENV, key.decode())
    assert Vault(key).decrypt(Vault.open(tmp_path).encrypt(SECRET)) == SECRET


def test_corrupt_master_key_file(tmp_path: Path) -> None:
    (tmp_path / MASTER_KEY_FILE).write_text("garbage\n")
    with pytest.raises(CredentialError, match="not a valid Fernet key"):
        Vault.open(tmp_path, environ={})


def test_stored_credentials_are_encrypted_in_the_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = Store(f"sqlite:///{data_dir / 'sluice.db'}")
    store.migrate()
    vault = Vault.open(data_dir, environ={})
    store.put_credential("prod", vault.encrypt(SECRET))
    ciphertext = store.get_credential("prod")
    assert ciphertext is not None
    store.close()
    raw = b"".join(p.read_bytes() for p in data_dir.glob("sluice.db*"))
    assert ciphertext in raw
    assert SECRET.encode() not in raw
    assert Vault.open(data_dir, environ={}).decrypt(ciphertext) == SECRET
    with pytest.raises(CredentialError):
        Vault(Fernet.generate_key()).decrypt(ciphertext)


def _no_store(name: str) -> str:
    raise AssertionError(f"unexpected stored lookup of {name}")


def test_resolve_none() -> None:
    assert resolve_credential(None, load_stored=_no_store, environ={}) is None


def test_resolve_env() -> None:
    ref = EnvCredential(env="PG_PASSWORD")
    assert resolve_credential(ref, load_stored=_no_store, environ={"PG_PASSWORD": "pw"}) == "pw"
    assert resolve_credential(ref, load_stored=_no_store, environ={"PG_PASSWORD": ""}) == ""


def test_resolve_missing_env_var() -> None:
    with pytest.raises(CredentialError, match=r"read from \$PG_PASSWORD, which is not set") as info:
        resolve_credential(EnvCredential(env="PG_PASSWORD"), load_stored=_no_store, environ={})
    assert info.value.hint == "export PG_PASSWORD=... in the gateway's environment"


def test_resolve_env_from_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_TEST_PG_PASSWORD", "from-os")
    ref = EnvCredential(env="SLUICE_TEST_PG_PASSWORD")
    assert resolve_credential(ref, load_stored=_no_store) == "from-os"


@pytest.mark.parametrize(
    ("content", "expected"),
    [("pw\n", "pw"), ("  pw  \nsecond line\n", "pw"), ("pw", "pw"), ("", ""), ("\n", "")],
)
def test_resolve_file(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "secret"
    path.write_text(content)
    ref = FileCredential(file=path)
    assert resolve_credential(ref, load_stored=_no_store, environ={}) == expected


def test_resolve_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(CredentialError, match="cannot read the backend password file") as info:
        resolve_credential(FileCredential(file=path), load_stored=_no_store, environ={})
    assert str(path) in str(info.value)


def test_resolve_stored() -> None:
    seen: list[str] = []

    def load(name: str) -> str:
        seen.append(name)
        return "from-store"

    ref = StoredCredential(stored="prod")
    assert resolve_credential(ref, load_stored=load, environ={}) == "from-store"
    assert seen == ["prod"]


def test_resolve_stored_error_propagates() -> None:
    def load(name: str) -> str:
        raise CredentialError(f"no stored credential {name!r}")

    with pytest.raises(CredentialError, match="no stored credential 'prod'"):
        resolve_credential(StoredCredential(stored="prod"), load_stored=load, environ={})
