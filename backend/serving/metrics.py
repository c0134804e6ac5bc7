"""The gateway's Prometheus metrics, in a registry of its own (never prometheus_client's global one).

Every series carries `deployment` and `model_version`, so a rollout shows old and new version side by side and
dashboards and the HPA can tell them apart. Routes come from a fixed list and statuses are HTTP codes: the label
sets stay small whatever clients send.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BASE_LABELS = ("deployment", "model_version")
# From a few ms (the stub, /v1/models) to minutes (long CPU generations).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
IN_FLIGHT_METRIC = "lfops_gateway_in_flight_requests"  # the HPA's Pods metric (through a custom-metrics adapter)


class GatewayMetrics:
    def __init__(self, deployment: str) -> None:
        self.deployment = deployment
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "lfops_gateway_requests",
            "Requests answered, by route and HTTP status",
            [*BASE_LABELS, "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "lfops_gateway_request_duration_seconds",
            "Time from request to last byte sent",
            [*BASE_LABELS, "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "lfops_gateway_time_to_first_token_seconds",
            "Streams: time from request to the first content chunk",
            [*BASE_LABELS, "route"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "lfops_gateway_tokens",
            "Tokens in (prompt) and out (completion): upstream usage, or counted stream chunks",
            [*BASE_LABELS, "direction"],
            registry=r,
        )
        self.in_flight = Gauge(IN_FLIGHT_METRIC, "Requests being answered now", BASE_LABELS, registry=r)
        self.upstream_errors = Counter(
            "lfops_gateway_upstream_errors",
            "Upstream failures: unreachable, timeout, stream broken",
            [*BASE_LABELS, "reason"],
            registry=r,
        )
        self.auth_failures = Counter(
            "lfops_gateway_auth_failures", "Requests refused for a missing or wrong API key", ["deployment"], registry=r
        )
        self.observer_drops = Counter(
            "lfops_gateway_observer_errors",
            "Request records not delivered to observers, by reason",
            ["deployment", "reason"],
            registry=r,
        )
        # prometheus_client's labels() takes a lock and builds a key per call: children are cached per label tuple.
        self._children: dict[tuple, Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.deployment, *values)
        return child

    def started(self, version: str) -> None:
        self._child(self.in_flight, version).inc()

    def finished(
        self,
        version: str,
        route: str,
        status: int,
        latency_s: float,
        ttft_s: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
    ) -> None:
        self._child(self.in_flight, version).dec()
        self._child(self.requests, version, route, str(status)).inc()
        self._child(self.latency, version, route).observe(latency_s)
        if ttft_s is not None:
            self._child(self.ttft, version, route).observe(ttft_s)
        if prompt_tokens:
            self._child(self.tokens, version, "in").inc(prompt_tokens)
        if completion_tokens:
            self._child(self.tokens, version, "out").inc(completion_tokens)

    def refused(self, version: str, route: str, status: int) -> None:
        """A request the gateway answered itself without going upstream (401, 413)."""
        self._child(self.requests, version, route, str(status)).inc()

    def upstream_error(self, version: str, reason: str) -> None:
        self._child(self.upstream_errors, version, reason).inc()

    def auth_failure(self) -> None:
        self.auth_failures.labels(self.deployment).inc()

    def observer_drop(self, reason: str) -> None:
        self.observer_drops.labels(self.deployment, reason).inc()

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
