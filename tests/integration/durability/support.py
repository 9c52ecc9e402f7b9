"""Helpers of the durability tests: a killable runtime process, and the checks of a history."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flou_grpc.engine import apply_patch
from flou_grpc.runtime import Event


def without_work_ids(events: list[Event]) -> list[tuple[int, str, dict[str, Any], Any]]:
    """The history as (revision, kind, item, patch), work item ids (random) left out."""
    return [
        (
            event.revision,
            str(event.kind),
            {k: v for k, v in event.item.items() if k != "work_item_id"},
            event.patch,
        )
        for event in events
    ]


def check_history(instance_id: str, events: list[Event], document: dict[str, Any]) -> None:
    """Revisions 1..N without gaps or repeats, replay gives `document`, no step twice."""
    revisions = [event.revision for event in events]
    assert revisions == list(range(1, len(events) + 1)), (instance_id, revisions)
    replayed: dict[str, Any] = {}
    for event in events:
        replayed = apply_patch(replayed, event.patch)
    assert replayed == document, instance_id
    work_ids = Counter(e.item["work_item_id"] for e in events if "work_item_id" in e.item)
    twice = {work_id: n for work_id, n in work_ids.items() if n > 1}
    assert not twice, f"{instance_id}: work items committed more than once: {twice}"


class WorkerProcess:
    """One runtime process (`worker.py`); its stdout (the phase marks) goes to a file."""

    def __init__(self, args: list[str], cwd: Path, out: Path, err: Path) -> None:
        self.out, self.err = out, err
        with out.open("wb") as stdout, err.open("wb") as stderr:
            self.popen = subprocess.Popen(args, cwd=cwd, stdout=stdout, stderr=stderr)
        self.pid = self.popen.pid

    def lines(self) -> list[list[str]]:
        """The marks written so far, each split into its words."""
        return [line.split() for line in self.out.read_text().splitlines() if line.strip()]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Waits until the runtime is up (its `ready` mark); fails if the process died."""
        self.wait_for(lambda lines: any(words[0] == "ready" for words in lines), timeout)

    def wait_for(self, condition: Callable[[list[list[str]]], bool], timeout: float) -> bool:
        """Polls the marks until `condition` holds (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self.lines()):
                return True
            if self.popen.poll() is not None:
                pytest.fail(
                    f"worker {self.pid} exited with {self.popen.returncode}:\n"
                    + self.err.read_text()[-4000:]
                )
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        """SIGKILLs the process (no clean-up of any kind runs) and reaps it."""
        self.popen.kill()  # SIGKILL; nothing if it was reaped already
        self.popen.wait(timeout=30)
