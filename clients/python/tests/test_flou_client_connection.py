"""Connection options: token metadata, TLS credentials, channel options."""

from __future__ import annotations

import pytest
from flou_client.connection import CHANNEL_OPTIONS, Connection


def test_token_is_sent_as_bearer_metadata():
    assert Connection("h:1", token="s3cret").metadata() == (("authorization", "Bearer s3cret"),)
    assert Connection("h:1").metadata() == ()


def test_plaintext_unless_tls_or_a_pem_is_given(tmp_path):
    assert Connection("h:1").credentials() is None
    assert Connection("h:1", tls=True).secure
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    assert Connection("h:1", root_certificates=ca).secure
    with pytest.raises(FileNotFoundError):
        Connection("h:1", root_certificates=tmp_path / "missing.pem").credentials()


def test_client_certificate_needs_its_key():
    with pytest.raises(ValueError, match="together"):
        Connection("h:1", client_cert=b"cert")


def test_callers_options_replace_the_clients_own():
    options = Connection("h:1", options=[("grpc.max_reconnect_backoff_ms", 50)]).channel_options()
    assert ("grpc.max_reconnect_backoff_ms", 50) in options
    assert [name for name, _ in options].count("grpc.max_reconnect_backoff_ms") == 1
    assert len(options) == len(CHANNEL_OPTIONS)
