"""The structure of an orchestrator class, as plain data: what `DescribeMachine` shows.

For each machine field: its states (nested: compound children, parallel
regions, history pseudo-states), with their initial and final flags; its
events; and its transitions as (source, target, event) rows. Initial
transitions (the default child of a compound state) are not listed: the
`initial` flags say the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from statemachine.state import State

from flou_grpc.orchestrator.orchestrator import (
    MachineClass,
    Orchestrator,
    event_ids,
    machine_fields,
)

__all__ = ["MachineInfo", "OrchestratorInfo", "StateInfo", "TransitionInfo", "describe"]

StateKind = Literal["atomic", "compound", "parallel", "history"]


@dataclass(frozen=True, slots=True)
class StateInfo:
    """One state, with the states nested in it."""

    id: str
    name: str
    kind: StateKind
    initial: bool
    final: bool
    children: tuple[StateInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class TransitionInfo:
    """One transition for one event (a transition with two events is two rows)."""

    source: str
    target: str | None
    """The first target's id; None for a targetless transition."""
    event: str
    """The event id; empty for an eventless transition."""
    targets: tuple[str, ...] = ()
    """Every target's id (several for a multi-target transition)."""
    internal: bool = False


@dataclass(frozen=True, slots=True)
class MachineInfo:
    """One machine field of an orchestrator."""

    field: str
    machine: str
    """The StateMachine class's name."""
    states: tuple[StateInfo, ...]
    """The top-level states, in declaration order."""
    events: tuple[str, ...]
    transitions: tuple[TransitionInfo, ...]


@dataclass(frozen=True, slots=True)
class OrchestratorInfo:
    """An orchestrator class: its name, injection name and machines."""

    name: str
    orchestrator_name: str
    machines: tuple[MachineInfo, ...]


def describe(cls: type[Orchestrator]) -> OrchestratorInfo:
    """The structure of every machine of an orchestrator class."""
    return OrchestratorInfo(
        name=cls.__name__,
        orchestrator_name=cls.__orchestrator_name__,
        machines=tuple(
            _machine(field, machine_cls) for field, machine_cls in machine_fields(cls).items()
        ),
    )


def _machine(field: str, machine_cls: MachineClass) -> MachineInfo:
    transitions = [
        TransitionInfo(
            source=transition.source.id,
            target=transition.target.id if transition.target is not None else None,
            event=str(event),
            targets=tuple(target.id for target in transition.targets),
            internal=bool(transition.internal),
        )
        for state in machine_cls.states_map.values()
        for transition in state.transitions
        if not transition.initial
        for event in (list(transition.events) or [""])
    ]
    return MachineInfo(
        field=field,
        machine=machine_cls.__name__,
        states=tuple(_state(state) for state in machine_cls.states),
        events=tuple(event_ids(machine_cls)),
        transitions=tuple(transitions),
    )


def _state(state: State) -> StateInfo:
    kind: StateKind
    if state.is_history:
        kind = "history"
    elif state.parallel:
        kind = "parallel"
    elif state.is_compound:
        kind = "compound"
    else:
        kind = "atomic"
    return StateInfo(
        id=state.id,
        name=str(state.name),
        kind=kind,
        initial=bool(state.initial),
        final=bool(state.final),
        children=tuple(_state(child) for child in (*state.states, *state.history)),
    )
