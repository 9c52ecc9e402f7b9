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

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TextIO

from flou_grpc import __version__
from flou_grpc.config import Settings

if TYPE_CHECKING:
    from flou_client import (
        Event,
        FlouClient,
        FlouError,
        Heartbeat,
        Instance,
        Machine,
        MachineTransition,
        Node,
    )

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_AUTH: Final = 4
EXIT_INTERRUPTED: Final = 130

EXIT_CODES: Final = f"""\
exit codes:
  {EXIT_OK}    success
  {EXIT_ERROR}    the server refused or failed the request; stderr says the status code,
       the reason, the message and the metadata (e.g. NOT_FOUND
       ERROR_REASON_INSTANCE_NOT_FOUND), or the server could not start
  {EXIT_USAGE}    usage error: an unknown option, bad JSON in --payload, --params or
       KEY=JSON (the message names the option and says why), an unreadable file
  {EXIT_UNREACHABLE}    cannot reach the server (UNAVAILABLE) or the deadline (--timeout) passed
  {EXIT_AUTH}    unauthenticated or permission denied: check --token / FLOU_TOKEN
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
"""
"""The exit codes, as the epilog of `--help` shows them."""

DEFAULT_ADDRESS: Final = "127.0.0.1:50051"
WAIT_MODES: Final = ("enqueued", "processed", "settled")
STATUSES: Final = ("running", "waiting", "completed", "failed")


class UsageError(Exception):
    """A command-line value the parser could not check by itself (exit 2)."""


# --- parsing ---------------------------------------------------------------------------


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


def _parser() -> argparse.ArgumentParser:
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


# --- the server commands -------------------------------------------------------------------


def _db_upgrade(database_url: str | None) -> None:
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


def _serve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
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


# --- the client commands -------------------------------------------------------------------


def _client(args: argparse.Namespace) -> FlouClient:
    from flou_client import FlouClient

    if (args.client_cert is None) != (args.client_key is None):
        raise UsageError("--cert and --key go together: give both or neither")
    try:
        return FlouClient(
            args.address,
            token=args.token,
            tls=args.tls,
            root_certificates=_read(args.ca, "--ca"),
            client_cert=_read(args.client_cert, "--cert"),
            client_key=_read(args.client_key, "--key"),
            timeout=args.timeout,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _read(path: str | None, option: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror}") from None


def exit_code(error: FlouError) -> int:
    """The exit code of a failed call (see `EXIT_CODES`)."""
    from flou_client import (
        DeadlineExceededError,
        PermissionDeniedError,
        UnauthenticatedError,
        UnavailableError,
    )

    if isinstance(error, UnavailableError | DeadlineExceededError):
        return EXIT_UNREACHABLE
    if isinstance(error, UnauthenticatedError | PermissionDeniedError):
        return EXIT_AUTH
    return EXIT_ERROR


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _print_json(value: object, out: TextIO, *, indent: int | None = 2) -> None:
    from flou_client import as_json

    print(json.dumps(as_json(value), indent=indent, ensure_ascii=False), file=out)


def _compact(value: object, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def instance_lines(instance: Instance, *, full: bool = False) -> list[str]:
    """An instance as `key  value` lines (its state and errors too with `full`)."""
    lines = [
        f"id        {instance.id}",
        f"machine   {instance.machine}",
        f"status    {instance.status.value}",
        f"revision  {instance.revision}",
        f"pending   {instance.pending_work_count}",
        f"active    {', '.join(instance.active_states) or '-'}",
        f"updated   {_time(instance.update_time)}",
    ]
    if full:
        state = json.dumps(instance.state, indent=2, ensure_ascii=False, sort_keys=True)
        lines += ["state", *("  " + line for line in state.splitlines())]
        if instance.errors:
            lines.append("errors")
            for error in instance.errors:
                retrying = "retrying" if error.retrying else "retries exhausted"
                lines.append(
                    f"  {error.fqn}  {error.type}: {_one_line(error.message)}  "
                    f"(attempts {error.attempts}, {retrying}, work item {error.work_item_id})"
                )
    return lines


def patch_summary(patch: Sequence[dict[str, Any]], limit: int = 160) -> str:
    """A JSON patch in one short line: `~/a/_status="active" +/a/runs=[...]`."""
    symbols = {"add": "+", "remove": "-", "replace": "~"}
    parts: list[str] = []
    for op in patch:
        name = str(op.get("op", "?"))
        path = str(op.get("path", "")) or "/"
        part = f"{symbols.get(name, name + ' ')}{path}"
        if "value" in op:
            part += "=" + _compact(op["value"], 40)
        parts.append(part)
    text = " ".join(parts)
    if len(text) > limit:
        text = text[: limit - 1] + f"\u2026 ({len(patch)} ops)"
    return text


def _subject(event: Event) -> str:
    item = event.item
    subject = ""
    if "label" in item:
        subject = f"{item['label']}@{item.get('namespace', '')}"
        if event.fired:
            subject += " " + "; ".join(
                f"{','.join(f.sources)}->{','.join(f.targets)}" for f in event.fired
            )
    elif event.kind.value == "started":
        subject = "payload=" + _compact(item.get("payload", {}))
    else:
        subject = str(item.get("fqn") or "")
        if "key" in item:
            subject += f" {item['key']}"
        if isinstance(item.get("updates"), dict):
            subject += " " + ",".join(sorted(item["updates"]))
    if event.error is not None:
        subject += f" {event.error.type}: {_one_line(event.error.message)}"
    if event.rejection is not None:
        reason = event.rejection.reason.removeprefix("ERROR_REASON_")
        subject += f" {reason}: {_one_line(event.rejection.message)}"
    return subject.strip() or "-"


def event_line(event: Event) -> str:
    """One event in one line: revision, kind, what it concerns, its patch in short."""
    line = f"{event.revision:>6}  {event.kind.value:<13}  {_subject(event)}"
    patch = patch_summary(event.patch)
    return f"{line}  {patch}" if patch else line


def snapshot_line(instance: Instance) -> str:
    """The snapshot that opens a watch, in one line."""
    active = ", ".join(instance.active_states) or "-"
    return (
        f"{instance.revision:>6}  {'snapshot':<13}  {instance.machine} {instance.id}  "
        f"status={instance.status.value} active=[{active}] pending={instance.pending_work_count}"
    )


def heartbeat_line(heartbeat: Heartbeat) -> str:
    """A heartbeat in one line (`watch --verbose`)."""
    return f"{heartbeat.revision:>6}  {'heartbeat':<13}  {_time(heartbeat.time)}"


def transition_text(transition: MachineTransition) -> str:
    """`[a, b] --label--> c  (namespace global, join all)`."""

    def side(names: Sequence[str]) -> str:
        return names[0] if len(names) == 1 else f"[{', '.join(names)}]"

    text = f"{side(transition.sources)} --{transition.label}--> {side(transition.targets)}"
    notes = []
    if transition.custom_namespace:
        notes.append(f"namespace {transition.namespace}")
    if transition.join.value == "all":
        notes.append("join all")
    return text + (f"  ({', '.join(notes)})" if notes else "")


def tree_lines(machine: Machine) -> list[str]:
    """A described machine as an indented tree, each machine's transitions under it."""
    kind = machine.kind.value
    head = f"{machine.name} ({kind})" + (f": {machine.description}" if machine.description else "")
    lines = [head]

    def walk(node: Node, depth: int) -> None:
        pad = "  " * depth
        notes = [node.kind.value]
        if node.init:
            notes.append("init: " + ", ".join(node.init))
        if node.final:
            notes.append("final")
        lines.append(f"{pad}{node.name}  [{'; '.join(notes)}]")
        for child in node.children:
            walk(child, depth + 1)
        for transition in node.transitions:
            lines.append(f"{pad}  {transition_text(transition)}")

    if machine.root is not None:
        walk(machine.root, 1)
    return lines


def _table(rows: Iterable[Sequence[str]], header: Sequence[str]) -> list[str]:
    data = [list(header), *(list(r) for r in rows)]
    widths = [max(len(row[i]) for row in data) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in data
    ]


def _run_client_command(args: argparse.Namespace, out: TextIO) -> None:
    client = _client(args)
    with client:
        COMMANDS[args.command](client, args, out)


def _start(client: FlouClient, args: argparse.Namespace, out: TextIO) -> None:
    instance = client.start(
        args.machine, args.payload, instance_id=args.instance_id, wait=args.wait
    )
    if args.json:
        _print_json(instance, out)
    else:
        print("\n".join(instance_lines(instance)), file=out)


def _transition(client: FlouClient, args: argparse.Namespace, out: TextIO) -> None:
    result = client.transition(
        args.instance,
        args.label,
        args.payload,
        params=args.params,
        namespace=args.namespace,
        expected_revision=args.expected_revision,
        wait=args.wait,
    )
    if args.json:
        _print_json(result, out)
        return
    for fired in result.fired:
        sources, targets = ", ".join(fired.sources), ", ".join(fired.targets)
        print(f"fired     {fired.label}@{fired.namespace}: {sources} -> {targets}", file=out)
    if not result.fired and args.wait == "enqueued":
        print(f"enqueued  work item {result.work_item_id}", file=out)
    print("\n".join(instance_lines(result.instance)), file=out)


def _update(client: FlouClient, args: argparse.Namespace, out: TextIO) -> None:
    result = client.update_state(
        args.instance,
        dict(args.updates),
        fqn=args.fqn,
        expected_revision=args.expected_revision,
        wait=args.wait,
    )
    if args.json:
        _print_json(result, out)
    else:
        print("\n".join(instance_lines(result.instance)), file=out)


def _append(client: FlouClient, args: argparse.Namespace, out: TextIO) -> None:
    result = client.atomic_append(args.instance, args.key, args.value, fqn=args.fqn)
    if args.json:
        _print_json(result, out)
    else:
        print(f"revision  {result.revision}", file=out)
        print(f"values    {json.dumps(result.values, ensure_ascii=False)}", file=out)


def _get(client: FlouClient, args: argparse.Namespace, out: TextIO) -> None:
    instance = client.get_instance(args.instance, view="full" if args.full else "basic")
    if args.json:
        _print_json(instance, out)
    else:
        print("\n".join(instance_lines(instance, full=args.full)), file=out)


def _list(client: FlouClient, args: argparse.Namespace, out: TextIO) -> None:
    found: list[Instance] = []
    limit = max(args.limit, 1)
    for instance in client.iter_instances(
        machine=args.machine, status=args.status, page_size=min(limit, 1000)
    ):
        found.append(instance)
        if len(found) >= limit:
            break
    if args.json:
        _print_json({"instances": found}, out)
        return
    rows = [
        (i.id, i.machine, i.status.value, str(i.revision), _time(i.update_time)) for i in found
    ]
    print("\n".join(_table(rows, ("ID", "MACHINE", "STATUS", "REVISION", "UPDATED"))), file=out)


def _history(client: FlouClient, args: argparse.Namespace, out: TextIO) -> None:
    events = client.iter_history(args.instance, from_revision=args.from_revision)
    if args.json:
        _print_json({"events": list(events)}, out)
        return
    for event in events:
        print(event_line(event), file=out)


def _describe(client: FlouClient, args: argparse.Namespace, out: TextIO) -> None:
    from flou_client.mermaid import to_mermaid

    machine = client.describe_machine(args.machine)
    if args.json or args.format == "json":
        _print_json(machine, out)
    elif args.format == "mermaid":
        out.write(to_mermaid(machine))
    else:
        print("\n".join(tree_lines(machine)), file=out)


def _watch(client: FlouClient, args: argparse.Namespace, out: TextIO) -> None:
    from flou_client import Event, Heartbeat

    for item in client.watch(args.instance, from_revision=args.from_revision):
        if args.json:
            kind = (
                "event"
                if isinstance(item, Event)
                else "heartbeat"
                if isinstance(item, Heartbeat)
                else "snapshot"
            )
            _print_json({kind: item}, out, indent=None)
        elif isinstance(item, Event):
            print(event_line(item), file=out)
        elif isinstance(item, Heartbeat):
            if args.verbose:
                print(heartbeat_line(item), file=out)
        else:
            print(snapshot_line(item), file=out)
        out.flush()


def _machines(client: FlouClient, args: argparse.Namespace, out: TextIO) -> None:
    machines: list[Machine] = []
    token = ""
    while True:
        page = client.list_machines(page_token=token)
        machines += page.machines
        token = page.next_page_token
        if not token:
            break
    if args.json:
        _print_json({"machines": machines}, out)
        return
    rows = [(m.name, m.kind.value, _one_line(m.description)) for m in machines]
    print("\n".join(_table(rows, ("NAME", "KIND", "DESCRIPTION"))), file=out)


COMMANDS: Final[dict[str, Callable[[FlouClient, argparse.Namespace, TextIO], None]]] = {
    "start": _start,
    "transition": _transition,
    "update": _update,
    "append": _append,
    "get": _get,
    "list": _list,
    "history": _history,
    "describe": _describe,
    "watch": _watch,
    "machines": _machines,
}
"""The client commands, by name."""


# --- the entry point ----------------------------------------------------------------------


def run(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Runs the command line and returns its exit code (see `EXIT_CODES`)."""
    parser = _parser()
    args = parser.parse_args(argv)
    out = sys.stdout if out is None else out
    if args.command == "db":
        _db_upgrade(args.database_url)
        return EXIT_OK
    if args.command == "serve":
        return _serve(parser, args)
    from flou_client import FlouError

    try:
        _run_client_command(args, out)
    except UsageError as exc:
        print(f"flou-grpc {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FlouError as exc:
        code = exit_code(exc)
        where = f"cannot reach {args.address}: " if code == EXIT_UNREACHABLE else ""
        print(f"flou-grpc: {where}{_one_line(str(exc))}", file=sys.stderr)
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
