"""A client on another host: tokens only over TLS.

The other host is a network namespace the test creates (veth pair on a
private /30), so the gateway sees a real non-loopback peer address.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.devservers.postgres import ThrowawayPostgres
from tests.conftest import base_config
from tests.helpers import GatewayThread

HOST_ADDR = "10.231.7.1"
PEER_ADDR = "10.231.7.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create a network namespace")
    name = f"sluice-{uuid.uuid4().hex[:6]}"
    host_if, peer_if = f"vh{name[-6:]}", f"vp{name[-6:]}"
    try:
        _ip("netns", "add", name)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", name)
        _ip("addr", "add", f"{HOST_ADDR}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", name, "addr", "add", f"{PEER_ADDR}/30", "dev", peer_if)
        _ip("-n", name, "link", "set", peer_if, "up")
        _ip("-n", name, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as exc:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        pytest.skip(f"cannot create a network namespace here: {exc.stderr!r}")
    yield name
    subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def remote_gateway(
    pg: ThrowawayPostgres, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    data_dir: Path = tmp_path_factory.mktemp("remote")
    config = base_config(pg, data_dir, listen={"postgres": f"{HOST_ADDR}:0"})
    thread = GatewayThread(config).start()
    yield thread
    thread.stop()


def psql_from_peer(namespace: str, dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            namespace,
            "psql",
            "-X",
            "-A",
            "-t",
            dsn,
            "-c",
            "SELECT inet_client_addr() IS NOT NULL",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_plaintext_token_from_another_host_is_refused(
    remote_gateway: GatewayThread, namespace: str
) -> None:
    token = remote_gateway.token()
    dsn = remote_gateway.dsn(token, sslmode="disable").replace("127.0.0.1", HOST_ADDR)
    result = psql_from_peer(namespace, dsn)
    assert result.returncode != 0
    assert "accepts tokens only over TLS" in result.stderr
    assert "sslmode=require" in result.stderr


def test_tls_from_another_host_is_accepted(remote_gateway: GatewayThread, namespace: str) -> None:
    token = remote_gateway.token()
    dsn = remote_gateway.dsn(token, sslmode="require").replace("127.0.0.1", HOST_ADDR)
    result = psql_from_peer(namespace, dsn)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "t"
    assert remote_gateway.gateway is not None
    latest = remote_gateway.gateway.store.list_sessions(limit=1)[0]
    assert latest.client_addr.startswith(f"{PEER_ADDR}:")
