"""Prometheus metrics of one server, and the HTTP endpoint that exposes them.

Exposed at `http://HOST:FLOU_METRICS_PORT/metrics` when `FLOU_METRICS_PORT` is
set. What to watch when scaling out (README "Operations"):
- `flou_rpc_total{method,code}` and `flou_rpc_duration_seconds{method}`: traffic,
  errors by status code, latency;
- `flou_steps_total{kind}`: steps committed (executed, transitioned, failed, ...);
- `flou_run_failures_total`: `run` methods that raised (each retry counts);
- `flou_store_retries_total{operation}`: transient database errors retried;
- `flou_pending_work`: work items waiting in the mailboxes this server works on
  (its queue depth); `flou_leased_instances`: instances it holds;
- `flou_watchers`: open Watch streams.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from flou_grpc.runtime.observer import Observer

__all__ = ["Metrics", "StepCounter"]

_LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class Metrics:
    """The server's metrics, in a registry of their own (several servers may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.rpcs = Counter(
            "flou_rpc", "RPCs handled, by method and status code", ["method", "code"],
            registry=registry,
        )  # fmt: skip
        self.rpc_seconds = Histogram(
            "flou_rpc_duration_seconds",
            "Time to handle an RPC (a Watch: its whole life)",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.steps = Counter(
            "flou_steps", "Steps committed, by event kind", ["kind"], registry=registry
        )
        self.run_failures = Counter(
            "flou_run_failures", "Runs of user code that raised (each attempt)", registry=registry
        )
        self.store_retries = Counter(
            "flou_store_retries",
            "Transient database errors retried, by store operation",
            ["operation"],
            registry=registry,
        )
        self.pending_work = Gauge(
            "flou_pending_work",
            "Work items waiting in the mailboxes of the instances this server holds",
            registry=registry,
        )
        self.leased_instances = Gauge(
            "flou_leased_instances", "Instances this server holds a lease on", registry=registry
        )
        self.watchers = Gauge("flou_watchers", "Open Watch streams", registry=registry)
        self._http: Any = None

    def track(
        self,
        pending_work: Callable[[], float],
        leased_instances: Callable[[], float],
        watchers: Callable[[], float],
    ) -> None:
        """Reads the gauges from these functions at every scrape."""
        self.pending_work.set_function(pending_work)
        self.leased_instances.set_function(leased_instances)
        self.watchers.set_function(watchers)

    def serve(self, host: str, port: int) -> int:
        """Serves `/metrics` over HTTP in a daemon thread; returns the port bound.

        Raises:
            OSError: The port cannot be bound.
        """
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        """Stops serving `/metrics`."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class StepCounter(Observer):
    """Counts the runtime's steps and failed runs into `metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def step_committed(self, kind: str) -> None:
        """Counts a committed step by its event kind."""
        self.metrics.steps.labels(kind).inc()

    def run_failed(self, machine: str, fqn: str) -> None:
        """Counts a failed run."""
        self.metrics.run_failures.inc()
