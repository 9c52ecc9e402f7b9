"""The client commands: each drives a running server through `flou_client`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TextIO

if TYPE_CHECKING:
    from flou_client import (
        FlouClient,
        Instance,
        Machine,
    )

from flou_grpc.cli.exits import UsageError
from flou_grpc.cli.render import (
    event_line,
    heartbeat_line,
    instance_lines,
    one_line,
    print_json,
    snapshot_line,
    table,
    time_text,
    tree_lines,
)


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


def run_client_command(args: argparse.Namespace, out: TextIO) -> None:
    """Runs the client command `args` names against the server, printing to `out`."""
    client = _client(args)
    with client:
        COMMANDS[args.command](client, args, out)


def _start(client: FlouClient, args: argparse.Namespace, out: TextIO) -> None:
    instance = client.start(
        args.machine, args.payload, instance_id=args.instance_id, wait=args.wait
    )
    if args.json:
        print_json(instance, out)
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
        print_json(result, out)
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
        print_json(result, out)
    else:
        print("\n".join(instance_lines(result.instance)), file=out)


def _append(client: FlouClient, args: argparse.Namespace, out: TextIO) -> None:
    result = client.atomic_append(args.instance, args.key, args.value, fqn=args.fqn)
    if args.json:
        print_json(result, out)
    else:
        print(f"revision  {result.revision}", file=out)
        print(f"values    {json.dumps(result.values, ensure_ascii=False)}", file=out)


def _get(client: FlouClient, args: argparse.Namespace, out: TextIO) -> None:
    instance = client.get_instance(args.instance, view="full" if args.full else "basic")
    if args.json:
        print_json(instance, out)
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
        print_json({"instances": found}, out)
        return
    rows = [
        (i.id, i.machine, i.status.value, str(i.revision), time_text(i.update_time)) for i in found
    ]
    print("\n".join(table(rows, ("ID", "MACHINE", "STATUS", "REVISION", "UPDATED"))), file=out)


def _history(client: FlouClient, args: argparse.Namespace, out: TextIO) -> None:
    events = client.iter_history(args.instance, from_revision=args.from_revision)
    if args.json:
        print_json({"events": list(events)}, out)
        return
    for event in events:
        print(event_line(event), file=out)


def _describe(client: FlouClient, args: argparse.Namespace, out: TextIO) -> None:
    from flou_client.mermaid import to_mermaid

    machine = client.describe_machine(args.machine)
    if args.json or args.format == "json":
        print_json(machine, out)
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
            print_json({kind: item}, out, indent=None)
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
        print_json({"machines": machines}, out)
        return
    rows = [(m.name, m.kind.value, one_line(m.description)) for m in machines]
    print("\n".join(table(rows, ("NAME", "KIND", "DESCRIPTION"))), file=out)


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
