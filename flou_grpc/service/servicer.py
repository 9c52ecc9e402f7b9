"""`FlouServicer`: the RPCs of `flou.v1.FlouService`, a thin adapter over `AsyncRuntime`.

Each RPC converts its request, calls the runtime, converts the answer; the
rules live in the engine, the store and the runtime. What belongs here:
- required fields and limits checked on arrival (INVALID_ARGUMENT naming the
  field, nothing changed);
- the call's deadline passed down to the runtime's waits, a little early so
  that the answer (DEADLINE_EXCEEDED with `accepted`) reaches the client, and
  to the store's retries of transient errors (`flou_grpc.store.retry.deadline`);
- every error turned into a rich status by `flou_grpc.service.status`;
  anything unexpected is logged with its traceback and answered INTERNAL;
- Watch streaming (`flou_grpc.service.watch`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, Final, TypeVar

import grpc
from google.protobuf import duration_pb2

from flou_grpc._proto.flou.v1 import (
    flou_service_pb2 as pb,
)
from flou_grpc._proto.flou.v1 import (
    flou_service_pb2_grpc,
    instance_pb2,
    machine_pb2,
)
from flou_grpc.config import Settings
from flou_grpc.engine.hosting import Hosted
from flou_grpc.engine.structure import description
from flou_grpc.errors import (
    DeadlineExceededError,
    FlouError,
    InvalidFieldError,
    RevisionOutOfRangeError,
)
from flou_grpc.runtime.core import AsyncRuntime
from flou_grpc.service import convert
from flou_grpc.service.limits import check_json, check_params
from flou_grpc.service.status import to_grpc_status
from flou_grpc.service.watch import InstancesFeed, Watchers
from flou_grpc.store.retry import deadline as retry_deadline

__all__ = ["FlouServicer"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

_DEADLINE_MARGIN: Final = 0.05
"""Seconds before the client's deadline at which a wait gives up, so the answer arrives."""

_DEFAULT_PAGE: Final = {"instances": 50, "history": 100, "machines": 100}
_MAX_PAGE: Final = 1000


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: BaseException) -> None:
    """Ends the RPC with the rich status of `error` (INTERNAL, logged, if unexpected)."""
    if not isinstance(error, FlouError):
        _log.error("unexpected error", exc_info=error)
    await context.abort_with_status(to_grpc_status(error))


def _listed(machine: Hosted) -> machine_pb2.Machine:
    """A machine as ListMachines shows it: name, kind, description, no structure."""
    message = convert.machine_message(machine.name, description(machine.root), None)
    if machine.describe().kind == "orchestrator":
        message.kind = machine_pb2.MACHINE_KIND_ORCHESTRATOR
    return message


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidFieldError.of(field, "required")
    return value


def _timeout(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    remaining: float | None = context.time_remaining()  # None: the call has no deadline
    return None if remaining is None else max(0.0, remaining - _DEADLINE_MARGIN)


def _page_size(value: int, kind: str) -> int:
    if value < 0 or value > _MAX_PAGE:
        raise InvalidFieldError.of("page_size", f"0 to {_MAX_PAGE}")
    return value or _DEFAULT_PAGE[kind]


def _token(fields: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(fields, separators=(",", ":")).encode()).decode()


_FOREIGN_TOKEN: Final = "not a token this server issued"


def _untoken(token: str, expected: dict[str, Any], wanted: dict[str, type]) -> dict[str, Any]:
    """The fields of a page token issued for the same request.

    `expected` fields must equal the request's; `wanted` fields must be there
    with their type (a datetime: an ISO time with its UTC offset).

    Raises:
        InvalidFieldError: naming `page_token`.
    """
    try:
        fields = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error):
        raise InvalidFieldError.of("page_token", _FOREIGN_TOKEN) from None
    if not isinstance(fields, dict):
        raise InvalidFieldError.of("page_token", _FOREIGN_TOKEN)
    if any(fields.get(k) != v for k, v in expected.items()):
        raise InvalidFieldError.of("page_token", "issued for a request with other filters")
    for name, kind in wanted.items():
        value = fields.get(name)
        if kind is datetime and isinstance(value, str):
            try:
                value = fields[name] = datetime.fromisoformat(value)
            except ValueError:
                raise InvalidFieldError.of("page_token", _FOREIGN_TOKEN) from None
            if value.tzinfo is None:
                raise InvalidFieldError.of("page_token", _FOREIGN_TOKEN)
        if not isinstance(value, kind):
            raise InvalidFieldError.of("page_token", _FOREIGN_TOKEN)
        if isinstance(value, int) and (isinstance(value, bool) or value < 0):
            raise InvalidFieldError.of("page_token", _FOREIGN_TOKEN)
    return fields


class FlouServicer(flou_service_pb2_grpc.FlouServiceServicer):
    """Serves `flou.v1.FlouService` from one `AsyncRuntime`."""

    def __init__(self, runtime: AsyncRuntime, settings: Settings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.limits = settings.limits
        self.watchers = Watchers(runtime, settings)

    async def _serve(
        self, context: grpc.aio.ServicerContext[Any, Any], call: Callable[[], Awaitable[T]]
    ) -> T:
        timeout = _timeout(context)
        try:
            # Store retries of transient errors stop at the call's deadline too.
            with contextlib.nullcontext() if timeout is None else retry_deadline(timeout):
                return await call()
        except TimeoutError:  # a deadline passed before anything was accepted
            await abort(context, DeadlineExceededError(False))
        except Exception as exc:  # every error becomes a status
            await abort(context, exc)
        raise AssertionError("abort returned")  # pragma: no cover

    def _json_object(self, message: Any, field: str) -> dict[str, Any]:
        value = convert.to_json(message)
        check_json(value, field, self.limits)
        return dict(value)

    # --- mutations ----------------------------------------------------------------------

    async def Start(
        self, request: pb.StartRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.StartResponse:
        """`FlouService.Start`, as `protos/flou/v1/flou_service.proto` documents it."""

        async def call() -> pb.StartResponse:
            machine = _required(request.machine, "machine")
            payload = self._json_object(request.payload, "payload")
            instance = await self.runtime.start(
                machine,
                payload,
                request_id=request.request_id,
                instance_id=request.instance_id,
                wait=convert.wait_mode(request.wait),
                timeout=_timeout(context),
            )
            return pb.StartResponse(instance=convert.instance_message(instance))

        return await self._serve(context, call)

    async def Transition(
        self, request: pb.TransitionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TransitionResponse:
        """`FlouService.Transition`, as `protos/flou/v1/flou_service.proto` documents it."""

        async def call() -> pb.TransitionResponse:
            instance_id = _required(request.instance_id, "instance_id")
            label = _required(request.label, "label")
            payload = self._json_object(request.payload, "payload")
            check_params(request.params, self.limits)
            params = [self._json_object(p, f"params[{n}]") for n, p in enumerate(request.params)]
            result = await self.runtime.transition(
                instance_id,
                label,
                payload,
                params or None,
                request.namespace or None,
                request_id=request.request_id,
                expected_revision=request.expected_revision,
                wait=convert.wait_mode(request.wait),
                timeout=_timeout(context),
            )
            return pb.TransitionResponse(
                instance=convert.instance_message(result.instance),
                fired=convert.fired_messages(result.fired),
                work_item_id=result.work_item_id,
            )

        return await self._serve(context, call)

    async def UpdateState(
        self, request: pb.UpdateStateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.UpdateStateResponse:
        """`FlouService.UpdateState`, as `protos/flou/v1/flou_service.proto` documents it."""

        async def call() -> pb.UpdateStateResponse:
            instance_id = _required(request.instance_id, "instance_id")
            if not request.updates:
                raise InvalidFieldError.of("updates", "required: at least one key")
            updates = {key: convert.to_json(value) for key, value in request.updates.items()}
            check_json(updates, "updates", self.limits)
            result = await self.runtime.submit_update(
                instance_id,
                updates,
                request.fqn or None,
                request_id=request.request_id,
                expected_revision=request.expected_revision,
                wait=convert.wait_mode(request.wait),
                timeout=_timeout(context),
            )
            return pb.UpdateStateResponse(
                instance=convert.instance_message(result.instance),
                work_item_id=result.work_item_id,
            )

        return await self._serve(context, call)

    async def AtomicAppend(
        self, request: pb.AtomicAppendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AtomicAppendResponse:
        """`FlouService.AtomicAppend`, as `protos/flou/v1/flou_service.proto` documents it."""

        async def call() -> pb.AtomicAppendResponse:
            instance_id = _required(request.instance_id, "instance_id")
            key = _required(request.key, "key")
            if not request.HasField("value"):
                raise InvalidFieldError.of("value", "required")
            value = convert.to_json(request.value)
            check_json(value, "value", self.limits)
            basic = request.view == pb.APPEND_VIEW_BASIC
            result = await self.runtime.atomic_append(
                instance_id,
                key,
                value,
                request.fqn or None,
                request_id=request.request_id,
                values=not basic,
            )
            return pb.AtomicAppendResponse(
                values=None if basic else convert.list_value(result.values),
                revision=result.revision,
                length=result.length,
            )

        return await self._serve(context, call)

    async def RetryErrors(
        self, request: pb.RetryErrorsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RetryErrorsResponse:
        """`FlouService.RetryErrors`, as `protos/flou/v1/flou_service.proto` documents it."""

        async def call() -> pb.RetryErrorsResponse:
            instance_id = _required(request.instance_id, "instance_id")
            instance, retried = await self.runtime.retry_errors(
                instance_id, list(request.work_item_ids)
            )
            return pb.RetryErrorsResponse(
                instance=convert.instance_message(instance), retried_work_item_ids=retried
            )

        return await self._serve(context, call)

    # --- reads --------------------------------------------------------------------------

    async def GetInstance(
        self, request: pb.GetInstanceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetInstanceResponse:
        """`FlouService.GetInstance`, as `protos/flou/v1/flou_service.proto` documents it."""

        async def call() -> pb.GetInstanceResponse:
            instance = await self.runtime.get(_required(request.instance_id, "instance_id"))
            full = request.view != instance_pb2.INSTANCE_VIEW_BASIC
            return pb.GetInstanceResponse(instance=convert.instance_message(instance, full))

        return await self._serve(context, call)

    async def ListInstances(
        self, request: pb.ListInstancesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListInstancesResponse:
        """`FlouService.ListInstances`, as `protos/flou/v1/flou_service.proto` documents it."""

        async def call() -> pb.ListInstancesResponse:
            size = _page_size(request.page_size, "instances")
            status = None
            if request.status:
                if request.status not in convert.STATUS_OF_MESSAGE:
                    raise InvalidFieldError.of("status", "not an InstanceStatus")
                status = convert.STATUS_OF_MESSAGE[request.status]
            filters = {"machine": request.machine, "status": int(request.status)}
            found = await self.runtime.list_instances(request.machine, status)
            if request.page_token:  # keyset: what comes after the last one returned
                last = _untoken(request.page_token, filters, {"time": datetime, "id": str})
                after = (last["time"], last["id"])
                found = [i for i in found if (i.create_time, i.id) < after]
            page, more = found[:size], len(found) > size
            full = request.view == instance_pb2.INSTANCE_VIEW_FULL
            token = ""
            if more:
                token = _token(
                    {**filters, "time": page[-1].create_time.isoformat(), "id": page[-1].id}
                )
            return pb.ListInstancesResponse(
                instances=[convert.instance_message(i, full) for i in page],
                next_page_token=token,
            )

        return await self._serve(context, call)

    async def GetHistory(
        self, request: pb.GetHistoryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetHistoryResponse:
        """`FlouService.GetHistory`, as `protos/flou/v1/flou_service.proto` documents it."""

        async def call() -> pb.GetHistoryResponse:
            instance_id = _required(request.instance_id, "instance_id")
            size = _page_size(request.page_size, "history")
            if request.from_revision < 0:
                raise InvalidFieldError.of("from_revision", "0 (the oldest kept) or positive")
            oldest, current = await self.runtime.revisions(instance_id)
            start = request.from_revision or oldest
            if not oldest <= start <= current:
                raise RevisionOutOfRangeError(instance_id, start, oldest, current)
            if request.page_token:
                start = _untoken(
                    request.page_token,
                    {"instance": instance_id, "from": request.from_revision},
                    {"next": int},
                )["next"]
            events = await self.runtime.history(instance_id, start, size)
            last = events[-1].revision if events else start - 1
            token = ""
            if last < current and len(events) == size:
                token = _token(
                    {"instance": instance_id, "from": request.from_revision, "next": last + 1}
                )
            return pb.GetHistoryResponse(
                events=[convert.event_message(e) for e in events],
                next_page_token=token,
                oldest_revision=oldest,
                current_revision=current,
            )

        return await self._serve(context, call)

    async def ListMachines(
        self, request: pb.ListMachinesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListMachinesResponse:
        """`FlouService.ListMachines`, as `protos/flou/v1/flou_service.proto` documents it."""

        async def call() -> pb.ListMachinesResponse:
            size = _page_size(request.page_size, "machines")
            machines = sorted(self.runtime.registry, key=lambda m: m.name)
            start = 0
            if request.page_token:
                start = _untoken(request.page_token, {}, {"offset": int})["offset"]
            page = machines[start : start + size]
            more = start + size < len(machines)
            return pb.ListMachinesResponse(
                machines=[_listed(m) for m in page],
                next_page_token=_token({"offset": start + size}) if more else "",
            )

        return await self._serve(context, call)

    async def DescribeMachine(
        self, request: pb.DescribeMachineRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DescribeMachineResponse:
        """`FlouService.DescribeMachine`, as `protos/flou/v1/flou_service.proto` documents it."""

        async def call() -> pb.DescribeMachineResponse:
            machine = self.runtime.registry.get(_required(request.machine, "machine"))
            return pb.DescribeMachineResponse(
                machine=convert.machine_message(
                    machine.name, description(machine.root), machine.describe()
                )
            )

        return await self._serve(context, call)

    # --- watching -----------------------------------------------------------------------

    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchResponse]:
        """`FlouService.Watch`, as `protos/flou/v1/flou_service.proto` documents it."""
        try:
            instance_id = _required(request.instance_id, "instance_id")
            if request.from_revision < 0:
                raise InvalidFieldError.of("from_revision", "0 (the current one) or positive")
            interval = self._heartbeat(request.heartbeat_interval)
            async for response in self.watchers.stream(
                instance_id, request.from_revision, interval
            ):
                yield response
        except Exception as exc:  # every error becomes a status
            await abort(context, exc)

    async def WatchInstances(
        self, request: pb.WatchInstancesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchInstancesResponse]:
        """`FlouService.WatchInstances`, as `protos/flou/v1/flou_service.proto` documents it."""
        try:
            feed = InstancesFeed(
                self.watchers, request.machine, self._heartbeat(request.heartbeat_interval)
            )
            async for response in feed.stream():
                yield response
        except Exception as exc:  # every error becomes a status
            await abort(context, exc)

    def _heartbeat(self, interval: duration_pb2.Duration) -> float:
        if not interval.seconds and not interval.nanos:
            return self.settings.heartbeat_seconds
        return min(3600.0, max(0.05, interval.ToTimedelta().total_seconds()))

    async def close(self) -> None:
        """Ends every Watch stream with UNAVAILABLE (resumable elsewhere)."""
        await self.watchers.close()
