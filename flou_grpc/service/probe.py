"""The container's health probe: asks the standard gRPC health service, exits 0 if SERVING.

    python -m flou_grpc.service.probe [--address HOST:PORT] [--service NAME] [--timeout S]

The address defaults to 127.0.0.1 and `FLOU_PORT` (50051): the server in the
same container. With TLS on (`FLOU_TLS_CERT`), the probe speaks TLS and trusts
the server's own certificate chain. Health needs no token. Exit codes: 0
SERVING, 1 anything else (NOT_SERVING, unreachable, timeout), with one line on
stderr saying why.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["main", "probe"]


def probe(address: str, service: str = "", timeout: float = 3.0, tls_chain: str = "") -> str:
    """The health status name of `service` at `address` (raises grpc.RpcError when unreachable)."""
    if tls_chain:
        credentials = grpc.ssl_channel_credentials(Path(tls_chain).read_bytes())
        channel = grpc.secure_channel(address, credentials)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the probe; returns its exit code."""
    parser = argparse.ArgumentParser(prog="python -m flou_grpc.service.probe", description=__doc__)
    port = os.environ.get("FLOU_PORT") or "50051"
    parser.add_argument("--address", default=f"127.0.0.1:{port}")
    parser.add_argument("--service", default="", help="default: the whole server")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    try:
        status = probe(
            args.address, args.service, args.timeout, os.environ.get("FLOU_TLS_CERT", "")
        )
    except grpc.RpcError as exc:
        print(f"unhealthy: {args.address}: {exc.code().name}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"unhealthy: {args.address}: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
