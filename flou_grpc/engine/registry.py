"""The registry: the machines a Runtime or a server may start, by name.

Only registered machines can be started: a client names a machine, never a
class path, so nothing a client sends is ever imported. Machines are
registered one class at a time, or by importing a module (`--app
mypkg.machines`) and registering every root it defines: root LTMs, and
classes that bring their own host (`__flou_hosted__`, e.g. an Orchestrator).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from typing import Any

from flou_grpc.engine.declaration import declaration
from flou_grpc.engine.hosting import Hosted
from flou_grpc.engine.ltm import LTM
from flou_grpc.engine.machine import Machine
from flou_grpc.errors import MachineNotFoundError

__all__ = ["Registry", "roots_of_module"]


class Registry:
    """Registered machines by name; iteration is in name order."""

    def __init__(self, machines: Iterable[type[Any]] = ()) -> None:
        self._machines: dict[str, Hosted] = {}
        for cls in machines:
            self.register(cls)

    def register(self, cls: type[Any]) -> Hosted:
        """Validates and registers a root LTM class, or a class with its own host.

        Registering a class again is a no-op.

        Raises:
            InvalidDefinitionError: The class or its tree is declared wrong.
            ValueError: Another class is registered under the same name.
        """
        hosting = getattr(cls, "__flou_hosted__", None)
        machine: Hosted = hosting() if hosting is not None else Machine(cls)
        existing = self._machines.get(machine.name)
        if existing is not None:
            if existing.root is cls:
                return existing
            taken = f"{existing.root.__module__}.{existing.root.__qualname__}"
            raise ValueError(
                f"machine name {machine.name!r} is taken by {taken}; "
                f"cannot register {cls.__module__}.{cls.__qualname__}"
            )
        self._machines[machine.name] = machine
        return machine

    def register_module(self, module: str) -> list[Hosted]:
        """Imports a module and registers every root it defines (see `roots_of_module`).

        Raises:
            ImportError: The module cannot be imported.
            ValueError: It defines no root LTM.
        """
        roots = roots_of_module(module)
        if not roots:
            raise ValueError(f"module {module!r} defines no root LTM or orchestrator class")
        return [self.register(cls) for cls in roots]

    def get(self, name: str) -> Hosted:
        """The machine registered as `name`.

        Raises:
            MachineNotFoundError: None is.
        """
        machine = self._machines.get(name)
        if machine is None:
            raise MachineNotFoundError(name)
        return machine

    def __iter__(self) -> Iterator[Hosted]:
        return iter(sorted(self._machines.values(), key=lambda m: m.name))

    def __len__(self) -> int:
        return len(self._machines)

    def __contains__(self, name: object) -> bool:
        return name in self._machines


def roots_of_module(module: str) -> list[type[Any]]:
    """The roots a module defines.

    Its LTM classes that no other LTM of it uses as a child, and its classes
    with a host of their own (`__flou_hosted__`: orchestrators).
    """
    imported = importlib.import_module(module)
    defined = [
        value
        for value in vars(imported).values()
        if isinstance(value, type)
        and issubclass(value, LTM)
        and value.__module__ == imported.__name__
        and "_flou_declaration" in value.__dict__
    ]
    children = {child for cls in defined for child in declaration(cls).children}
    hosted = [
        value
        for value in vars(imported).values()
        if isinstance(value, type)
        and value.__module__ == imported.__name__
        and callable(getattr(value, "__flou_hosted__", None))
    ]
    return [cls for cls in defined if cls not in children] + hosted
