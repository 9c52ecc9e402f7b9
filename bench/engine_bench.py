"""The pure engine's speed: steps per second of `flou_grpc.engine.Machine`, in memory.

No store, no server, no asyncio: a minimal driver plays the runtime's part
(a FIFO list of work items; `prepare` / `run` / `execute` for an `Execute`,
`transition` for a `Transition`), so the figures are the cost of the engine's
steps themselves, the ceiling under every service benchmark. Measured:

1. Three machines, driven by external transitions (the item is built once
   with `transition_item`, as the service would after checking a request):
   a. a flat ring of 10 states, `s{i} --next--> s{i+1 mod 10}`: each
      external `next` is 2 steps (the transition, then the target's execute);
   b. the same ring three machines deep (root > mid > ring), the transitions
      addressed to the innermost machine's fqn: what nesting costs per step;
   c. a 100-lane fork: `launcher --spawn_{id}--> worker_{id}` with 100 lanes,
      every worker sending `done_{id}` to a `join: "all"` state; the whole
      fan-out/fan-in (1 + 100 + 100 + 1 = 202 steps) is timed on a fresh
      instance.
2. The same flat ring in python-statemachine (`sm.send("next")`), in this
   process and in the same run, interleaved with 1a: the ratio flou / it says
   what our step costs against a plain in-memory state machine library (which
   keeps no document, patch or work list).
3. History independence: one ring instance, blocks of transitions timed early
   (from #10) and late (from #10,000): a step must cost the same whatever the
   instance's age, so the late/early rate ratio should be ~1.0.

    .venv/bin/python bench/engine_bench.py [--runs 5] [--transitions 4000]

Prints the median over the runs (the machine is noisy) and every run's figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from statemachine import State, StateMachine

from flou_grpc.engine import LTM, Execute, Machine, Transition
from flou_grpc.engine.requests import transition_item

RING = 10
LANES = 100

# --- the machines ---------------------------------------------------------------------


def _ring(prefix: str) -> tuple[list[type[LTM]], list[dict[str, Any]]]:
    """Ten fresh state classes s0..s9 and their `next` transitions, as a ring."""
    states: list[type[LTM]] = [
        type(f"{prefix}S{i}", (LTM,), {"name": f"s{i}"}) for i in range(RING)
    ]
    transitions = [
        {"from": states[i], "label": "next", "to": states[(i + 1) % RING]} for i in range(RING)
    ]
    return states, transitions


def flat_machine() -> type[LTM]:
    states, transitions = _ring("Flat")
    return type("Flat", (LTM,), {"name": "flat", "init": [states[0]], "transitions": transitions})


def nested_machine() -> type[LTM]:
    states, transitions = _ring("Nested")
    ring = type("Ring", (LTM,), {"name": "ring", "init": [states[0]], "transitions": transitions})
    mid = type("Mid", (LTM,), {"name": "mid", "init": [ring]})
    return type("Nested", (LTM,), {"name": "nested", "init": [mid]})


def fork_machine() -> type[LTM]:
    class Launcher(LTM):
        name = "launcher"

    class Worker(LTM):
        name = "worker_{id}"

        def run(self, **payload: Any) -> None:
            self.transition("done_{id}", params=[self.params])

    class Joined(LTM):
        name = "joined"

    class Fork(LTM):
        name = "fork"
        init: ClassVar[Sequence[type[LTM]]] = [Launcher]
        transitions: ClassVar[Sequence[Mapping[str, Any]]] = [
            {"from": Launcher, "label": "spawn_{id}", "to": Worker},
            {"from": Worker, "label": "done_{id}", "to": Joined, "join": "all"},
        ]

    return Fork


# --- the driver -----------------------------------------------------------------------


def drain(
    machine: Machine, instance_id: str, doc: dict[str, Any], queue: list[Any]
) -> tuple[dict[str, Any], int]:
    """Runs the mailbox until it is empty; returns (the last document, steps taken)."""
    steps = 0
    while queue:
        item = queue.pop(0)
        if isinstance(item, Execute):
            execution = machine.prepare(instance_id, doc, item)
            if execution is None:
                continue
            execution.run()
            step = machine.execute(instance_id, doc, item, execution.effects)
        elif isinstance(item, Transition):
            step = machine.transition(instance_id, doc, item)
        else:
            step = machine.update_state(instance_id, doc, item)
        doc = step.document
        queue.extend(step.work)
        steps += 1
    return doc, steps


def started(machine: Machine, instance_id: str) -> dict[str, Any]:
    """A new instance, its start executed (untimed)."""
    step = machine.start(instance_id, {})
    doc, _ = drain(machine, instance_id, step.document, list(step.work))
    return doc


def drive(
    machine: Machine, instance_id: str, doc: dict[str, Any], item: Transition, count: int
) -> tuple[dict[str, Any], int, float]:
    """Sends `item` `count` times, draining after each; returns (document, steps, seconds)."""
    steps = 0
    began = time.perf_counter()
    for _ in range(count):
        doc, taken = drain(machine, instance_id, doc, [item])
        steps += taken
    return doc, steps, time.perf_counter() - began


# --- the measurements -----------------------------------------------------------------


def ring_run(machine: Machine, item: Transition, count: int, ring_fqn: str) -> tuple[float, float]:
    """One instance, `count` timed transitions; returns (steps/s, transitions/s)."""
    doc = started(machine, "ring")
    doc, _, _ = drive(machine, "ring", doc, item, 100)  # warm up
    doc, steps, seconds = drive(machine, "ring", doc, item, count)
    assert steps == 2 * count, steps
    expected = f"{ring_fqn}.s{(100 + count) % RING}"
    assert machine.active_states(doc)[-1] == expected, machine.active_states(doc)
    return steps / seconds, count / seconds


class ForkError(AssertionError):
    """The engine did not fan out as flou does (one lane per params map)."""


def fork_run(machine: Machine, forks: int, number: int) -> tuple[float, float]:
    """`forks` fan-out/fan-ins, each on a fresh instance; returns (ms per fork, steps/s)."""
    lanes = [{"id": str(i)} for i in range(LANES)]
    spawn = transition_item("spawn_{id}", machine.name, lanes, None)
    total_steps, total_seconds = 0, 0.0
    for k in range(forks):
        instance_id = f"fork-{number}-{k}"
        doc = started(machine, instance_id)
        began = time.perf_counter()
        doc, steps = drain(machine, instance_id, doc, [spawn])
        total_seconds += time.perf_counter() - began
        total_steps += steps
        workers = sum(1 for fqn, _ in machine.nodes(doc) if fqn.startswith("fork.worker_"))
        if workers != LANES or steps != 2 * LANES + 2:
            raise ForkError(
                f"spawn_{{id}} with {LANES} lanes from the plain state `launcher` created "
                f"{workers} worker(s) and took {steps} steps (expected {LANES} and "
                f"{2 * LANES + 2}); final statuses: {machine.nodes(doc)}"
            )
        assert machine.active_states(doc) == ["fork", "fork.joined"], machine.active_states(doc)
    return total_seconds / forks * 1000, total_steps / total_seconds


def statemachine_ring() -> StateMachine:
    """The flat ring in python-statemachine: s0..s9 and one `next` event around them."""
    states = {f"s{i}": State(initial=i == 0) for i in range(RING)}
    event = states["s0"].to(states["s1"])
    for i in range(1, RING):
        event |= states[f"s{i}"].to(states[f"s{(i + 1) % RING}"])
    ring: type[StateMachine] = type("Ring", (StateMachine,), {**states, "next": event})
    return ring()


def statemachine_run(count: int) -> float:
    """One machine, `count` timed `next` events; returns transitions/s."""
    sm = statemachine_ring()
    for _ in range(100):  # warm up
        sm.send("next")
    began = time.perf_counter()
    for _ in range(count):
        sm.send("next")
    seconds = time.perf_counter() - began
    assert sm.current_state_value == f"s{(100 + count) % RING}", sm.current_state_value
    return count / seconds


def history_run(machine: Machine, item: Transition, block: int, late: int) -> tuple[float, float]:
    """One instance: transitions/s of a block from #10 and of one from #`late`."""
    doc = started(machine, "age")
    doc, _, _ = drive(machine, "age", doc, item, 10)
    doc, _, early_seconds = drive(machine, "age", doc, item, block)
    doc, _, _ = drive(machine, "age", doc, item, late - 10 - block)
    doc, _, late_seconds = drive(machine, "age", doc, item, block)
    assert machine.active_states(doc)[-1] == f"flat.s{(late + block) % RING}"
    return block / early_seconds, block / late_seconds


def _runs(values: list[float], spec: str = ".0f") -> str:
    return ", ".join(format(v, spec) for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--transitions", type=int, default=4000, help="per ring run")
    parser.add_argument("--forks", type=int, default=10, help="100-lane forks per run")
    parser.add_argument("--block", type=int, default=1000, help="history: transitions per block")
    parser.add_argument("--late", type=int, default=10_000, help="history: the late block's start")
    args = parser.parse_args()
    if args.late < args.block + 10:
        parser.error("--late must be at least --block + 10")

    flat = Machine(flat_machine())
    flat_next = transition_item("next", flat.name, None, None)
    nested = Machine(nested_machine())
    nested_next = transition_item("next", "nested.mid.ring", None, None)
    fork = Machine(fork_machine())

    flat_runs, sm_runs, nested_runs, fork_runs, history_runs = [], [], [], [], []
    fork_error: ForkError | None = None
    for number in range(args.runs):
        flat_runs.append(ring_run(flat, flat_next, args.transitions, "flat"))
        sm_runs.append(statemachine_run(args.transitions))
        nested_runs.append(ring_run(nested, nested_next, args.transitions, "nested.mid.ring"))
        if fork_error is None:
            try:
                fork_runs.append(fork_run(fork, args.forks, number))
            except ForkError as exc:  # reported below; the other measurements still stand
                fork_error = exc
        history_runs.append(history_run(flat, flat_next, args.block, args.late))

    def report(label: str, runs: list[tuple[float, float]]) -> None:
        steps = [r[0] for r in runs]
        transitions = [r[1] for r in runs]
        print(
            f"{label}: median {statistics.median(steps):7.0f} steps/s, "
            f"{statistics.median(transitions):7.0f} transitions/s "
            f"(runs, steps/s: {_runs(steps)})"
        )

    report("engine, flat ring of 10       ", flat_runs)
    report("engine, ring 3 machines deep  ", nested_runs)
    if fork_error is not None:
        print(f"engine, fork/join of {LANES} lanes : FAILED, not measured: {fork_error}")
    else:
        fork_ms = [r[0] for r in fork_runs]
        fork_rates = [r[1] for r in fork_runs]
        print(
            f"engine, fork/join of {LANES} lanes : "
            f"median {statistics.median(fork_rates):7.0f} steps/s, "
            f"{statistics.median(fork_ms):.2f} ms per fan-out/fan-in of {2 * LANES + 2} steps "
            f"(runs, ms: {_runs(fork_ms, '.2f')})"
        )

    flat_rate = statistics.median(r[1] for r in flat_runs)
    sm_rate = statistics.median(sm_runs)
    ratios = [f[1] / s for f, s in zip(flat_runs, sm_runs, strict=True)]
    print(
        f"python-statemachine, flat ring : median {sm_rate:7.0f} transitions/s "
        f"(runs: {_runs(sm_runs)})"
    )
    print(
        f"flou / python-statemachine     : {flat_rate / sm_rate:.2f}x in transitions/s "
        f"(per run: {_runs(ratios, '.2f')})"
    )

    early = [r[0] for r in history_runs]
    late = [r[1] for r in history_runs]
    age = [r[1] / r[0] for r in history_runs]
    print(
        f"history, flat ring             : {args.block} transitions from #10: median "
        f"{statistics.median(early):.0f}/s; from #{args.late:,}: median "
        f"{statistics.median(late):.0f}/s; late/early {statistics.median(age):.3f} "
        f"(runs, late/early: {_runs(age, '.3f')})"
    )
    if fork_error is not None:
        sys.exit(1)


if __name__ == "__main__":
    main()
