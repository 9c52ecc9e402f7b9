"""`Observer`: what a runtime tells whoever counts its work (the server's metrics).

The runtime knows nothing of Prometheus: it calls these methods, which must be
cheap and must not raise; the default does nothing.
"""

from __future__ import annotations

__all__ = ["Observer"]


class Observer:
    """Receives the runtime's countable moments; subclass and override what you count."""

    def step_committed(self, kind: str) -> None:
        """A step was committed; `kind` is its event kind (executed, rejected, ...)."""

    def run_failed(self, machine: str, fqn: str) -> None:
        """A node's `run` raised (each attempt)."""
