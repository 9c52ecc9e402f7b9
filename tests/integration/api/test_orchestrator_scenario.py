"""The seed's whole README scenario over gRPC, and rehydration across a server restart.

Every call goes through the generated stubs to a real server: an in-process
`Server` for the scenario, two `python -m flou_grpc serve` processes, one
after the other on the same SQLite file, for the restart.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb
from flou_grpc._proto.flou.v1 import flou_service_pb2_grpc
from flou_grpc.config import Settings
from flou_grpc.service.server import Server
from tests.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[3]
MACHINES = "tests.integration.api.orchestrator_machines"
SHOP = "e_commerce_orchestrator"
CUSTOM = "custom_name_orchestrator"
LOGISTICS = "logistics_orchestrator"
DURABLE = "durable_shop"


@pytest.fixture
async def stub(sqlite_url):
    settings = Settings(
        port=0,
        database_url=sqlite_url,
        app=("tests.unit.orchestrator.machines", MACHINES),
        shutdown_grace_seconds=1,
    )
    async with (
        Server(settings) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield flou_service_pb2_grpc.FlouServiceStub(channel)


def machines(instance: Any) -> dict[str, Any]:
    """The instance's `{"orchestrator": {"machines": ...}}`, as plain JSON."""
    return json_format.MessageToDict(instance.state)["orchestrator"]["machines"]


def configurations(instance: Any) -> dict[str, list[str]]:
    return {name: m["configuration"] for name, m in machines(instance).items()}


def payload(**values: Any) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


async def send(stub, instance_id: str, machine: str, event: str, **values: Any) -> Any:
    answer = await stub.Transition(
        pb.TransitionRequest(
            instance_id=instance_id, label=event, namespace=machine, payload=payload(**values)
        ),
        timeout=10,
    )
    return answer.instance


async def start(stub, machine: str, instance_id: str) -> Any:
    answer = await stub.Start(
        pb.StartRequest(machine=machine, instance_id=instance_id), timeout=10
    )
    return answer.instance


# --- the README: order + payment --------------------------------------------------------


async def test_readme_order_and_payment_from_pending_to_delivered(stub):
    started = await start(stub, SHOP, "shop-1")
    assert configurations(started) == {"order": ["pending"], "payment": ["unpaid"]}

    processed = await send(stub, "shop-1", "order", "process")
    # after_process(self, orc): orc.payment.authorize(), committed in the same step
    assert configurations(processed) == {"order": ["processing"], "payment": ["authorized"]}
    assert processed.revision == started.revision + 1

    await send(stub, "shop-1", "order", "ship")
    captured = await send(stub, "shop-1", "payment", "capture")
    delivered = await send(stub, "shop-1", "order", "deliver")
    assert configurations(delivered) == {"order": ["delivered"], "payment": ["captured"]}
    assert f"{SHOP}.order" not in delivered.active_states  # a final state ends the machine
    assert f"{SHOP}.payment.captured" in delivered.active_states
    assert delivered.revision == captured.revision + 1

    got = (
        await stub.GetInstance(pb.GetInstanceRequest(instance_id="shop-1"), timeout=10)
    ).instance
    assert configurations(got) == configurations(delivered)


async def test_readme_after_process_refused_by_payment_rolls_back_the_order(stub):
    await start(stub, SHOP, "shop-2")
    await send(stub, "shop-2", "payment", "fail")
    before = (await stub.GetInstance(pb.GetInstanceRequest(instance_id="shop-2"))).instance

    with pytest.raises(grpc.aio.AioRpcError) as caught:  # after_process: authorize from failed
        await send(stub, "shop-2", "order", "process")
    after = (await stub.GetInstance(pb.GetInstanceRequest(instance_id="shop-2"))).instance

    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "TransitionNotAllowed" in caught.value.details()  # raised by orc.payment.authorize()
    assert "Failed" in caught.value.details()
    assert configurations(after) == {"order": ["pending"], "payment": ["failed"]}
    assert after.state == before.state  # the order's move was rolled back with it


async def test_readme_a_refused_event_changes_nothing(stub):
    started = await start(stub, SHOP, "shop-3")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(stub, "shop-3", "order", "deliver")
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "order" in caught.value.details() or "deliver" in caught.value.details()
    after = (await stub.GetInstance(pb.GetInstanceRequest(instance_id="shop-3"))).instance
    assert configurations(after) == configurations(started)


# --- the README: custom orchestrator name, the payment captured on processing -----------


async def test_readme_coordinator_captures_an_authorized_payment_when_processing(stub):
    await start(stub, CUSTOM, "custom-1")
    await send(stub, "custom-1", "payment", "authorize")
    processed = await send(stub, "custom-1", "order", "process")
    assert configurations(processed) == {"order": ["processing"], "payment": ["captured"]}

    completed = await send(stub, "custom-1", "order", "complete")
    assert configurations(completed) == {"order": ["done"], "payment": ["captured"]}


async def test_readme_coordinator_leaves_an_unpaid_payment_alone(stub):
    await start(stub, CUSTOM, "custom-2")
    processed = await send(stub, "custom-2", "order", "process")
    assert configurations(processed) == {"order": ["processing"], "payment": ["unpaid"]}


async def test_coordinator_is_injected_with_the_event_payload(stub):
    await start(stub, LOGISTICS, "log-1")
    added = await send(stub, "log-1", "billing", "add", amount=5)
    assert machines(added)["billing"]["model"] == {"total": 5, "lines": ["+5"]}

    closed = await send(stub, "log-1", "billing", "close")  # before_close: coordinator.shipment
    assert configurations(closed)["billing"] == ["closed"]
    assert set(configurations(closed)["shipment"]) == {"shipping", "packing"}


# --- rehydration across a server restart ---------------------------------------------------


@pytest.fixture
def serve() -> Iterator[Any]:
    """Starts `flou-grpc serve` processes; stops with SIGTERM, kills any left at the end."""
    started: list[ServerProcess] = []

    def run(url: str) -> tuple[subprocess.Popen[str], int]:
        server = ServerProcess(url, app=(MACHINES,), env={"FLOU_SHUTDOWN_GRACE": "1"}).start()
        started.append(server)
        assert server.process is not None
        return server.process, server.port

    yield run
    for server in started:
        server.kill()


def _call(port: int, method: str, request: Any) -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return getattr(flou_service_pb2_grpc.FlouServiceStub(channel), method)(request, timeout=10)


def _transition(port: int, instance_id: str, machine: str, event: str) -> Any:
    request = pb.TransitionRequest(instance_id=instance_id, label=event, namespace=machine)
    return _call(port, "Transition", request).instance


def test_an_instance_continues_in_a_new_server_process_without_reentering(serve, tmp_path):
    url = f"sqlite:///{tmp_path / 'flou.db'}"
    first, port = serve(url)
    _call(port, "Start", pb.StartRequest(machine=DURABLE, instance_id="d-1"))
    halfway = _transition(port, "d-1", "order", "process")
    assert configurations(halfway) == {"order": ["processing"], "payment": ["authorized"]}
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=15) == 0

    second, port = serve(url)
    assert second.pid != first.pid
    restored = _call(port, "GetInstance", pb.GetInstanceRequest(instance_id="d-1")).instance
    assert configurations(restored) == configurations(halfway)
    assert restored.revision == halfway.revision

    _transition(port, "d-1", "order", "ship")
    _transition(port, "d-1", "payment", "capture")
    done = _transition(port, "d-1", "order", "deliver")

    assert configurations(done) == {"order": ["delivered"], "payment": ["captured"]}
    # Each state entered once, across both processes: restoring ran no entry action.
    assert machines(done)["order"]["model"]["entries"] == {
        "pending": 1,
        "processing": 1,
        "shipped": 1,
        "delivered": 1,
    }
    assert machines(done)["payment"]["model"]["entries"] == {
        "unpaid": 1,
        "authorized": 1,
        "captured": 1,
    }
    history = _call(port, "GetHistory", pb.GetHistoryRequest(instance_id="d-1"))
    assert len(history.events) == 5  # started, then 4 events
