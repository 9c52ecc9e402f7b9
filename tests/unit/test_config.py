from __future__ import annotations

import pytest

from flou_grpc.config import Settings


def test_defaults_listen_on_loopback():
    settings = Settings.from_env({})
    assert settings.address == "127.0.0.1:50051"
    assert settings.shutdown_grace_seconds == 10.0


def test_environment_overrides_defaults():
    settings = Settings.from_env(
        {
            "FLOU_HOST": "0.0.0.0",
            "FLOU_PORT": "0",
            "FLOU_SHUTDOWN_GRACE": "2.5",
            "FLOU_STORE_THREADS": "2",
        }
    )
    assert (settings.address, settings.shutdown_grace_seconds) == ("0.0.0.0:0", 2.5)
    assert (Settings.from_env({}).store_threads, settings.store_threads) == (4, 2)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FLOU_PORT": "http"}, "FLOU_PORT='http' is not a valid int"),
        ({"FLOU_PORT": "70000"}, r"FLOU_PORT='70000' is outside \[0, 65535\]"),
        ({"FLOU_SHUTDOWN_GRACE": "-1"}, "FLOU_SHUTDOWN_GRACE='-1' is outside"),
        ({"FLOU_STORE_THREADS": "0"}, r"FLOU_STORE_THREADS='0' is outside \[1, 64\]"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)
