"""The command line's parser, and the checks of values argparse cannot make."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any, Final

from flou_grpc import __version__

if TYPE_CHECKING:
    pass

from flou_grpc.cli.exits import EXIT_CODES

DEFAULT_ADDRESS: Final = "127.0.0.1:50051"
WAIT_MODES: Final = ("enqueued", "processed", "settled")
STATUSES: Final = ("running", "waiting", "completed", "failed")


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{what} is not valid JSON: {exc}") from None


def json_object(text: str) -> dict[str, Any]:
    """An option's value that must be a JSON object (`--payload`)."""
    value = _json(text, repr(text))
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object ({{...}}), not {_json_type(value)}: {text!r}"
        )
    return value


def json_object_list(text: str) -> list[dict[str, Any]]:
    """An option's value that must be a JSON list of objects (`--params`)."""
    value = _json(text, repr(text))
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise argparse.ArgumentTypeError(
            f'must be a JSON list of objects, one per lane ([{{"id": "a"}}, ...]): {text!r}'
        )
    return value


def json_value(text: str) -> Any:
    """Any JSON value (`append`'s value); a string needs its quotes: '"text"'."""
    return _json(text, f"{text!r} (a string needs its JSON quotes: '\"text\"')")


def assignment(text: str) -> tuple[str, Any]:
    """`KEY=JSON` of `update`."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=JSON, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"the value of {key!r} is not valid JSON ({exc}); a string needs its JSON "
            f"quotes: {key}='\"text\"'"
        ) from None


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is outside [0, 65535]")
    return port


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _revision(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a revision number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _connection_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("connection")
    group.add_argument(
        "--address",
        default=os.environ.get("FLOU_ADDRESS") or DEFAULT_ADDRESS,
        help=f"the server, host:port (env FLOU_ADDRESS; default {DEFAULT_ADDRESS})",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("FLOU_TOKEN") or None,
        help="bearer token sent as 'authorization: Bearer ...' (env FLOU_TOKEN)",
    )
    group.add_argument("--tls", action="store_true", help="connect with TLS (system CA roots)")
    group.add_argument("--ca", metavar="FILE", help="PEM CA bundle of the server (implies --tls)")
    group.add_argument(
        "--cert",
        dest="client_cert",
        metavar="FILE",
        help="PEM client certificate, for mutual TLS (with --key)",
    )
    group.add_argument(
        "--key", dest="client_key", metavar="FILE", help="PEM private key of --cert"
    )
    group.add_argument(
        "--timeout",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="deadline of each call, retries included (default 30)",
    )
    group.add_argument(
        "--json", action="store_true", help="print the response as JSON instead of text"
    )
    return options


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: `serve`, `db upgrade` and the client commands."""
    parser = argparse.ArgumentParser(
        prog="flou-grpc",
        description="Durable, observable state machines behind a gRPC API.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flou-grpc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(commands)
    _db_parser(commands)
    connection = _connection_options()

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=description,
            parents=[connection],
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    start = command(
        "start",
        "start an instance of a machine",
        "Start an instance of a registered machine; print it (its id first).",
    )
    start.add_argument("machine", metavar="MACHINE", help="a registered machine's name")
    start.add_argument(
        "--payload",
        type=json_object,
        metavar="JSON",
        help="JSON object passed to the root's run(**payload)",
    )
    start.add_argument("--id", dest="instance_id", default="", help="the instance's id")
    start.add_argument("--wait", choices=WAIT_MODES, help="when to answer (default processed)")

    transition = command(
        "transition",
        "send an event (a transition label) to an instance",
        "Send the event LABEL to an instance; print the transitions that fired.",
    )
    transition.add_argument("instance", metavar="INSTANCE")
    transition.add_argument("label", metavar="LABEL", help="the label (template if params)")
    transition.add_argument(
        "--payload",
        type=json_object,
        metavar="JSON",
        help="JSON object passed to the targets' run(**payload)",
    )
    transition.add_argument(
        "--params",
        type=json_object_list,
        metavar="JSON",
        help='JSON list of lanes binding {param} fields: \'[{"id": "a"}]\'',
    )
    transition.add_argument("--namespace", default="", help="default: the root's name")
    transition.add_argument(
        "--expected-revision",
        type=_revision,
        default=0,
        metavar="N",
        help="only if the instance is still at revision N (else exit 1, ABORTED)",
    )
    transition.add_argument(
        "--wait", choices=WAIT_MODES, help="when to answer (default processed)"
    )

    update = command(
        "update",
        "set keys of an instance's state",
        "Set dotted keys of the state of a node: flou-grpc update ID total=12.5 "
        "customer.name='\"Ada\"' (each value is JSON).",
    )
    update.add_argument("instance", metavar="INSTANCE")
    update.add_argument(
        "updates", metavar="KEY=JSON", nargs="+", type=assignment, help="a key and its value"
    )
    update.add_argument("--fqn", default="", help="the node (default: the root)")
    update.add_argument(
        "--expected-revision", type=_revision, default=0, metavar="N", help="see transition"
    )
    update.add_argument("--wait", choices=WAIT_MODES, help="when to answer (default processed)")

    append = command(
        "append",
        "append a value to a list in an instance's state",
        "Append a JSON value to the list at KEY, atomically; print the whole list.",
    )
    append.add_argument("instance", metavar="INSTANCE")
    append.add_argument("key", metavar="KEY", help="the dotted key of the list")
    append.add_argument("value", metavar="JSON", type=json_value, help="the value")
    append.add_argument("--fqn", default="", help="the node (default: the root)")

    get = command("get", "show an instance", "Show an instance at its current revision.")
    get.add_argument("instance", metavar="INSTANCE")
    get.add_argument("--full", action="store_true", help="also show its state and errors")

    listing = command("list", "list instances", "List instances, newest first.")
    listing.add_argument("--machine", default="", help="only instances of this machine")
    listing.add_argument("--status", choices=STATUSES, help="only instances in this status")
    listing.add_argument(
        "--limit", type=int, default=100, metavar="N", help="at most N (default 100)"
    )

    history = command(
        "history", "show an instance's events", "Show the events of an instance, in order."
    )
    history.add_argument("instance", metavar="INSTANCE")
    history.add_argument(
        "--from",
        dest="from_revision",
        type=_revision,
        default=0,
        metavar="N",
        help="from revision N (default: the oldest kept)",
    )

    describe = command(
        "describe",
        "show a machine's structure",
        "Show the structure of a registered machine: as an indented tree, as JSON, or as a "
        "Mermaid stateDiagram-v2.",
    )
    describe.add_argument("machine", metavar="MACHINE")
    describe.add_argument("--format", choices=("text", "json", "mermaid"), default="text")

    watch = command(
        "watch",
        "follow an instance live",
        "Print an instance, then one line per event as it happens: revision, kind, what it "
        "concerns, and a summary of its JSON patch. Reconnects by itself. Ctrl-C stops.",
    )
    watch.add_argument("instance", metavar="INSTANCE")
    watch.add_argument(
        "--from",
        dest="from_revision",
        type=_revision,
        default=0,
        metavar="N",
        help="start at revision N (default: the current one)",
    )
    watch.add_argument("--verbose", "-v", action="store_true", help="print heartbeats too")

    command("machines", "list the registered machines", "List the registered machines.")
    return parser


def _serve_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server until SIGTERM or Ctrl-C. Options override the "
        "environment variables named in their help.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", help="address to listen on (env FLOU_HOST; default 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, help="port to listen on, 0 for any free one (env FLOU_PORT; 50051)"
    )
    serve.add_argument(
        "--app",
        action="append",
        metavar="MODULE",
        help="module whose root machines are served (pkg.module or path/to/file.py); repeat "
        "it or separate modules by commas (env FLOU_APP)",
    )
    serve.add_argument(
        "--database-url",
        help="sqlite:///file.db, postgresql+psycopg://user@host/db or memory:// "
        "(env FLOU_DATABASE_URL; default sqlite:///flou.db)",
    )
    serve.add_argument(
        "--metrics-port",
        type=_port,
        help="serve Prometheus /metrics on this port (env FLOU_METRICS_PORT; default none)",
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO)",
    )


def _db_parser(commands: Any) -> None:
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
