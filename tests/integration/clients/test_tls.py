"""TLS and mutual TLS, end to end: certificates made by openssl, a real server process."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import flou_client
import pytest
from flou_client import FlouClient, RetryPolicy

from tests.integration.cli.conftest import run_in_process
from tests.server_process import ServerProcess

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _issue(name: str, extensions: str, cwd: Path) -> None:
    """`name.key` and `name.pem`, signed by the CA of `cwd`."""
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
        cwd=cwd,
    )
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "1",
        "-extfile",
        f"{name}.ext",
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        cwd=where,
    )
    _issue("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n", where)
    _issue("client", "extendedKeyUsage=clientAuth\n", where)
    return where


@pytest.fixture(scope="module")
def mtls_server(certificates: Path, tmp_path_factory: pytest.TempPathFactory):
    env = {
        "FLOU_TLS_CERT": str(certificates / "server.pem"),
        "FLOU_TLS_KEY": str(certificates / "server.key"),
        "FLOU_TLS_CLIENT_CA": str(certificates / "ca.pem"),
    }
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
