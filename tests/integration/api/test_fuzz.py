"""Malformed input sent to one real server never fails INTERNAL or UNKNOWN, never kills it.

The server runs on an event loop of its own thread for the whole module, so that
hypothesis (which drives synchronous tests) can send one RPC per example with the
blocking stubs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flou_grpc._proto.flou.v1 import flou_service_pb2 as pb
from flou_grpc._proto.flou.v1 import flou_service_pb2_grpc
from flou_grpc.config import Limits, Settings
from flou_grpc.service.server import Server

T = 3
BROKEN = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
FUZZ_SETTINGS = settings(
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class ThreadedServer:
    """A `Server` on an event loop running in a thread of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-server")
        self.server: Server | None = None

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def start(self) -> int:
        self.thread.start()

        async def start() -> int:
            self.server = Server(self.settings)
            return await self.server.start()

        return self._run(start())

    def stop(self) -> None:
        try:
            if self.server is not None:
                self._run(self.server.stop(grace=1))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def fuzz_channel(tmp_path_factory) -> Iterator[grpc.Channel]:
    """One server for the whole module, with small limits, and a blocking channel to it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'flou.db'}"
    server = ThreadedServer(
        Settings(
            port=0,
            database_url=url,
            app=("tests.ltms.flat", "tests.ltms.nested", "tests.ltms.lanes"),
            shutdown_grace_seconds=1,
            heartbeat_seconds=0.1,
            limits=Limits(max_json_depth=10, max_payload_bytes=4096, max_params=4),
        )
    )
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = flou_service_pb2_grpc.FlouServiceStub(channel)
            for machine, instance_id in EXISTING:
                stub.Start(
                    pb.StartRequest(machine=machine, instance_id=instance_id, wait=3), timeout=T
                )
            yield channel
    finally:
        server.stop()


EXISTING = [("linear", "fz-linear"), ("hub_lanes", "fz-lanes"), ("self_loop", "fz-loop")]

# --- strategies ---------------------------------------------------------------------------

texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
words = st.one_of(
    texts,
    st.sampled_from(
        [
            "",
            " ",
            "linear",
            "self_loop",
            "hub_lanes",
            "shop",
            "fz-linear",
            "fz-lanes",
            "linear.a",
            "linear.zz",
            "go",
            "again",
            "spawn_{k}",
            "next_{k}",
            "{k}",
            "{",
            "a.b",
            "a..b",
            "_status",
            "runs",
            "x" * 129,
            "\x00",
            "é",
        ]
    ),
)
ids = st.one_of(st.sampled_from([i for _, i in EXISTING]), words)
int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)
revisions = st.one_of(st.integers(-3, 12), int64)
enums = st.one_of(st.integers(-2, 5), int32)
page_sizes = st.one_of(st.integers(-2, 1002), int32)


def nested(depth: int) -> Any:
    data: Any = {}
    for _ in range(depth - 1):
        data = {"a": data}
    return data


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**60), 2**60),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
json_values = st.one_of(
    st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(words, inner, max_size=4)
        ),
        max_leaves=12,
    ),
    st.integers(1, 28).map(nested),  # around the depth limit, up to what protobuf can build
    st.integers(1, 6000).map(lambda n: "x" * n),  # around the size limit
)
objects = st.dictionaries(words, json_values, max_size=4)


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(data)
    return message


def value(data: Any) -> struct_pb2.Value:
    return struct({"v": data}).fields["v"]


structs = objects.map(struct)
params = st.lists(
    st.one_of(
        st.dictionaries(st.sampled_from(["k", "n", "", "K"]), json_values, max_size=2),
        objects,
    ).map(struct),
    max_size=6,
)


def _decodes_to_object(token: str) -> bool:
    try:
        return isinstance(json.loads(base64.urlsafe_b64decode(token.encode())), dict)
    except (ValueError, binascii.Error):
        return False


tokens = st.one_of(
    texts,
    st.binary(max_size=30).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.sampled_from(["", "=", "e30", "W10=", "bnVsbA==", "!!!!"]),
).filter(lambda token: not _decodes_to_object(token))
durations = st.builds(
    duration_pb2.Duration,
    seconds=st.one_of(st.integers(-10, 10), st.integers(-315576000000, 315576000000)),
    nanos=st.integers(-999_999_999, 999_999_999),
)


def rpc(method: str, message: type) -> Any:
    """A builder of `(method, request)` from the request's fields."""
    return lambda **fields: (method, message(**fields))


requests = st.one_of(
    st.builds(
        rpc("Start", pb.StartRequest),
        machine=words,
        payload=structs,
        instance_id=words,
        request_id=words,
        wait=enums,
    ),
    st.builds(
        rpc("Transition", pb.TransitionRequest),
        instance_id=ids,
        label=words,
        payload=structs,
        params=params,
        namespace=words,
        request_id=words,
        expected_revision=revisions,
        wait=enums,
    ),
    st.builds(
        rpc("UpdateState", pb.UpdateStateRequest),
        instance_id=ids,
        fqn=words,
        updates=st.dictionaries(words, json_values.map(value), max_size=3),
        request_id=words,
        expected_revision=revisions,
        wait=enums,
    ),
    st.builds(
        rpc("AtomicAppend", pb.AtomicAppendRequest),
        instance_id=ids,
        fqn=words,
        key=words,
        value=json_values.map(value),
        request_id=words,
    ),
    st.builds(rpc("GetInstance", pb.GetInstanceRequest), instance_id=ids, view=enums),
    st.builds(
        rpc("ListInstances", pb.ListInstancesRequest),
        machine=words,
        status=enums,
        page_size=page_sizes,
        page_token=tokens,
        view=enums,
    ),
    st.builds(
        rpc("GetHistory", pb.GetHistoryRequest),
        instance_id=ids,
        from_revision=revisions,
        page_size=page_sizes,
        page_token=tokens,
    ),
    st.builds(
        rpc("RetryErrors", pb.RetryErrorsRequest),
        instance_id=ids,
        work_item_ids=st.lists(words, max_size=3),
        request_id=words,
    ),
    st.builds(
        rpc("ListMachines", pb.ListMachinesRequest), page_size=page_sizes, page_token=tokens
    ),
    st.builds(rpc("DescribeMachine", pb.DescribeMachineRequest), machine=words),
    st.builds(
        rpc("Watch", pb.WatchRequest),
        instance_id=ids,
        from_revision=revisions,
        heartbeat_interval=durations,
    ),
)


def send(channel: grpc.Channel, method: str, request: Any) -> grpc.RpcError | None:
    """Sends one request; a Watch is read to its first message. Returns the error, if any."""
    stub = flou_service_pb2_grpc.FlouServiceStub(channel)
    try:
        if method == "Watch":
            stream = stub.Watch(request, timeout=T)
            try:
                first = next(stream)
                assert first.WhichOneof("kind") == "snapshot"
            finally:
                stream.cancel()
        else:
            getattr(stub, method)(request, timeout=T)
    except grpc.RpcError as error:
        return error
    return None


def assert_well_formed(method: str, request: Any, error: grpc.RpcError | None) -> None:
    if error is None:
        return
    code = error.code()
    assert code not in BROKEN, f"{method} {request!r} -> {code}: {error.details()}"
    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
        return
    status = rpc_status.from_call(error)
    assert status is not None, f"{method} -> {code} without a rich status: {error.details()}"
    assert len(status.details) >= 1


def assert_alive(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=T)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    stub = flou_service_pb2_grpc.FlouServiceStub(channel)
    got = stub.GetInstance(pb.GetInstanceRequest(instance_id="fz-linear"), timeout=T)
    assert got.instance.id == "fz-linear"


@FUZZ_SETTINGS
@given(request=requests)
def test_malformed_requests_never_fail_internally(fuzz_channel, request):
    method, message = request
    error = send(fuzz_channel, method, message)
    event(f"{method}: {error.code().name if error else 'OK'}")
    assert_well_formed(method, message, error)


# --- page tokens made of the server's own vocabulary ----------------------------------------


def token(fields: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode()


@pytest.mark.parametrize(
    ("method", "request_message"),
    [
        ("ListMachines", pb.ListMachinesRequest(page_token=token({}))),
        ("ListMachines", pb.ListMachinesRequest(page_token=token({"offset": "x"}))),
        ("ListMachines", pb.ListMachinesRequest(page_token=token({"offset": None}))),
        ("ListInstances", pb.ListInstancesRequest(page_token=token({"machine": "", "status": 0}))),
        (
            "ListInstances",
            pb.ListInstancesRequest(
                page_token=token({"machine": "", "status": 0, "time": "noon", "id": "x"})
            ),
        ),
        (
            "ListInstances",  # a time without a UTC offset: naive vs aware comparison
            pb.ListInstancesRequest(
                page_token=token({"machine": "", "status": 0, "time": "2020-01-01", "id": "x"})
            ),
        ),
        (
            "GetHistory",
            pb.GetHistoryRequest(
                instance_id="fz-linear", page_token=token({"instance": "fz-linear", "from": 0})
            ),
        ),
        (
            "GetHistory",
            pb.GetHistoryRequest(
                instance_id="fz-linear",
                page_token=token({"instance": "fz-linear", "from": 0, "next": "x"}),
            ),
        ),
    ],
)
def test_forged_page_token_is_invalid_argument(fuzz_channel, method, request_message):
    error = send(fuzz_channel, method, request_message)
    assert error is not None
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()


token_fields = st.dictionaries(
    st.sampled_from(["machine", "status", "time", "id", "instance", "from", "next", "offset"]),
    st.one_of(
        scalars,
        st.sampled_from(["", 0, "fz-linear", "2020-01-01T00:00:00+00:00", "2020-01-01"]),
    ),
)


@FUZZ_SETTINGS
@given(
    fields=token_fields,
    method=st.sampled_from(["ListMachines", "ListInstances", "GetHistory"]),
)
def test_page_tokens_of_the_server_vocabulary_never_fail_internally(fuzz_channel, fields, method):
    request = {
        "ListMachines": pb.ListMachinesRequest(page_token=token(fields)),
        "ListInstances": pb.ListInstancesRequest(page_token=token(fields)),
        "GetHistory": pb.GetHistoryRequest(instance_id="fz-linear", page_token=token(fields)),
    }[method]
    assert_well_formed(method, request, send(fuzz_channel, method, request))


# Last in the module: after every request above, the server still serves.
def test_the_server_survives_the_fuzzing(fuzz_channel):
    assert_alive(fuzz_channel)
