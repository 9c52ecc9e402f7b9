"""TLS and mutual TLS, end to end: certificates made by openssl, a real server process."""

from __future__ import annotations

import shutil
from pathlib import Path

import flou_client
import pytest
from flou_client import FlouClient, RetryPolicy

from tests.certificates import make_pki, mtls_env
from tests.integration.cli.conftest import run_in_process
from tests.server_process import ServerProcess

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_server(certificates: Path, tmp_path_factory: pytest.TempPathFactory):
    env = mtls_env(certificates)
    process = ServerProcess(tmp_path_factory.mktemp("tls") / "flou.db", env=env).start()
    yield process
    process.stop()


def _client(server: ServerProcess, certificates: Path, *, with_cert: bool) -> FlouClient:
    return FlouClient(
        server.address,
        root_certificates=certificates / "ca.pem",
        client_cert=certificates / "client.pem" if with_cert else None,
        client_key=(certificates / "client.key").read_bytes() if with_cert else None,
        timeout=5,
        retry=RetryPolicy(max_attempts=1),
    )


def test_mutual_tls_with_a_client_certificate(mtls_server, certificates):
    with _client(mtls_server, certificates, with_cert=True) as client:
        instance = client.start("linear", wait="settled")
        assert instance.machine == "linear"


def test_mutual_tls_refuses_a_client_without_certificate(mtls_server, certificates):
    client = _client(mtls_server, certificates, with_cert=False)
    with client, pytest.raises(flou_client.UnavailableError):
        client.list_machines()


def test_plaintext_client_cannot_talk_to_a_tls_server(mtls_server):
    client = FlouClient(mtls_server.address, timeout=5, retry=RetryPolicy(max_attempts=1))
    with client, pytest.raises(flou_client.UnavailableError):
        client.list_machines()


def test_cli_connects_with_ca_cert_and_key(mtls_server, certificates):
    ok = run_in_process(
        mtls_server.address,
        "machines",
        "--ca",
        str(certificates / "ca.pem"),
        "--cert",
        str(certificates / "client.pem"),
        "--key",
        str(certificates / "client.key"),
    )
    assert ok.returncode == 0, ok.stderr
    assert "linear" in ok.stdout
    refused = run_in_process(
        mtls_server.address, "machines", "--ca", str(certificates / "ca.pem"), "--timeout", "2"
    )
    assert refused.returncode == 3
