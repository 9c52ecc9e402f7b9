"""The runtime: runs instances.

Per-instance FIFO mailboxes, workers that run user code outside any database
transaction and commit each step in one short transaction, leases between
replicas, and the watch hub that fans committed events out to watchers.
"""
