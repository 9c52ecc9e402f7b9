"""Injection: how an orchestrator reaches the callbacks of its machines.

python-statemachine calls every `prepare_event` callback it finds (on the
machine, its model and its listeners) before the callbacks of an event, and
merges the dicts they return into the keyword arguments that it then binds, by
name, to every guard, validator and action. An `Injector` is a listener that
has only that one callback: it adds `{name: orchestrator}`, so a callback that
names the parameter (`def after_process(self, orc)`) receives the orchestrator
and one that does not is called as before. No private API is touched.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RESERVED_NAMES", "Injector"]

RESERVED_NAMES = frozenset(
    {"event_data", "machine", "event", "model", "transition", "state", "source", "target"}
)
"""The arguments python-statemachine itself injects: an orchestrator name may not be one."""


class Injector:
    """A python-statemachine listener that injects one object under one name.

    It defines no other attribute a listener could be searched for, so it adds
    no callback of its own to the machine.
    """

    __slots__ = ("_name", "_value")

    def __init__(self, name: str, value: object) -> None:
        self._name = name
        self._value = value

    def prepare_event(self) -> dict[str, Any]:
        """The extra keyword arguments of every callback of the event being processed."""
        return {self._name: self._value}
