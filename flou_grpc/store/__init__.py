"""The store: durable persistence on SQLAlchemy 2.x (SQLite and PostgreSQL).

Instances, per-instance work item mailboxes, history events, request records
and step errors, with every transaction retried whole on transient errors
(tenacity). The only package that imports sqlalchemy; dialect-specific pieces
(JSON append, claim query, wake-up channel) sit behind one small interface.
"""
