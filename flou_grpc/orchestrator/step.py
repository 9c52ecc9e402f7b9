"""One step: one event sent to one machine of an orchestrator, all or nothing.

The event runs with python-statemachine's own semantics: its callbacks run
and may drive the other machines through the orchestrator. If anything
raises, every machine is put back where the snapshot taken before the event
had it (configurations and model data), and the failure is reported as a
domain error of `flou_grpc.errors`:

- unknown machine field            -> InvalidFieldError on `namespace`
- event the machine does not know  -> InvalidFieldError on `label`
- the event cannot fire            -> TransitionNotAllowedError (label = event,
                                      namespace = machine field, activeStates =
                                      the machine's configuration)
- any callback raised              -> UserCodeFailedError (fqn = machine field),
                                      the original exception as `__cause__`

These are the words of a hosted `Transition` request: label, namespace.
"""

from __future__ import annotations

from typing import Any

from statemachine import StateChart
from statemachine.exceptions import TransitionNotAllowed

from flou_grpc.errors import (
    FlouError,
    InvalidFieldError,
    TransitionNotAllowedError,
    UserCodeFailedError,
)
from flou_grpc.orchestrator.orchestrator import Orchestrator, event_ids, machines_of
from flou_grpc.orchestrator.snapshot import reset, snapshot

__all__ = ["send"]


def send(
    orc: Orchestrator, machine_field: str, event: str, /, *, instance_id: str = "", **kwargs: Any
) -> Any:
    """Sends `event` to one machine; returns what python-statemachine's `send` returns.

    Args:
        orc: The orchestrator.
        machine_field: The field of the machine to send to.
        event: The event id.
        instance_id: The hosted instance, named in errors (empty in memory);
            not passed to the callbacks.
        **kwargs: Passed with the event, to the callbacks that name them.

    Raises:
        InvalidFieldError: No such machine, or it declares no such event.
        TransitionNotAllowedError: The event cannot fire from the machine's
            configuration; nothing changed.
        UserCodeFailedError: A guard, validator or action raised; every
            machine was rolled back.
    """
    machines = machines_of(orc)
    machine = machines.get(machine_field)
    if machine is None:
        raise InvalidFieldError.of(
            "namespace",
            f"{type(orc).__name__} has no machine {machine_field!r} "
            f"(its machines: {', '.join(machines)})",
        )
    events = event_ids(type(machine))
    if event not in events:
        raise InvalidFieldError.of(
            "label",
            f"machine {machine_field!r} ({type(machine).__name__}) has no event {event!r} "
            f"(its events: {', '.join(events)})",
        )
    before = snapshot(orc)
    try:
        # Not `machine.send`: a machine may declare an event named `send`.
        return StateChart.send(machine, event, **kwargs)
    except TransitionNotAllowed as exc:
        reset(orc, before)
        if str(exc.event) == event and getattr(exc.event, "_sm", None) is machine:
            configuration = before["machines"][machine_field]["configuration"]
            raise TransitionNotAllowedError(
                instance_id, event, machine_field, configuration
            ) from exc
        raise _user_code_failed(instance_id, machine_field, exc) from exc
    except FlouError:
        reset(orc, before)
        raise
    except Exception as exc:
        reset(orc, before)
        raise _user_code_failed(instance_id, machine_field, exc) from exc


def _user_code_failed(instance_id: str, machine_field: str, exc: Exception) -> UserCodeFailedError:
    return UserCodeFailedError(instance_id, machine_field, type(exc).__name__, str(exc))
