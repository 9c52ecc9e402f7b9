"""Bearer-token authentication: a server interceptor, on when tokens are configured.

Every RPC but the health service's must carry `authorization: Bearer <token>`
with one of the configured tokens (`FLOU_AUTH_TOKENS`, `FLOU_AUTH_TOKENS_FILE`);
tokens are compared in constant time. A call without one fails UNAUTHENTICATED
`ERROR_REASON_UNAUTHENTICATED` before its handler runs. Health stays open so
that load balancers and container probes need no secret.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import grpc

from flou_grpc.errors import UnauthenticatedError
from flou_grpc.service.status import to_grpc_status

__all__ = ["TokenAuth"]

_OPEN_PREFIXES: Final = ("/grpc.health.v1.Health/",)


class TokenAuth(grpc.aio.ServerInterceptor):
    """Refuses calls whose bearer token is not one of `tokens`."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens:
            raise ValueError("TokenAuth needs at least one token")
        self._tokens = [token.encode() for token in tokens]

    def accepts(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
        """Whether the call's metadata carries a known bearer token."""
        for key, value in metadata or ():
            if key != "authorization":
                continue
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer":
                return False
            given = token.strip().encode()
            # Every token is compared, so the time taken tells nothing of which one matched.
            matches = [hmac.compare_digest(given, known) for known in self._tokens]
            return any(matches)
        return False

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Passes the call on, or answers it UNAUTHENTICATED without running it."""
        handler = await continuation(handler_call_details)
        if handler_call_details.method.startswith(_OPEN_PREFIXES):
            return handler
        if handler is None or self.accepts(handler_call_details.invocation_metadata):
            return handler
        return _refusing(handler)


async def _refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    await context.abort_with_status(to_grpc_status(UnauthenticatedError()))


def _refusing(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as `handler` that refuses the call."""
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_refuse, **serializers)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_refuse, **serializers)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_refuse, **serializers)
    return grpc.stream_stream_rpc_method_handler(_refuse, **serializers)
