"""`AsyncFlouClient`: the asyncio client of flou.v1.FlouService (grpc.aio)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
from flou_client_gen.flou.v1 import flou_service_pb2_grpc
from google.protobuf.message import Message

from flou_client import requests, wire
from flou_client.client import DEFAULT_TIMEOUT
from flou_client.connection import Connection, Pem
from flou_client.errors import FlouError, from_rpc_error
from flou_client.models import (
    AppendResult,
    Event,
    Heartbeat,
    HistoryPage,
    Instance,
    InstancePage,
    InstanceStatus,
    InstanceView,
    Machine,
    MachinePage,
    RetryResult,
    TransitionResult,
    UpdateResult,
    WaitMode,
    WatchItem,
)
from flou_client.retry import Deadline, RetryPolicy
from flou_client.watch import WatchCursor, feed_item, stream_ended

__all__ = ["AsyncFlouClient"]

_log = logging.getLogger("flou_client")

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class AsyncFlouClient:
    """An asyncio client of a flou-grpc server: `FlouClient` with coroutines.

    Every RPC is a method taking and returning Python values; mutations carry a
    `request_id` (a UUID4 unless given) so that retries are safe; UNAVAILABLE
    answers are retried with jittered exponential backoff, bounded by `retry`
    and the call's deadline; every failure raises a `flou_client.FlouError`.

    Args:
        target: The server, `host:port`.
        token: A bearer token, sent as `authorization: Bearer <token>`.
        tls: Connect with TLS (implied by the PEM options).
        root_certificates: PEM (bytes or a file path) of the CA of the server's
            certificate; the system's roots when None.
        client_cert: PEM client certificate chain for mutual TLS.
        client_key: PEM private key of `client_cert`.
        timeout: Default deadline of a call in seconds (None: none); `watch` has none.
        retry: When and how often to retry UNAVAILABLE answers.
        options: Extra gRPC channel options.

    Create it inside the event loop that uses it; use it as an async context
    manager, or `await close()`.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: Pem | None = None,
        client_cert: Pem | None = None,
        client_key: Pem | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.connection = Connection(
            target,
            token=token,
            tls=tls,
            root_certificates=root_certificates,
            client_cert=client_cert,
            client_key=client_key,
            options=tuple(options),
        )
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._metadata = self.connection.metadata()
        self._channel = self.connection.aio_channel()
        self._stub = flou_service_pb2_grpc.FlouServiceStub(self._channel)

    # --- lifecycle -------------------------------------------------------------------

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncFlouClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # --- the calls -------------------------------------------------------------------

    async def _call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        timeout: float | None,
    ) -> Resp:
        deadline = Deadline(self.timeout if timeout is None else timeout)
        attempts = 0
        while True:
            attempts += 1
            try:
                return await method(request, timeout=deadline.remaining(), metadata=self._metadata)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
            delay = self.retry.delay(attempts, error, deadline)
            if delay is None:
                raise error
            _log.debug(
                "%s failed (%s); attempt %d in %.2fs",
                type(request).__name__,
                error,
                attempts + 1,
                delay,
            )
            await asyncio.sleep(delay)

    async def start(
        self,
        machine: str,
        payload: Mapping[str, object] | None = None,
        *,
        instance_id: str = "",
        request_id: str | None = None,
        wait: WaitMode | str | None = None,
        timeout: float | None = None,
    ) -> Instance:
        """Starts an instance of a registered machine with `payload`.

        Args:
            machine: The registered machine's name.
            payload: Passed to the root's `run(**payload)`.
            instance_id: The new instance's id; empty: the server assigns a UUID4.
            request_id: Makes the call idempotent; a UUID4 when None.
            wait: When to answer; None: the server's default (the instance exists).
            timeout: This call's deadline in seconds; None: the client's.

        Raises:
            MachineNotFoundError, InstanceAlreadyExistsError, InvalidArgumentError,
            UnavailableError, DeadlineExceededError (all `FlouError`s).
        """
        request = requests.start(machine, payload, instance_id, request_id, wait)
        return wire.instance((await self._call(self._stub.Start, request, timeout)).instance)

    async def transition(
        self,
        instance_id: str,
        label: str,
        payload: Mapping[str, object] | None = None,
        *,
        params: Sequence[Mapping[str, object]] | None = None,
        namespace: str = "",
        expected_revision: int = 0,
        request_id: str | None = None,
        wait: WaitMode | str | None = None,
        timeout: float | None = None,
    ) -> TransitionResult:
        """Sends the event `label` to an instance and, by default, waits until it is processed.

        Args:
            instance_id: The instance.
            label: The transition label (the template, `done_{id}`, when parameterized).
            payload: Passed to the `run(**payload)` of every state the transition queues.
            params: One map per lane binding the label's and targets' `{param}` fields.
            namespace: The transition's namespace; empty: the root's name.
            expected_revision: When not 0, only if the instance is still at this revision.
            request_id: Makes the call idempotent; a UUID4 when None.
            wait: When to answer; None: once processed.
            timeout: This call's deadline in seconds; None: the client's.

        Raises:
            InstanceNotFoundError, TransitionNotAllowedError, InstanceCompletedError,
            RevisionConflictError, InvalidArgumentError, ... (all `FlouError`s).
        """
        request = requests.transition(
            instance_id, label, payload, params, namespace, expected_revision, request_id, wait
        )
        response = await self._call(self._stub.Transition, request, timeout)
        return TransitionResult(
            instance=wire.instance(response.instance),
            fired=tuple(wire.fired_transition(f) for f in response.fired),
            work_item_id=response.work_item_id,
        )

    async def update_state(
        self,
        instance_id: str,
        updates: Mapping[str, object],
        *,
        fqn: str = "",
        expected_revision: int = 0,
        request_id: str | None = None,
        wait: WaitMode | str | None = None,
        timeout: float | None = None,
    ) -> UpdateResult:
        """Sets dotted keys (`{"order.total": 12.5}`) of the state of node `fqn` (the root)."""
        request = requests.update_state(
            instance_id, updates, fqn, expected_revision, request_id, wait
        )
        response = await self._call(self._stub.UpdateState, request, timeout)
        return UpdateResult(wire.instance(response.instance), response.work_item_id)

    async def atomic_append(
        self,
        instance_id: str,
        key: str,
        value: object,
        *,
        fqn: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
        values: bool = True,
    ) -> AppendResult:
        """Appends `value` to the list at `key` of node `fqn`, at once; returns the whole list.

        `values=False` asks for the list's length only: the answer stays small
        however long the list grows.
        """
        request = requests.atomic_append(instance_id, key, value, fqn, request_id, values)
        response = await self._call(self._stub.AtomicAppend, request, timeout)
        return AppendResult(wire.from_list(response.values), response.revision, response.length)

    async def get_instance(
        self,
        instance_id: str,
        *,
        view: InstanceView | str = InstanceView.FULL,
        timeout: float | None = None,
    ) -> Instance:
        """An instance at its current revision (`state` None with `InstanceView.BASIC`)."""
        request = requests.get_instance(instance_id, view)
        return wire.instance((await self._call(self._stub.GetInstance, request, timeout)).instance)

    async def list_instances(
        self,
        *,
        machine: str = "",
        status: InstanceStatus | str | None = None,
        page_size: int = 0,
        page_token: str = "",
        view: InstanceView | str | None = None,
        timeout: float | None = None,
    ) -> InstancePage:
        """One page of instances, newest first (basic view unless `view` says)."""
        request = requests.list_instances(machine, status, page_size, page_token, view)
        response = await self._call(self._stub.ListInstances, request, timeout)
        return InstancePage(
            tuple(wire.instance(i) for i in response.instances), response.next_page_token
        )

    async def iter_instances(
        self,
        *,
        machine: str = "",
        status: InstanceStatus | str | None = None,
        page_size: int = 0,
        view: InstanceView | str | None = None,
    ) -> AsyncIterator[Instance]:
        """Every instance, newest first, page after page."""
        token = ""
        while True:
            page = await self.list_instances(
                machine=machine, status=status, page_size=page_size, page_token=token, view=view
            )
            for found in page.instances:
                yield found
            token = page.next_page_token
            if not token:
                return

    async def get_history(
        self,
        instance_id: str,
        *,
        from_revision: int = 0,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> HistoryPage:
        """One page of an instance's events in revision order, with their JSON patches."""
        request = requests.get_history(instance_id, from_revision, page_size, page_token)
        response = await self._call(self._stub.GetHistory, request, timeout)
        return HistoryPage(
            events=tuple(wire.event(e) for e in response.events),
            next_page_token=response.next_page_token,
            oldest_revision=response.oldest_revision,
            current_revision=response.current_revision,
        )

    async def iter_history(
        self, instance_id: str, *, from_revision: int = 0, page_size: int = 0
    ) -> AsyncIterator[Event]:
        """Every event of an instance from `from_revision` to the current one."""
        token = ""
        while True:
            page = await self.get_history(
                instance_id, from_revision=from_revision, page_size=page_size, page_token=token
            )
            for event in page.events:
                yield event
            token = page.next_page_token
            if not token:
                return

    async def retry_errors(
        self,
        instance_id: str,
        work_item_ids: Sequence[str] = (),
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> RetryResult:
        """Schedules again the failed steps (all of them when `work_item_ids` is empty)."""
        request = requests.retry_errors(instance_id, work_item_ids, request_id)
        response = await self._call(self._stub.RetryErrors, request, timeout)
        return RetryResult(wire.instance(response.instance), tuple(response.retried_work_item_ids))

    async def list_machines(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> MachinePage:
        """One page of the registered machines, by name, without their structure."""
        request = requests.list_machines(page_size, page_token)
        response = await self._call(self._stub.ListMachines, request, timeout)
        return MachinePage(
            tuple(wire.machine(m) for m in response.machines), response.next_page_token
        )

    async def describe_machine(self, machine: str, *, timeout: float | None = None) -> Machine:
        """A registered machine with its whole structure (`root`)."""
        request = requests.describe_machine(machine)
        return wire.machine(
            (await self._call(self._stub.DescribeMachine, request, timeout)).machine
        )

    async def watch(
        self,
        instance_id: str,
        *,
        from_revision: int = 0,
        heartbeat_interval: float | None = None,
        resume: bool = True,
    ) -> AsyncIterator[WatchItem]:
        """Everything that happens to an instance, live, until the iterator is closed.

        Close it with `aclose()`, or by leaving an `async for` over it.

        Yields the `Instance` at `from_revision` (0: the current one) once, then
        every later `Event` in revision order and a `Heartbeat` while nothing
        happens. When the stream breaks (UNAVAILABLE, the server closing a slow
        watcher, the stream ending) it reconnects with backoff and resumes after
        the last revision it yielded: no gap, no duplicate, no second snapshot.
        It gives up after `retry.max_attempts` broken streams in a row without a
        message and raises the last error; other errors are raised at once.

        Args:
            instance_id: The instance.
            from_revision: Where to start; 0: the current revision.
            heartbeat_interval: Seconds between heartbeats; None: the server's default.
            resume: Reconnect after a break (False: raise it).
        """
        cursor = WatchCursor(instance_id, from_revision, heartbeat_interval)
        failures = 0
        while True:
            call = self._stub.Watch(cursor.request(), metadata=self._metadata)
            try:
                async for response in call:
                    failures = 0
                    item = cursor.accept(response)
                    if item is not None:
                        yield item
                error = stream_ended(instance_id)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
            finally:
                call.cancel()
            failures += 1
            delay = self._resume_delay(cursor, error, failures, resume)
            await asyncio.sleep(delay)

    async def watch_instances(
        self, *, machine: str = "", heartbeat_interval: float | None = None
    ) -> AsyncIterator[Event | Heartbeat]:
        """The events of every instance (or of one machine's), live; see `FlouClient`."""
        request = requests.watch_instances(machine, heartbeat_interval)
        call = self._stub.WatchInstances(request, metadata=self._metadata)
        try:
            async for response in call:
                item = feed_item(response)
                if item is not None:
                    yield item
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    def _resume_delay(
        self, cursor: WatchCursor, error: FlouError, failures: int, resume: bool
    ) -> float:
        if not resume or not cursor.resumable(error):
            raise error
        delay = self.retry.wait(failures, error, Deadline(None))
        if delay is None:
            raise error
        _log.info(
            "watch of %s broke (%s); resuming after revision %s in %.2fs",
            cursor.instance_id,
            error,
            cursor.last_revision,
            delay,
        )
        return delay
