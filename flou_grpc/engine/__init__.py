"""The engine: pure LTM semantics.

Declarations and their validation, the instance tree as one JSON document, the
transition algorithm and the state operations: one step is a function
(instance document, work item) -> (new document, JSON patch, events, new work
items). Deterministic, and free of I/O: it imports neither grpc nor
sqlalchemy, so unit and property tests drive it directly.
"""
