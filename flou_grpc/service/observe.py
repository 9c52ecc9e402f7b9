"""`RpcObserver`: every RPC timed, counted in the metrics, and logged with its request id.

It also decodes requests: bytes that protobuf cannot decode are answered
INVALID_ARGUMENT (field `request`) rather than grpc's bare UNKNOWN.

The outermost interceptor: calls refused by authentication are observed too.
An access line per RPC at INFO (health checks at DEBUG: probes call often),
with method, status code, duration and peer as fields for JSON logs.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError

from flou_grpc.errors import InvalidFieldError
from flou_grpc.service.logs import REQUEST_ID
from flou_grpc.service.metrics import Metrics
from flou_grpc.service.status import to_grpc_status

__all__ = ["RpcObserver"]

_log = logging.getLogger("flou_grpc.rpc")
_QUIET: Final = ("/grpc.health.v1.Health/",)


def _request_id(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "x-request-id" and value:
            text = value.decode() if isinstance(value, bytes) else str(value)
            return text[:128]
    return uuid.uuid4().hex[:16]


class _Undecodable:
    """A request protobuf could not decode (too deeply nested, or not the message)."""

    def __init__(self, error: InvalidFieldError) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, answering INVALID_ARGUMENT instead of grpc's bare UNKNOWN on failure."""
    if deserializer is None:
        return None
    decode = deserializer

    def tolerant(data: bytes) -> Any:
        try:
            return decode(data)
        except DecodeError:
            return _Undecodable(
                InvalidFieldError.of(
                    "request",
                    "cannot be decoded: not this RPC's message, or JSON nested deeper than "
                    "protobuf decodes (about 33 levels; the limit is max_json_depth)",
                )
            )

    return tolerant


class RpcObserver(grpc.aio.ServerInterceptor):
    """Times, counts and logs every RPC (`metrics` None: logs only)."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self._series: dict[tuple[str, str], tuple[Any, Any]] = {}
        """(method, code) -> its RPC counter and latency histogram: `labels()` looks a
        child up under a lock at every call."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wraps the call's handler so that its end is observed."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        request_id = _request_id(handler_call_details.invocation_metadata)
        serializers = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            unary: Any = handler.unary_unary  # an async behaviour on a grpc.aio server

            async def observed_unary(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> Any:
                token, began = REQUEST_ID.set(request_id), time.perf_counter()
                try:
                    if isinstance(request, _Undecodable):
                        await context.abort_with_status(to_grpc_status(request.error))
                    return await unary(request, context)
                finally:
                    self._done(method, context, began)
                    REQUEST_ID.reset(token)

            return grpc.unary_unary_rpc_method_handler(observed_unary, **serializers)
        if handler.unary_stream:
            stream: Any = handler.unary_stream

            async def observed_stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> None:
                token, began = REQUEST_ID.set(request_id), time.perf_counter()
                try:
                    if isinstance(request, _Undecodable):
                        await context.abort_with_status(to_grpc_status(request.error))
                    responses = stream(request, context)
                    if inspect.isasyncgen(responses):  # FlouService: an async generator
                        try:
                            async for response in responses:
                                await context.write(response)
                        finally:  # a cancelled call must free the stream's resources now
                            await responses.aclose()
                    else:  # health's Watch: a coroutine that writes itself
                        await responses
                finally:
                    self._done(method, context, began)
                    REQUEST_ID.reset(token)

            return grpc.unary_stream_rpc_method_handler(observed_stream, **serializers)
        return handler  # client-streaming: reflection only, not observed

    def _done(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], began: float
    ) -> None:
        seconds = time.perf_counter() - began
        status: Any = context.code()  # None until a handler sets or aborts with one
        code = "OK" if status is None else getattr(status, "name", str(status))
        name = method.rsplit("/", 1)[-1]
        if self.metrics is not None:
            series = self._series.get((name, code))
            if series is None:
                series = self._series[name, code] = (
                    self.metrics.rpcs.labels(name, code),
                    self.metrics.rpc_seconds.labels(name),
                )
            series[0].inc()
            series[1].observe(seconds)
        level = logging.DEBUG if method.startswith(_QUIET) else logging.INFO
        _log.log(
            level,
            "%s %s %.1f ms",
            name,
            code,
            seconds * 1000,
            extra={
                "method": name,
                "code": code,
                "duration_ms": round(seconds * 1000, 2),
                "peer": context.peer(),
            },
        )
