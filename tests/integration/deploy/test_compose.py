"""Two server processes configured exactly as compose.yaml configures its replicas.

The replicas' environment is read from compose.yaml itself (only what cannot
hold outside a container changes: the database is the test's PostgreSQL, the
ports are free ones), the one-shot migration runs first with its own command,
then an order is driven through replica a and watched through replica b.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb
from flou_grpc._proto.flou.v1 import flou_service_pb2_grpc
from tests.server_process import ServerProcess

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[3]
_LISTENING = re.compile(r"flou-grpc listening on 127\.0\.0\.1:(\d+)")


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def _replica_env(service: str, database_url: str) -> dict[str, str]:
    env = {
        key: str(value) for key, value in _compose()["services"][service]["environment"].items()
    }
    # What a container gives and a test cannot: its own network namespace and database host.
    env |= {"FLOU_DATABASE_URL": database_url, "FLOU_HOST": "127.0.0.1", "FLOU_PORT": "0"}
    env["FLOU_METRICS_PORT"] = "0"
    return env


@contextmanager
def _replica(env: dict[str, str]) -> Iterator[int]:
    """A server configured by the replica's environment alone, as its container is."""
    # cwd is the repository: the compose working_dir, /app, holds the mounted examples/.
    server = ServerProcess(None, app=None, env=env).start()
    try:
        yield server.port
    finally:
        assert server.stop(timeout=30) == 0  # SIGTERM: a graceful stop


def test_the_compose_services_are_what_the_readme_says():
    services = _compose()["services"]
    assert set(services) == {"postgres", "migrate", "flou-a", "flou-b"}
    assert services["migrate"]["command"] == ["db", "upgrade"]
    for replica in ("flou-a", "flou-b"):
        env = services[replica]["environment"]
        assert env["FLOU_DATABASE_URL"] == services["migrate"]["environment"]["FLOU_DATABASE_URL"]
        assert services[replica]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )


def test_replicas_configured_as_compose_share_instances(postgres_url):
    migrate_env = {
        k: str(v)
        for k, v in _compose()["services"]["migrate"]["environment"].items()
        if k != "FLOU_DATABASE_URL"
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOU_")}
    migrated = subprocess.run(
        [sys.executable, "-m", "flou_grpc", *_compose()["services"]["migrate"]["command"]],
        cwd=ROOT,
        env={**clean, **migrate_env, "FLOU_DATABASE_URL": postgres_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr

    with (
        _replica(_replica_env("flou-a", postgres_url)) as port_a,
        _replica(_replica_env("flou-b", postgres_url)) as port_b,
        grpc.insecure_channel(f"127.0.0.1:{port_a}") as channel_a,
        grpc.insecure_channel(f"127.0.0.1:{port_b}") as channel_b,
    ):
        a = flou_service_pb2_grpc.FlouServiceStub(channel_a)
        b = flou_service_pb2_grpc.FlouServiceStub(channel_b)
        started = a.Start(
            pb.StartRequest(
                machine="order",
                instance_id="order-c",
                payload={"items": [{"sku": "mug", "qty": 1}], "total": 3.5},
                wait=3,
            ),
            timeout=20,
        ).instance
        watch = b.Watch(pb.WatchRequest(instance_id="order-c"), timeout=30)
        first = next(watch)
        assert first.snapshot.revision == started.revision

        a.Transition(
            pb.TransitionRequest(
                instance_id="order-c",
                label="payment_authorized",
                namespace="order.payment",
                payload={"authorization": "auth-1"},
            ),
            timeout=20,
        )
        event = next(watch)
        watch.cancel()

    assert event.event.revision == started.revision + 1
    assert event.event.instance_id == "order-c"
