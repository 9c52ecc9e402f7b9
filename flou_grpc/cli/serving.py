"""The server commands: `serve` and `db upgrade`."""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from flou_grpc.config import Settings

if TYPE_CHECKING:
    pass

from flou_grpc.cli.exits import EXIT_ERROR, EXIT_OK


def db_upgrade(database_url: str | None) -> None:
    """`flou-grpc db upgrade`: migrates a database to the schema of this version."""
    from flou_grpc.runtime.stores import database_url as resolve
    from flou_grpc.store.migrations import head, upgrade

    url = resolve(database_url)
    if url == "memory://":
        raise SystemExit("flou-grpc db upgrade: memory:// has no schema to upgrade")
    upgrade(url)
    print(f"{url.split('@')[-1]}: schema at revision {head()}")


def serve_settings(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Settings:
    """The server's settings: the environment's, overridden by the command line's.

    Raises:
        ValueError: A setting is invalid; the message names its variable.
    """
    settings = Settings.from_env(environ)
    if args.host is not None:
        settings = replace(settings, host=args.host)
    if args.port is not None:
        settings = replace(settings, port=args.port)
    if args.app:
        modules = tuple(m.strip() for value in args.app for m in value.split(",") if m.strip())
        settings = replace(settings, app=modules)
    if args.database_url is not None:
        settings = replace(settings, database_url=args.database_url or None)
    if args.metrics_port is not None:
        settings = replace(settings, metrics_port=args.metrics_port)
    settings.check()
    return settings


def run_server(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """`flou-grpc serve`: runs the server until SIGTERM; returns the exit code."""
    try:
        settings = serve_settings(args)
    except ValueError as exc:
        parser.error(str(exc))
    # Imported here so that `--help`, the client commands and configuration errors
    # need no server code.
    from flou_grpc.errors import FlouError as ServerError
    from flou_grpc.service.logs import configure
    from flou_grpc.service.server import serve

    configure(args.log_level, settings.log_format)

    try:
        asyncio.run(serve(settings))
    except (RuntimeError, ImportError, ValueError, OSError, ServerError) as exc:
        logging.getLogger("flou_grpc").error("%s", exc)
        return EXIT_ERROR
    return EXIT_OK
