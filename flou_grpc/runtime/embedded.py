"""`Runtime`: the embedded, synchronous face of `AsyncRuntime`.

It runs an `AsyncRuntime` on an event loop of its own, in a daemon thread, and
every method waits for the answer, so plain scripts and sync frameworks can
host machines without the server:

    with Runtime(machines=[Order]) as runtime:
        instance = runtime.start("order", {"sku": "a-1"})
        runtime.transition(instance.id, "pay", {"amount": 12})
        print(runtime.settle(instance.id).state)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from flou_grpc.engine.ltm import LTM
from flou_grpc.engine.registry import Registry
from flou_grpc.runtime.core import AsyncRuntime
from flou_grpc.runtime.model import (
    AppendResult,
    Event,
    Instance,
    InstanceStatus,
    TransitionResult,
    WaitMode,
)

__all__ = ["Runtime"]

T = TypeVar("T")


class Runtime:
    """Hosts instances of registered machines; every method blocks until it has its answer.

    Args:
        database_url: Where instances are kept; None keeps them in memory (see
            `AsyncRuntime`).
        machines: Root LTM classes to register.
        registry: A registry to use (the machines are added to it).
        **options: Passed to `AsyncRuntime` (`retry_delay`, `max_retry_delay`).
    """

    def __init__(
        self,
        database_url: str | None = None,
        machines: Iterable[type[LTM]] = (),
        *,
        registry: Registry | None = None,
        **options: Any,
    ) -> None:
        self.core = AsyncRuntime(database_url, machines, registry=registry, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="flou-runtime", daemon=True
        )
        self._thread.start()
        self._closed = False

    @property
    def registry(self) -> Registry:
        """The machines this runtime can start."""
        return self.core.registry

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops the workers and the loop's thread; the runtime cannot be used after."""
        if self._closed:
            return
        self._closed = True
        asyncio.run_coroutine_threadsafe(self.core.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed:
            coroutine.close()
            raise RuntimeError("this Runtime is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(
        self,
        machine: str,
        payload: Mapping[str, Any] | None = None,
        request_id: str = "",
        *,
        instance_id: str = "",
        wait: WaitMode = WaitMode.PROCESSED,
    ) -> Instance:
        """Creates an instance; see `AsyncRuntime.start`."""
        return self._call(
            self.core.start(
                machine, payload, request_id=request_id, instance_id=instance_id, wait=wait
            )
        )

    def transition(
        self,
        instance_id: str,
        label: str,
        payload: Mapping[str, Any] | None = None,
        params: Sequence[Mapping[str, Any]] | None = None,
        namespace: str | None = None,
        *,
        request_id: str = "",
        expected_revision: int = 0,
        wait: WaitMode = WaitMode.PROCESSED,
    ) -> TransitionResult:
        """Sends a labelled event; see `AsyncRuntime.transition`."""
        return self._call(
            self.core.transition(
                instance_id,
                label,
                payload,
                params,
                namespace,
                request_id=request_id,
                expected_revision=expected_revision,
                wait=wait,
            )
        )

    def update_state(
        self,
        instance_id: str,
        updates: Mapping[str, Any],
        fqn: str | None = None,
        *,
        request_id: str = "",
        expected_revision: int = 0,
        wait: WaitMode = WaitMode.PROCESSED,
    ) -> Instance:
        """Sets dotted keys of a node's state; see `AsyncRuntime.update_state`."""
        return self._call(
            self.core.update_state(
                instance_id,
                updates,
                fqn,
                request_id=request_id,
                expected_revision=expected_revision,
                wait=wait,
            )
        )

    def atomic_append(
        self,
        instance_id: str,
        key: str,
        value: Any,
        fqn: str | None = None,
        *,
        request_id: str = "",
        values: bool = True,
    ) -> AppendResult:
        """Appends to a list in the state at once; see `AsyncRuntime.atomic_append`."""
        return self._call(
            self.core.atomic_append(
                instance_id, key, value, fqn, request_id=request_id, values=values
            )
        )

    def retry_errors(
        self, instance_id: str, work_item_ids: Sequence[str] = ()
    ) -> tuple[Instance, list[str]]:
        """Schedules failed steps again; see `AsyncRuntime.retry_errors`."""
        return self._call(self.core.retry_errors(instance_id, work_item_ids))

    def get(self, instance_id: str) -> Instance:
        """The instance at its current revision."""
        return self._call(self.core.get(instance_id))

    def list_instances(
        self, machine: str = "", status: InstanceStatus | None = None
    ) -> list[Instance]:
        """Instances, newest first, optionally filtered."""
        return self._call(self.core.list_instances(machine, status))

    def settle(self, instance_id: str, timeout: float | None = 30.0) -> Instance:
        """Waits until the instance has no pending work (TimeoutError after `timeout` s)."""
        return self._call(self.core.settle(instance_id, timeout))

    def history(self, instance_id: str, from_revision: int = 1) -> list[Event]:
        """The instance's events from `from_revision` on."""
        return self._call(self.core.history(instance_id, from_revision))

    def watch(
        self, instance_id: str, from_revision: int = 0, timeout: float | None = None
    ) -> Iterator[Instance | Event]:
        """Yields the instance at `from_revision`, then every later event as it commits.

        Args:
            instance_id: The instance.
            from_revision: Where to start; 0 is the current revision.
            timeout: Give up (TimeoutError) when no event comes for this long.
        """
        stream = self.core.watch(instance_id, from_revision)

        async def following() -> Instance | Event:
            return await anext(stream)

        try:
            while True:
                try:
                    yield self._call(following(), timeout)
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                self._call(stream.aclose())
