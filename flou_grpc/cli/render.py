"""How the client commands print what the server answers: readable lines."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from flou_client import (
        Event,
        Heartbeat,
        Instance,
        Machine,
        MachineTransition,
        Node,
    )


def one_line(text: str) -> str:
    """Text on one line (an error message for stderr, a description in a table)."""
    return " ".join(text.split())


def print_json(value: object, out: TextIO, *, indent: int | None = 2) -> None:
    """Prints a client result as JSON (`--json`)."""
    from flou_client import as_json

    print(json.dumps(as_json(value), indent=indent, ensure_ascii=False), file=out)


def _compact(value: object, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def time_text(value: datetime | None) -> str:
    """A time, local and to the second (a dash when unknown)."""
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
        f"updated   {time_text(instance.update_time)}",
    ]
    if full:
        state = json.dumps(instance.state, indent=2, ensure_ascii=False, sort_keys=True)
        lines += ["state", *("  " + line for line in state.splitlines())]
        if instance.errors:
            lines.append("errors")
            for error in instance.errors:
                retrying = "retrying" if error.retrying else "retries exhausted"
                lines.append(
                    f"  {error.fqn}  {error.type}: {one_line(error.message)}  "
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
        subject += f" {event.error.type}: {one_line(event.error.message)}"
    if event.rejection is not None:
        reason = event.rejection.reason.removeprefix("ERROR_REASON_")
        subject += f" {reason}: {one_line(event.rejection.message)}"
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
    return f"{heartbeat.revision:>6}  {'heartbeat':<13}  {time_text(heartbeat.time)}"


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


def table(rows: Iterable[Sequence[str]], header: Sequence[str]) -> list[str]:
    """Rows as aligned text lines under a header."""
    data = [list(header), *(list(r) for r in rows)]
    widths = [max(len(row[i]) for row in data) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in data
    ]
