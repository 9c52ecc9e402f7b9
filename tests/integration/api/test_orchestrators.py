"""Orchestrators over gRPC: the seed's order + payment driven, watched and described."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_status import rpc_status

from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb
from flou_grpc._proto.flou.v1 import flou_service_pb2_grpc, machine_pb2
from flou_grpc.config import Settings
from flou_grpc.service.server import Server

SHOP = "e_commerce_orchestrator"


@pytest.fixture
async def stub(sqlite_url):
    settings = Settings(
        port=0,
        database_url=sqlite_url,
        app=("tests.unit.orchestrator.machines", "tests.ltms.flat"),
        shutdown_grace_seconds=1,
    )
    async with (
        Server(settings) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield flou_service_pb2_grpc.FlouServiceStub(channel)


async def test_an_orchestrator_and_an_ltm_are_served_side_by_side(stub):
    listed = await stub.ListMachines(pb.ListMachinesRequest(), timeout=5)
    kinds = {m.name: m.kind for m in listed.machines}
    assert kinds[SHOP] == machine_pb2.MACHINE_KIND_ORCHESTRATOR
    assert kinds["linear"] == machine_pb2.MACHINE_KIND_LTM


async def test_describe_shows_every_machine_its_states_and_transitions(stub):
    described = (await stub.DescribeMachine(pb.DescribeMachineRequest(machine=SHOP))).machine
    root = described.root
    assert root.kind == machine_pb2.NODE_KIND_ORCHESTRATOR
    machines = {child.name: child for child in root.children}
    assert set(machines) == {"order", "payment"}
    order = machines["order"]
    assert list(order.init) == ["pending"]
    assert {(t.label, tuple(t.sources), tuple(t.targets)) for t in order.transitions} >= {
        ("process", ("pending",), ("processing",)),
        ("ship", ("processing",), ("shipped",)),
    }
    assert {c.name: c.final for c in order.children}["delivered"] is True


async def test_start_transition_and_watch_an_orchestrated_instance(stub):
    await stub.Start(pb.StartRequest(machine=SHOP, instance_id="o-1"), timeout=5)
    watch = stub.Watch(pb.WatchRequest(instance_id="o-1"))
    snapshot = await watch.read()
    assert snapshot.snapshot.revision == 1

    answer = await stub.Transition(
        pb.TransitionRequest(instance_id="o-1", label="process", namespace="order"), timeout=5
    )
    event = await asyncio.wait_for(watch.read(), 5)
    watch.cancel()

    assert [f.label for f in answer.fired] == ["process"]
    assert f"{SHOP}.payment.authorized" in answer.instance.active_states
    assert event.event.revision == 2
    assert {op["path"] for op in event.event.patch} >= {"/orchestrator/machines/payment"}


async def test_a_refused_event_is_failed_precondition_naming_the_machine(stub):
    await stub.Start(pb.StartRequest(machine=SHOP, instance_id="o-2"), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Transition(
            pb.TransitionRequest(instance_id="o-2", label="ship", namespace="order"), timeout=5
        )
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(caught.value)
    assert status is not None
    assert b"ERROR_REASON_TRANSITION_NOT_ALLOWED" in status.details[0].value
    assert b"order" in status.details[0].value
