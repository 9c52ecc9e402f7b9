"""The base of the library's states: every run is recorded in the node's own state."""

from __future__ import annotations

from typing import Any

from flou_grpc.engine import LTM


class Recorder(LTM):
    """No `name`: an abstract base. `run` appends its payload to the state key `runs`."""

    def run(self, **payload: Any) -> None:
        self.record(payload)

    def record(self, payload: dict[str, Any]) -> None:
        self.update_state({"runs": [*self.state.get("runs", ()), payload]})


def runs(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The payloads a recorded node ran with, oldest first (a node's dict from a document)."""
    return list(node.get("runs", []))
