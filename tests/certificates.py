"""A throwaway PKI made by openssl, for the TLS and mutual-TLS tests of every client.

`make_pki(directory)` writes there a CA (`ca.pem`, `ca.key`), a server
certificate for 127.0.0.1 and localhost (`server.pem`, `server.key`) and a
client certificate (`client.pem`, `client.key`), each valid for a day;
`mtls_env(directory)` is the server's FLOU_TLS_* configuration for them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _issue(name: str, extensions: str, cwd: Path) -> None:
    """`name.key` and `name.pem`, signed by the CA of `cwd`."""
    _openssl(
        "req", *_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=cwd,
    )  # fmt: skip
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext",
        cwd=cwd,
    )  # fmt: skip


def make_pki(directory: Path) -> Path:
    """The CA, server and client certificates, written into `directory` (returned)."""
    _openssl(
        "req", "-x509", *_KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=test-ca",
        cwd=directory,
    )  # fmt: skip
    _issue("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n", directory)
    _issue("client", "extendedKeyUsage=clientAuth\n", directory)
    return directory


def mtls_env(pki: Path) -> dict[str, str]:
    """A server's configuration for mutual TLS with the certificates of `pki`."""
    return {
        "FLOU_TLS_CERT": str(pki / "server.pem"),
        "FLOU_TLS_KEY": str(pki / "server.key"),
        "FLOU_TLS_CLIENT_CA": str(pki / "ca.pem"),
    }
