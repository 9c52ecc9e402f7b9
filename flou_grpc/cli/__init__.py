"""The `flou-grpc` command.

`flou-grpc serve` runs the server, configured by environment variables (see
`flou_grpc.config`) that its options override; `flou-grpc db upgrade` brings
a database's schema to this version's (servers and runtimes also upgrade an
empty database themselves). The client commands (start, transition, update,
append, get, list, history, describe, watch, machines) drive a running server
through `flou_client`, the Python client; they print readable text, or JSON
with `--json`, and exit with a code a shell can act on (`EXIT_CODES`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TextIO

from flou_grpc.cli.arguments import (
    assignment,
    build_parser,
    json_object,
    json_object_list,
    json_value,
)
from flou_grpc.cli.commands import run_client_command
from flou_grpc.cli.exits import (
    EXIT_AUTH,
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    UsageError,
    exit_code,
)
from flou_grpc.cli.render import (
    event_line,
    instance_lines,
    one_line,
    patch_summary,
    snapshot_line,
    tree_lines,
)
from flou_grpc.cli.serving import db_upgrade, run_server, serve_settings

__all__ = [
    "EXIT_AUTH",
    "EXIT_CODES",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "UsageError",
    "assignment",
    "build_parser",
    "event_line",
    "exit_code",
    "instance_lines",
    "json_object",
    "json_object_list",
    "json_value",
    "main",
    "patch_summary",
    "run",
    "serve_settings",
    "snapshot_line",
    "tree_lines",
]


def run(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Runs the command line and returns its exit code (see `EXIT_CODES`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = sys.stdout if out is None else out
    if args.command == "db":
        db_upgrade(args.database_url)
        return EXIT_OK
    if args.command == "serve":
        return run_server(parser, args)
    from flou_client import FlouError

    try:
        run_client_command(args, out)
    except UsageError as exc:
        print(f"flou-grpc {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FlouError as exc:
        code = exit_code(exc)
        where = f"cannot reach {args.address}: " if code == EXIT_UNREACHABLE else ""
        print(f"flou-grpc: {where}{one_line(str(exc))}", file=sys.stderr)
        return code
    except (TypeError, ValueError) as exc:  # a value the client cannot send (e.g. NaN)
        print(f"flou-grpc {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the command line and exits with its code; Ctrl-C exits 130 quietly."""
    try:
        code = run(argv)
        sys.stdout.flush()
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BrokenPipeError:  # `flou-grpc watch ID | head`: the reader went away
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_OK
    sys.exit(code)
