"""The client's error classes agree with the server's error table, reason by reason.

Every concrete error of `flou_grpc.errors` goes through the server's own status
table (`flou_grpc.service.status`) into a `google.rpc.Status`, and the client
must turn that status back into its class of the same name, reason, code and
metadata.
"""

from __future__ import annotations

import flou_client
import grpc
import pytest
from flou_client.errors import from_status

from flou_grpc import errors as server_errors
from flou_grpc.service import status as server_status


def _concrete(cls: type[server_errors.FlouError]) -> list[type[server_errors.FlouError]]:
    found = [cls] if cls.reason else []
    for sub in cls.__subclasses__():
        found += _concrete(sub)
    return found


REASONS = _concrete(server_errors.FlouError)


def test_every_reason_of_the_server_is_known():
    assert len(REASONS) == 23


@pytest.mark.parametrize("server_class", REASONS, ids=lambda c: c.reason)
def test_server_error_becomes_the_client_class_of_the_same_name(server_class):
    metadata = {"instanceId": "i-1", "field": "label", "description": "bad"}
    error = server_errors.FlouError.from_info(server_class.reason, "it failed", metadata)
    proto = server_status.to_status_proto(error)
    code = next(c for c in grpc.StatusCode if c.value[0] == proto.code)
    client_error = from_status(code, "", proto)
    assert type(client_error).__name__ == server_class.__name__
    assert isinstance(client_error, flou_client.FlouError)
    assert client_error.code is code
    assert client_error.reason == server_class.reason
    assert client_error.message == "it failed"
    assert client_error.metadata == metadata
    assert client_error.domain == "flou.v1"
