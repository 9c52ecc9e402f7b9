"""The orchestrator: hosting python-statemachine machines (seed 003's API).

An `Orchestrator` groups StateMachine classes as typed fields and injects
itself into their callbacks; this package persists and restores the machines'
configurations and maps `Transition` requests to events. It depends on the
engine's interfaces and on python-statemachine, never on grpc or sqlalchemy.
"""
