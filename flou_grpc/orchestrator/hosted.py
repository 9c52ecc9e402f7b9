"""`HostedOrchestrator`: an Orchestrator class served like an LTM machine.

The runtime hosts it through the engine's `Hosted` protocol
(`Orchestrator.__flou_hosted__`), so the same store, mailbox, history and RPCs
serve it:
- the instance document is `{"orchestrator": snapshot}`: every machine's
  configuration (compound and parallel states included) and model data;
- `Start` builds the machines at their initial states (their initial entry
  actions run once) and commits that snapshot;
- `Transition` sends one event to one machine: the label is the event, the
  namespace the machine's field. The orchestrator is restored from the
  document (no entry action runs again), the event sent (callbacks may send
  events to the other machines), and the new snapshot committed as one step;
  on any error nothing is committed: TransitionNotAllowed is
  FAILED_PRECONDITION `TRANSITION_NOT_ALLOWED` naming the machine, event and
  configuration, a raising callback `USER_CODE_FAILED`;
- nodes and active states are `<name>.<field>` and `<name>.<field>.<state>`;
- the structure (`DescribeMachine`) is every machine's states, events and
  transitions.
Machines change through events only: UpdateState and AtomicAppend are refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NoReturn

from flou_grpc.engine.document import JsonObject, Path, json_copy
from flou_grpc.engine.ltm import LTM
from flou_grpc.engine.machine import ACTIVE, COMPLETED, Execution, Fired, Step
from flou_grpc.engine.structure import NodeInfo
from flou_grpc.engine.structure import TransitionInfo as NodeTransition
from flou_grpc.engine.work import Execute, Transition, UpdateState
from flou_grpc.errors import (
    InternalError,
    InvalidDefinitionError,
    InvalidFieldError,
    NodeNotFoundError,
)
from flou_grpc.orchestrator.description import MachineInfo, StateInfo, describe
from flou_grpc.orchestrator.orchestrator import Orchestrator, machine_fields
from flou_grpc.orchestrator.snapshot import restore, snapshot
from flou_grpc.orchestrator.step import send

__all__ = ["HostedOrchestrator", "machine_name"]

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_KEY = "orchestrator"
"""The document key the snapshot lives under."""


def machine_name(cls: type[Orchestrator]) -> str:
    """The name an orchestrator class is started by.

    Its own `machine_name` attribute, else its class name in snake case
    (`ECommerceOrchestrator` -> `e_commerce_orchestrator`).
    """
    declared = cls.__dict__.get("machine_name")
    if isinstance(declared, str):
        return declared
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", cls.__name__).lower()


class HostedOrchestrator:
    """The host of one Orchestrator class (see the module docstring)."""

    user_code_in_steps = True  # callbacks run in start and transition

    def __init__(self, cls: type[Orchestrator]) -> None:
        self._cls = cls
        self._name = machine_name(cls)
        self._fields = dict(machine_fields(cls))
        self._info = describe(cls)
        if not _NAME.fullmatch(self._name):
            raise InvalidDefinitionError(
                cls, f"machine name {self._name!r} must match {_NAME.pattern} (set machine_name)"
            )
        self._final = {  # a top-level final state ends a machine
            machine.field: {s.id for s in machine.states if s.final}
            for machine in self._info.machines
        }

    @property
    def name(self) -> str:
        """The name clients start it by."""
        return self._name

    @property
    def root(self) -> type:
        """The Orchestrator class."""
        return self._cls

    def __repr__(self) -> str:
        return f"HostedOrchestrator({self._cls.__qualname__})"

    # --- steps --------------------------------------------------------------------------

    def start(self, instance_id: str, payload: JsonObject) -> Step:
        """Builds every machine at its initial states (their entry actions run once)."""
        if payload:
            raise InvalidFieldError.of(
                "payload", "an orchestrator starts from its machines' initial states: send events"
            )
        orc = self._cls(
            **{  # a fresh model each, of the class restore would give it
                field: machine(model=self._cls.restore_model(field, {}))
                for field, machine in self._fields.items()
            }
        )
        document: JsonObject = {_KEY: snapshot(orc)}
        return Step(
            document, [{"op": "add", "path": f"/{_KEY}", "value": json_copy(document[_KEY])}]
        )

    def transition(self, instance_id: str, doc: JsonObject, item: Transition) -> Step:
        """Sends the event `item.label` to the machine `item.namespace`, all or nothing."""
        field = item.namespace
        if field == self._name and len(self._fields) == 1:
            field = next(iter(self._fields))  # the default namespace: the only machine
        if field not in self._fields:
            raise InvalidFieldError.of(
                "namespace",
                f"name one machine of {self._name!r}: {', '.join(self._fields)}",
            )
        if item.params:
            raise InvalidFieldError.of("params", "orchestrated machines have no lanes")
        before = doc[_KEY]
        orc = restore(self._cls, before)
        send(orc, field, item.label, instance_id=instance_id, **item.payload)
        after = snapshot(orc)
        patch: list[JsonObject] = [
            {"op": "replace", "path": f"/{_KEY}/machines/{name}", "value": json_copy(state)}
            for name, state in after["machines"].items()
            if state != before["machines"].get(name)
        ]
        fired = Fired(
            machine=f"{self._name}.{field}",
            label=item.label,
            namespace=field,
            sources=self._fqns(field, before),
            targets=self._fqns(field, after),
        )
        return Step({**doc, _KEY: after}, patch, fired=[fired])

    def update_state(self, instance_id: str, doc: JsonObject, item: UpdateState) -> NoReturn:
        """Refused: an orchestrator's machines change through events only."""
        raise InvalidFieldError.of(
            "updates", "an orchestrator's machines change through events (Transition) only"
        )

    def prepare(
        self,
        instance_id: str,
        doc: JsonObject,
        item: Execute,
        append: Callable[[str, str, Any], list[Any]],
    ) -> Execution | None:
        """Never asked: an orchestrator queues no runs."""
        raise InternalError()

    def execute(self, instance_id: str, doc: JsonObject, item: Execute, effects: Any) -> Step:
        """Never asked: an orchestrator queues no runs."""
        raise InternalError()

    def set_status(self, instance_id: str, doc: JsonObject, fqn: str, status: str) -> Step:
        """Never asked: an orchestrator queues no runs that could fail."""
        raise InternalError()

    def path_of(self, instance_id: str, doc: JsonObject, fqn: str) -> tuple[Path, type[LTM]]:
        """No node has a state of keys to append to: always NodeNotFoundError."""
        raise NodeNotFoundError(instance_id, fqn or self._name)

    # --- views ---------------------------------------------------------------------------

    def nodes(self, doc: JsonObject) -> list[tuple[str, str]]:
        """The orchestrator, each machine (completed once in a final state), its states."""
        found = [(self._name, ACTIVE)]
        machines = doc.get(_KEY, {}).get("machines", {})
        for field in self._fields:
            configuration = machines.get(field, {}).get("configuration", [])
            done = any(state in self._final[field] for state in configuration)
            found.append((f"{self._name}.{field}", COMPLETED if done else ACTIVE))
            found += [(f"{self._name}.{field}.{state}", ACTIVE) for state in configuration]
        return found

    def active_states(self, doc: JsonObject) -> list[str]:
        """The fqns of the active nodes: the orchestrator, running machines, their states."""
        return [fqn for fqn, status in self.nodes(doc) if status == ACTIVE]

    def _fqns(self, field: str, data: JsonObject) -> tuple[str, ...]:
        configuration = data["machines"][field]["configuration"]
        return tuple(f"{self._name}.{field}.{state}" for state in configuration)

    # --- structure -----------------------------------------------------------------------

    def describe(self) -> NodeInfo:
        """The structure: the orchestrator, its machines, their states and transitions."""
        return NodeInfo(
            name=self._name,
            fqn=self._name,
            kind="orchestrator",
            params=(),
            init=tuple(self._fields),
            children=tuple(self._machine_node(m) for m in self._info.machines),
            transitions=(),
        )

    def _machine_node(self, machine: MachineInfo) -> NodeInfo:
        fqn = f"{self._name}.{machine.field}"
        return NodeInfo(
            name=machine.field,
            fqn=fqn,
            kind="machine",
            params=(),
            init=tuple(s.id for s in machine.states if s.initial),
            children=tuple(_state_node(s, fqn) for s in machine.states),
            transitions=tuple(
                NodeTransition(
                    label=t.event,
                    sources=(t.source,),
                    targets=t.targets or ((t.target,) if t.target else ()),
                    namespace=machine.field,
                    custom_namespace=True,
                    join="any",
                    params=(),
                )
                for t in machine.transitions
            ),
        )


def _state_node(state: StateInfo, parent: str) -> NodeInfo:
    fqn = f"{parent}.{state.id}"
    kind = {"compound": "machine", "parallel": "parallel"}.get(state.kind, "state")
    return NodeInfo(
        name=state.id,
        fqn=fqn,
        kind=kind,
        params=(),
        init=tuple(c.id for c in state.children if c.initial),
        children=tuple(_state_node(c, fqn) for c in state.children),
        transitions=(),
        final=state.final,
    )
