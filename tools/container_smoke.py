"""Drives the server of tools/container_check.sh from the host: health, Start, Watch, Transition.

    .venv/bin/python tools/container_smoke.py 127.0.0.1:PORT

Starts an order (examples/orders.py, served from the container), watches it, sends
`payment_authorized` to its payment branch and expects the Watch stream to carry the
resulting event. Exits non-zero, with the reason, on anything else.
"""

from __future__ import annotations

import sys
import uuid

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb
from flou_grpc._proto.flou.v1 import flou_service_pb2_grpc


def main(address: str) -> int:
    instance_id = f"order-{uuid.uuid4().hex[:8]}"
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
        print(f"host health check: {status}")
        flou = flou_service_pb2_grpc.FlouServiceStub(channel)
        started = flou.Start(
            pb.StartRequest(
                machine="order",
                instance_id=instance_id,
                payload={"items": [{"sku": "mug", "qty": 1}], "total": 3.5},
                wait=pb.WAIT_MODE_SETTLED,
            ),
            timeout=20,
        ).instance
        print(
            f"Start: {started.id} revision {started.revision}, "
            f"active {sorted(started.active_states)}"
        )
        watch = flou.Watch(pb.WatchRequest(instance_id=instance_id), timeout=30)
        first = next(watch)
        assert first.WhichOneof("kind") == "snapshot", first
        assert first.snapshot.revision == started.revision, (first, started)
        print(f"Watch: snapshot at revision {first.snapshot.revision}")
        fired = flou.Transition(
            pb.TransitionRequest(
                instance_id=instance_id,
                label="payment_authorized",
                namespace="order.payment",
                payload={"authorization": "auth-1"},
            ),
            timeout=20,
        )
        print(f"Transition payment_authorized: {len(fired.fired)} fired")
        event = next(watch)
        while event.WhichOneof("kind") == "heartbeat":
            event = next(watch)
        watch.cancel()
    assert event.event.instance_id == instance_id, event
    assert event.event.revision == started.revision + 1, (event, started)
    print(f"Watch: event at revision {event.event.revision} for {event.event.instance_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
