"""The `flou-grpc` command.

`flou-grpc serve` runs the server, configured by environment variables (see
`flou_grpc.config`) that its options override. The client commands (start,
transition, update, append, watch, get, list, describe) join it with the
service.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace

from flou_grpc import __version__
from flou_grpc.config import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flou-grpc", description="Durable, observable state machines behind a gRPC API."
    )
    parser.add_argument("--version", action="version", version=f"flou-grpc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="run the server", description="Run the server until SIGTERM or Ctrl-C."
    )
    serve.add_argument("--host", help="address to listen on (env FLOU_HOST; default 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, help="port to listen on, 0 for any free one (env FLOU_PORT; 50051)"
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the command line; exits 2 on a usage or configuration error."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        parser.error(str(exc))
    if args.host is not None:
        settings = replace(settings, host=args.host)
    if args.port is not None:
        settings = replace(settings, port=args.port)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Imported here so that `--help` and configuration errors need no grpc.
    from flou_grpc.service.server import serve

    try:
        asyncio.run(serve(settings))
    except RuntimeError as exc:
        logging.getLogger("flou_grpc").error("%s", exc)
        sys.exit(1)
