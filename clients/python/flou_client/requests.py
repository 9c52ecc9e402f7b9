"""The request messages of every RPC, built from Python arguments.

Shared by the sync and the asyncio client, which only differ in how they send
them. Mutations get a `request_id` here, once per call, so that the client's
retries of that call are idempotent on the server.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from flou_client_gen.flou.v1 import flou_service_pb2, instance_pb2
from google.protobuf import duration_pb2

from flou_client import wire
from flou_client.models import InstanceStatus, InstanceView, WaitMode

__all__ = [
    "atomic_append",
    "describe_machine",
    "get_history",
    "get_instance",
    "list_instances",
    "list_machines",
    "new_request_id",
    "retry_errors",
    "start",
    "transition",
    "update_state",
    "watch",
    "watch_instances",
]


def new_request_id() -> str:
    """A fresh request id (a UUID4), as the contract recommends."""
    return str(uuid.uuid4())


def _wait(wait: WaitMode | str | None) -> flou_service_pb2.WaitMode.ValueType:
    if wait is None:
        return flou_service_pb2.WAIT_MODE_UNSPECIFIED
    return flou_service_pb2.WaitMode.Value(f"WAIT_MODE_{WaitMode(wait).name}")


def _view(view: InstanceView | str | None) -> instance_pb2.InstanceView.ValueType:
    if view is None:
        return instance_pb2.INSTANCE_VIEW_UNSPECIFIED
    return instance_pb2.InstanceView.Value(f"INSTANCE_VIEW_{InstanceView(view).name}")


def _status(status: InstanceStatus | str | None) -> instance_pb2.InstanceStatus.ValueType:
    if status is None:
        return instance_pb2.INSTANCE_STATUS_UNSPECIFIED
    return instance_pb2.InstanceStatus.Value(f"INSTANCE_STATUS_{InstanceStatus(status).name}")


def start(
    machine: str,
    payload: Mapping[str, object] | None,
    instance_id: str,
    request_id: str | None,
    wait: WaitMode | str | None,
) -> flou_service_pb2.StartRequest:
    """`StartRequest`."""
    request = flou_service_pb2.StartRequest(
        machine=machine,
        instance_id=instance_id,
        request_id=request_id or new_request_id(),
        wait=_wait(wait),
    )
    if payload is not None:
        request.payload.CopyFrom(wire.to_struct(payload, "payload"))
    return request


def transition(
    instance_id: str,
    label: str,
    payload: Mapping[str, object] | None,
    params: Sequence[Mapping[str, object]] | None,
    namespace: str,
    expected_revision: int,
    request_id: str | None,
    wait: WaitMode | str | None,
) -> flou_service_pb2.TransitionRequest:
    """`TransitionRequest`."""
    request = flou_service_pb2.TransitionRequest(
        instance_id=instance_id,
        label=label,
        namespace=namespace,
        expected_revision=expected_revision,
        request_id=request_id or new_request_id(),
        wait=_wait(wait),
    )
    if payload is not None:
        request.payload.CopyFrom(wire.to_struct(payload, "payload"))
    for index, lane in enumerate(params or ()):
        request.params.append(wire.to_struct(lane, f"params[{index}]"))
    return request


def update_state(
    instance_id: str,
    updates: Mapping[str, object],
    fqn: str,
    expected_revision: int,
    request_id: str | None,
    wait: WaitMode | str | None,
) -> flou_service_pb2.UpdateStateRequest:
    """`UpdateStateRequest`."""
    request = flou_service_pb2.UpdateStateRequest(
        instance_id=instance_id,
        fqn=fqn,
        expected_revision=expected_revision,
        request_id=request_id or new_request_id(),
        wait=_wait(wait),
    )
    for key, value in updates.items():
        request.updates[key].CopyFrom(wire.to_value(value, f"updates[{key!r}]"))
    return request


def atomic_append(
    instance_id: str,
    key: str,
    value: object,
    fqn: str,
    request_id: str | None,
    values: bool = True,
) -> flou_service_pb2.AtomicAppendRequest:
    """`AtomicAppendRequest` (`values` False: `APPEND_VIEW_BASIC`, the length only)."""
    return flou_service_pb2.AtomicAppendRequest(
        instance_id=instance_id,
        fqn=fqn,
        key=key,
        value=wire.to_value(value, "value"),
        request_id=request_id or new_request_id(),
        view=flou_service_pb2.APPEND_VIEW_FULL if values else flou_service_pb2.APPEND_VIEW_BASIC,
    )


def watch(
    instance_id: str, from_revision: int, heartbeat_interval: float | None
) -> flou_service_pb2.WatchRequest:
    """`WatchRequest`."""
    request = flou_service_pb2.WatchRequest(instance_id=instance_id, from_revision=from_revision)
    if heartbeat_interval is not None:
        interval = duration_pb2.Duration()
        interval.FromNanoseconds(int(heartbeat_interval * 1e9))
        request.heartbeat_interval.CopyFrom(interval)
    return request


def watch_instances(
    machine: str, heartbeat_interval: float | None
) -> flou_service_pb2.WatchInstancesRequest:
    """`WatchInstancesRequest`."""
    request = flou_service_pb2.WatchInstancesRequest(machine=machine)
    if heartbeat_interval is not None:
        interval = duration_pb2.Duration()
        interval.FromNanoseconds(int(heartbeat_interval * 1e9))
        request.heartbeat_interval.CopyFrom(interval)
    return request


def get_instance(
    instance_id: str, view: InstanceView | str | None
) -> flou_service_pb2.GetInstanceRequest:
    """`GetInstanceRequest`."""
    return flou_service_pb2.GetInstanceRequest(instance_id=instance_id, view=_view(view))


def list_instances(
    machine: str,
    status: InstanceStatus | str | None,
    page_size: int,
    page_token: str,
    view: InstanceView | str | None,
) -> flou_service_pb2.ListInstancesRequest:
    """`ListInstancesRequest`."""
    return flou_service_pb2.ListInstancesRequest(
        machine=machine,
        status=_status(status),
        page_size=page_size,
        page_token=page_token,
        view=_view(view),
    )


def get_history(
    instance_id: str, from_revision: int, page_size: int, page_token: str
) -> flou_service_pb2.GetHistoryRequest:
    """`GetHistoryRequest`."""
    return flou_service_pb2.GetHistoryRequest(
        instance_id=instance_id,
        from_revision=from_revision,
        page_size=page_size,
        page_token=page_token,
    )


def retry_errors(
    instance_id: str, work_item_ids: Sequence[str], request_id: str | None
) -> flou_service_pb2.RetryErrorsRequest:
    """`RetryErrorsRequest`."""
    return flou_service_pb2.RetryErrorsRequest(
        instance_id=instance_id,
        work_item_ids=list(work_item_ids),
        request_id=request_id or new_request_id(),
    )


def list_machines(page_size: int, page_token: str) -> flou_service_pb2.ListMachinesRequest:
    """`ListMachinesRequest`."""
    return flou_service_pb2.ListMachinesRequest(page_size=page_size, page_token=page_token)


def describe_machine(machine: str) -> flou_service_pb2.DescribeMachineRequest:
    """`DescribeMachineRequest`."""
    return flou_service_pb2.DescribeMachineRequest(machine=machine)
