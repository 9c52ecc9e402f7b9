"""The `flou-grpc` command.

`flou-grpc serve` runs the server, configured by environment variables (see
`flou_grpc.config`) that its options override; `flou-grpc db upgrade` brings
a database's schema to this version's (servers and runtimes also upgrade an
empty database themselves). The client commands (start, transition, update,
append, watch, get, list, describe) join them with the service.
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
    db = commands.add_parser(
        "db", help="manage the database", description="Manage the store's database."
    )
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = db_commands.add_parser(
        "upgrade",
        help="upgrade the schema to this version's",
        description="Apply the schema migrations this version needs (safe to run again).",
    )
    upgrade.add_argument(
        "--database-url",
        help="sqlite:///file.db or postgresql+psycopg://user@host/db "
        "(env FLOU_DATABASE_URL; default sqlite:///flou.db)",
    )
    return parser


def _db_upgrade(database_url: str | None) -> None:
    from flou_grpc.runtime.stores import database_url as resolve
    from flou_grpc.store.migrations import head, upgrade

    url = resolve(database_url)
    if url == "memory://":
        raise SystemExit("flou-grpc db upgrade: memory:// has no schema to upgrade")
    upgrade(url)
    print(f"{url.split('@')[-1]}: schema at revision {head()}")


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the command line; exits 2 on a usage or configuration error."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "db":
        _db_upgrade(args.database_url)
        return
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
