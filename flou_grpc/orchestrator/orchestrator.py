"""`Orchestrator`: python-statemachine machines grouped as typed fields (seed 003's API).

    class ECommerceOrchestrator(Orchestrator):
        order: OrderStateMachine
        payment: PaymentStateMachine

    orc = ECommerceOrchestrator(order=OrderStateMachine(), payment=PaymentStateMachine())

Construction is dataclass-like (keyword or positional arguments, in field
order) and typed through `typing.dataclass_transform`, so mypy and IDEs see the
fields. Every machine gets an `Injector` listener: each of its callbacks that
names a parameter `orc` (or the class's `orchestrator_name`) receives the
orchestrator, through python-statemachine's own dependency injection, so a
callback can drive the other machines (`orc.payment.authorize()`) with
python-statemachine's semantics unchanged.

Declaration errors (a field that is not a StateMachine class, a default value,
an injection name that is not usable or clashes with a field) raise
`InvalidDefinitionError` when the class is created; construction errors (a
missing, extra or mistyped machine) raise `TypeError`, as a dataclass does.
"""

from __future__ import annotations

import keyword
import sys
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, dataclass_transform

from statemachine import StateChart
from statemachine.model import Model

from flou_grpc.errors import InvalidDefinitionError
from flou_grpc.orchestrator.injection import RESERVED_NAMES, Injector

__all__ = [
    "DEFAULT_ORCHESTRATOR_NAME",
    "Orchestrator",
    "event_ids",
    "machine_fields",
    "machines_of",
]

DEFAULT_ORCHESTRATOR_NAME = "orc"
"""The name callbacks ask for the orchestrator by, unless the class says otherwise."""

MachineClass = type[StateChart[Any]]


@dataclass_transform()
class Orchestrator:
    """The base of orchestrators: subclass it and annotate one field per machine.

    Class keyword:
        orchestrator_name: The parameter name callbacks receive the
            orchestrator under (default `orc`; inherited by subclasses).
    """

    __orchestrator_name__: ClassVar[str] = DEFAULT_ORCHESTRATOR_NAME
    """The name the orchestrator is injected under."""

    __orchestrator_fields__: ClassVar[Mapping[str, MachineClass]] = {}
    """Field name -> StateMachine class, in declaration order (bases first)."""

    __orchestrator_pending__: ClassVar[bool] = False
    """Whether some annotation could not be resolved yet (a forward reference)."""

    def __init_subclass__(cls, *, orchestrator_name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if orchestrator_name is not None:
            if not orchestrator_name.isidentifier():
                raise InvalidDefinitionError(
                    cls, f"orchestrator_name {orchestrator_name!r} is not a Python identifier"
                )
            if keyword.iskeyword(orchestrator_name) or orchestrator_name in RESERVED_NAMES:
                raise InvalidDefinitionError(
                    cls,
                    f"orchestrator_name {orchestrator_name!r} is reserved "
                    "(a Python keyword, or an argument python-statemachine injects itself)",
                )
            cls.__orchestrator_name__ = orchestrator_name
        for name in _own_annotations(cls):
            if name in vars(cls):
                raise InvalidDefinitionError(
                    cls, f"machine field {name!r} has a default: every machine is passed in"
                )
            if hasattr(Orchestrator, name):
                raise InvalidDefinitionError(
                    cls, f"machine field {name!r} shadows an attribute of Orchestrator"
                )
        cls.__orchestrator_pending__ = True
        try:
            _resolve(cls)
        except NameError:
            # A forward reference (a machine class defined after the orchestrator):
            # resolved again, for good, when the class is first used.
            return

    def __init__(self, *args: StateChart[Any], **kwargs: StateChart[Any]) -> None:
        fields = machine_fields(type(self))
        names = list(fields)
        if len(args) > len(names):
            raise TypeError(
                f"{type(self).__name__}() takes {len(names)} machines, {len(args)} were given"
            )
        given: dict[str, StateChart[Any]] = dict(zip(names, args, strict=False))
        for name, machine in kwargs.items():
            if name in given:
                raise TypeError(f"{type(self).__name__}() got machine {name!r} twice")
            given[name] = machine
        extra = [name for name in given if name not in fields]
        if extra:
            raise TypeError(
                f"{type(self).__name__}() got unexpected machine(s) {_names(extra)}; "
                f"its fields are {_names(names)}"
            )
        missing = [name for name in names if name not in given]
        if missing:
            raise TypeError(f"{type(self).__name__}() is missing machine(s) {_names(missing)}")
        injector = Injector(type(self).__orchestrator_name__, self)
        for name, cls in fields.items():
            machine = given[name]
            if not isinstance(machine, cls):
                raise TypeError(
                    f"{type(self).__name__}() field {name!r} takes a {cls.__name__}, "
                    f"not {machine!r}"
                )
        for name in names:
            given[name].add_listener(injector)  # type: ignore[no-untyped-call]
            setattr(self, name, given[name])

    @classmethod
    def restore_model(cls, field: str, data: dict[str, Any]) -> object:
        """The model of machine `field` when it is restored, holding `data`.

        `data` is what a snapshot kept of the model (empty when the machine
        kept python-statemachine's own model). The default builds a
        python-statemachine `Model` with those attributes; override it when a
        machine uses a model class of its own (its methods are callbacks too).
        """
        model = Model()  # type: ignore[no-untyped-call]
        for attribute, value in data.items():
            setattr(model, attribute, value)
        return model

    @classmethod
    def __flou_hosted__(cls) -> Any:
        """The host the runtime serves this class through (`flou_grpc.engine.hosting`)."""
        from flou_grpc.orchestrator.hosted import HostedOrchestrator  # it imports this module

        return HostedOrchestrator(cls)

    def __repr__(self) -> str:
        machines = ", ".join(f"{name}={machine!r}" for name, machine in machines_of(self).items())
        return f"{type(self).__name__}({machines})"


def machine_fields(cls: type[Orchestrator]) -> Mapping[str, MachineClass]:
    """The machine fields of an orchestrator class, in declaration order (bases first).

    Raises:
        InvalidDefinitionError: An annotation names no StateMachine class, or
            cannot be resolved.
    """
    if cls.__orchestrator_pending__:
        try:
            _resolve(cls)
        except NameError as exc:
            raise InvalidDefinitionError(
                cls,
                f"cannot resolve a machine annotation ({exc}); define the StateMachine "
                "classes where the orchestrator's module can see them",
            ) from None
    return cls.__orchestrator_fields__


def machines_of(orc: Orchestrator) -> dict[str, StateChart[Any]]:
    """The machines of an orchestrator, by field name, in field order."""
    return {name: getattr(orc, name) for name in machine_fields(type(orc))}


def event_ids(machine_cls: MachineClass) -> list[str]:
    """The ids of the events a StateMachine class declares, in declaration order."""
    events: Any = machine_cls.events  # a property of the metaclass: typed as the method
    return [event.id for event in events]


def _own_annotations(cls: type) -> dict[str, Any]:
    annotations: dict[str, Any] = vars(cls).get("__annotations__", {})
    return {
        name: hint
        for name, hint in annotations.items()
        if not _is_class_var(hint) and not name.startswith("__")
    }


def _is_class_var(hint: object) -> bool:
    if isinstance(hint, str):
        return hint.startswith(("ClassVar", "typing.ClassVar"))
    return typing.get_origin(hint) is ClassVar or hint is ClassVar


def _resolve(cls: type[Orchestrator]) -> None:
    """Resolves and checks the fields of `cls` and its bases; NameError if not yet possible."""
    fields: dict[str, MachineClass] = {}
    for klass in reversed(cls.__mro__):
        if not issubclass(klass, Orchestrator):
            continue
        own = _own_annotations(klass)
        if not own:
            continue
        module = sys.modules.get(klass.__module__)
        globalns = dict(vars(module)) if module is not None else {}
        localns = dict(vars(klass))
        for name, hint in own.items():
            value = eval(hint, globalns, localns) if isinstance(hint, str) else hint
            if not (isinstance(value, type) and issubclass(value, StateChart)):
                raise InvalidDefinitionError(
                    cls,
                    f"machine field {name!r} is annotated {value!r}, which is not a "
                    "python-statemachine StateMachine class",
                )
            fields[name] = value
    name = cls.__orchestrator_name__
    if name in fields:
        raise InvalidDefinitionError(
            cls,
            f"the orchestrator is injected as {name!r}, which is also a machine field; "
            "rename the field or pass another orchestrator_name",
        )
    cls.__orchestrator_fields__ = fields
    cls.__orchestrator_pending__ = False


def _names(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)
