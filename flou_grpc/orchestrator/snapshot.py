"""Snapshots: an orchestrator's machines as JSON, and back, without running any action.

A snapshot is a JSON object::

    {"version": 1,
     "machines": {
        "order":   {"configuration": ["shipping", "packing"], "model": null},
        "payment": {"configuration": ["authorized"], "model": {"amount": 10},
                    "history": {"h": ["a1"]}, "stateField": "status"}}}

- `configuration`: the ids of the active states, in python-statemachine's
  order; a compound state is listed with its active descendants, a parallel
  state with every region's.
- `model`: the public attributes (not starting with `_`) of the machine's
  model other than its state field, as JSON; null when the machine keeps
  python-statemachine's own `Model` holding nothing else. Attributes of the
  machine object itself are not part of it: keep data on the model.
- `history`: the saved configurations of history states, when there are any.
- `stateField`: the model's state field, when it is not `state`.

`restore` rebuilds each machine by handing python-statemachine a model whose
state field already holds the configuration: python-statemachine then skips
its initial activation, so no entry action runs again (rehydration).
"""

from __future__ import annotations

from typing import Any, TypeVar

from statemachine import StateChart
from statemachine.model import Model
from statemachine.orderedset import OrderedSet
from statemachine.state import State

from flou_grpc.engine.document import JsonObject, json_copy
from flou_grpc.errors import InvalidDefinitionError
from flou_grpc.orchestrator.injection import Injector
from flou_grpc.orchestrator.orchestrator import (
    MachineClass,
    Orchestrator,
    machine_fields,
    machines_of,
)

__all__ = ["SNAPSHOT_VERSION", "reset", "restore", "snapshot"]

SNAPSHOT_VERSION = 1
"""The version of the snapshot format `snapshot` writes and `restore` reads."""

_DEFAULT_STATE_FIELD = "state"

OrchestratorT = TypeVar("OrchestratorT", bound=Orchestrator)


def snapshot(orc: Orchestrator) -> JsonObject:
    """The configurations and model data of every machine of `orc`, as JSON.

    Raises:
        InvalidDefinitionError: A model attribute is not a JSON value.
    """
    return {
        "version": SNAPSHOT_VERSION,
        "machines": {
            name: _machine_snapshot(type(orc), name, machine)
            for name, machine in machines_of(orc).items()
        },
    }


def restore(cls: type[OrchestratorT], data: JsonObject) -> OrchestratorT:
    """A new orchestrator of class `cls`, every machine at its configuration in `data`.

    No entry action (nor any other callback) runs. Models are rebuilt by
    `cls.restore_model`.

    Raises:
        InvalidDefinitionError: `data` does not fit `cls` (another version, other
            machines, a state or attribute the classes do not declare).
    """
    machines = _machines(cls, data)
    return cls(**{name: _rebuild(cls, name, machines[name]) for name in machine_fields(cls)})


def reset(orc: Orchestrator, data: JsonObject) -> None:
    """Puts every machine of `orc` back at the configuration and model data of `data`.

    Used to roll back a failed step. A machine is changed in place (so
    references to it stay valid) unless its engine stopped since (it reached
    a final state): that one is replaced by a machine rebuilt from `data`.
    No callback runs.
    """
    cls = type(orc)
    machines = _machines(cls, data)
    for name, machine in machines_of(orc).items():
        entry = machines[name]
        if machine.is_terminated:
            fresh = _rebuild(cls, name, entry)
            fresh.add_listener(*_injectors(machine))  # type: ignore[no-untyped-call]
            setattr(orc, name, fresh)
            continue
        model = machine.model
        saved = entry.get("model")
        if saved is not None:
            for attribute in [a for a in vars(model) if _persisted(a, machine.state_field)]:
                if attribute not in saved:
                    delattr(model, attribute)
            for attribute, value in json_copy(saved).items():
                setattr(model, attribute, value)
        machine.current_state_value = _state_value(cls, name, type(machine), entry)
        machine.history_values = _history(cls, name, type(machine), entry)


# --- snapshot -----------------------------------------------------------------------


def _machine_snapshot(cls: type[Orchestrator], name: str, machine: StateChart[Any]) -> JsonObject:
    entry: JsonObject = {
        "configuration": [state.id for state in machine.configuration],
        "model": _model_data(cls, name, machine),
    }
    if machine.history_values:
        entry["history"] = {
            history: [state.id for state in states]
            for history, states in machine.history_values.items()
        }
    if machine.state_field != _DEFAULT_STATE_FIELD:
        entry["stateField"] = machine.state_field
    return entry


def _model_data(cls: type[Orchestrator], name: str, machine: StateChart[Any]) -> Any:
    model = machine.model
    try:
        attributes = vars(model)
    except TypeError:
        raise InvalidDefinitionError(
            cls, f"the model of machine {name!r} has no __dict__ to persist"
        ) from None
    data = {a: v for a, v in attributes.items() if _persisted(a, machine.state_field)}
    if type(model) is Model and not data:
        return None
    try:
        return json_copy(data, f"{name}.model")
    except ValueError as exc:
        raise InvalidDefinitionError(cls, f"cannot persist machine {name!r}: {exc}") from None


def _persisted(attribute: str, state_field: str) -> bool:
    return attribute != state_field and not attribute.startswith("_")


# --- restore ------------------------------------------------------------------------


def _machines(cls: type[Orchestrator], data: object) -> dict[str, JsonObject]:
    if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        raise InvalidDefinitionError(
            cls, f"snapshot version {version!r} is not {SNAPSHOT_VERSION}"
        )
    machines = data.get("machines")
    fields = machine_fields(cls)
    if not isinstance(machines, dict) or set(machines) != set(fields):
        found = sorted(machines) if isinstance(machines, dict) else machines
        raise InvalidDefinitionError(
            cls, f"snapshot holds machines {found!r}, the class declares {sorted(fields)!r}"
        )
    for name, entry in machines.items():
        if not isinstance(entry, dict):
            raise InvalidDefinitionError(cls, f"snapshot of machine {name!r} is not an object")
    return machines


def _rebuild(cls: type[Orchestrator], name: str, entry: JsonObject) -> StateChart[Any]:
    machine_cls = machine_fields(cls)[name]
    state_field = str(entry.get("stateField", _DEFAULT_STATE_FIELD))
    saved = entry.get("model")
    model = cls.restore_model(name, json_copy(saved) if saved is not None else {})
    # The configuration goes on the model first: python-statemachine then sees a
    # current state and does not activate the initial one (no entry action runs).
    setattr(model, state_field, _state_value(cls, name, machine_cls, entry))
    machine = machine_cls(model=model, state_field=state_field)
    machine.history_values = _history(cls, name, machine_cls, entry)
    return machine


def _states_by_id(machine_cls: MachineClass) -> dict[str, State]:
    return {state.id: state for state in machine_cls.states_map.values()}


def _ids_to_states(
    cls: type[Orchestrator], name: str, machine_cls: MachineClass, ids: object, where: str
) -> list[State]:
    states = _states_by_id(machine_cls)
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidDefinitionError(
            cls, f"snapshot of machine {name!r}: {where} is not a list of state ids"
        )
    unknown = [i for i in ids if i not in states]
    if unknown:
        raise InvalidDefinitionError(
            cls,
            f"snapshot of machine {name!r}: {where} names states {unknown!r} that "
            f"{machine_cls.__name__} does not declare",
        )
    return [states[i] for i in ids]


def _state_value(
    cls: type[Orchestrator], name: str, machine_cls: MachineClass, entry: JsonObject
) -> Any:
    states = _ids_to_states(cls, name, machine_cls, entry.get("configuration"), "configuration")
    if not states:
        raise InvalidDefinitionError(cls, f"snapshot of machine {name!r} has no active state")
    if len(states) == 1:
        return states[0].value
    return OrderedSet(state.value for state in states)


def _history(
    cls: type[Orchestrator], name: str, machine_cls: MachineClass, entry: JsonObject
) -> dict[str, list[State]]:
    saved = entry.get("history", {})
    if not isinstance(saved, dict):
        raise InvalidDefinitionError(
            cls, f"snapshot of machine {name!r}: history is not an object"
        )
    return {
        history: _ids_to_states(cls, name, machine_cls, ids, f"history {history!r}")
        for history, ids in saved.items()
    }


def _injectors(machine: StateChart[Any]) -> list[object]:
    return [listener for listener in machine.active_listeners if isinstance(listener, Injector)]
