"""Operations: is the app ready (database, config repository), and its Prometheus metrics.

Liveness needs nothing (the API answers /healthz itself). Readiness asks the database and the config repository's
origin, each bounded in time. Metrics live in a registry of the app's own (never prometheus_client's global one, so
two apps in one process do not clash): HTTP requests by route template and status, git push latency, the process,
and what the store knows (runs by state, launches, change requests by status) counted at scrape time by indexed
GROUP BY queries, so every replica and the CLI's launches are counted the same way; queue waits too (the oldest waiting
run, and launch -> running of the latest runs). Per process: Kubernetes watch events, and whether it leads the run
monitor (backend.leader).
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from sqlalchemy import func, select

from backend.errors import LfopsError
from backend.review_status import ChangeRequestStatus
from backend.runners.base import RunState
from backend.store.models import ChangeRequest, Run, utcnow
from backend.tokens import aware

if TYPE_CHECKING:
    from backend.gitstore import GitStore
    from backend.leader import Leadership
    from backend.store import Store
    from backend.workspace import Workspace

# Buckets for request latency: the API's reads are milliseconds, saves and merges (Git) up to seconds.
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_PUSH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Queue waits: a local run starts in a second, a GPU Job may wait hours for a node.
_QUEUE_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
QUEUE_WINDOW = 1000


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 maybe in brackets) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ---- readiness -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str  # database | config_repository
    ok: bool
    detail: str
    seconds: float


class Readiness:
    """/readyz: the database answers with the schema this lfops needs, and origin answers `ls-remote` for main.

    The repository check runs in its own thread with a deadline (a hung remote must not hang the probe), one at a
    time, and its answer is reused for `reuse_s` (probes and load balancers ask often)."""

    def __init__(self, ws: Workspace, timeout_s: float = 5.0, reuse_s: float = 2.0) -> None:
        self.ws = ws
        self.timeout_s = timeout_s
        self.reuse_s = reuse_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lfops-readyz")
        self._lock = threading.Lock()
        self._inflight: Future[Check] | None = None
        self._last: tuple[float, Check] | None = None

    def checks(self) -> list[Check]:
        return [self._database(), self._repository()]

    def _database(self) -> Check:
        started = time.monotonic()
        try:
            self.ws.store.check()
            self.ws.store.require_current_schema()
        except LfopsError as exc:
            return Check("database", False, str(exc), time.monotonic() - started)
        return Check("database", True, "reachable, schema current", time.monotonic() - started)

    def _repository(self) -> Check:
        with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < self.reuse_s:
                return self._last[1]
            if self._inflight is None or self._inflight.done():
                self._inflight = self._pool.submit(self._ask_origin)
            inflight = self._inflight
        try:
            check = inflight.result(timeout=self.timeout_s)
        except FutureTimeout:
            return Check("config_repository", False, f"origin did not answer within {self.timeout_s:g} s", 0.0)
        with self._lock:
            self._last = (time.monotonic(), check)
        return check

    def _ask_origin(self) -> Check:
        started = time.monotonic()
        try:
            repo = self.ws.repo
            head = repo.remote_head()
        except LfopsError as exc:
            return Check("config_repository", False, str(exc), time.monotonic() - started)
        if head is None:
            return Check("config_repository", False, f"origin has no branch {repo.main!r}", time.monotonic() - started)
        return Check("config_repository", True, f"{repo.main} at {head[:12]}", time.monotonic() - started)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def leader_detail(leadership: Leadership) -> dict[str, Any]:
    """/readyz's word on the run monitor's election: this process leads or stands by, and who holds the lease."""
    state = leadership.state()
    return {
        "lease": state.name,
        "role": "leader" if state.leading else "standby",
        "me": state.me,
        "holder": state.holder,
        "renewed_at": aware(state.renewed_at).isoformat() if state.renewed_at else None,
    }


# ---- metrics ---------------------------------------------------------------------------------------------------------


class StoreCollector:
    """Counts from the metadata store, read at scrape time (a few indexed GROUP BYs: milliseconds at 100,000 runs)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> list[Metric]:
        return []  # nothing to describe up front: collecting asks the database, which registration must not

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("lfops_store_up", "1 when the metadata store answered this scrape")
        try:
            with self.store.session() as s:
                runs = dict(s.execute(select(Run.status, func.count()).group_by(Run.status)).all())
                by_backend = dict(s.execute(select(Run.backend, func.count()).group_by(Run.backend)).all())
                changes = dict(
                    s.execute(select(ChangeRequest.status, func.count()).group_by(ChangeRequest.status)).all()
                )
        except LfopsError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        states = GaugeMetricFamily("lfops_runs", "Runs by state", labels=["state"])
        for state in RunState:
            states.add_metric([state.value], runs.get(state.value, 0))
        yield states
        launched = CounterMetricFamily(
            "lfops_runs_launched", "Runs launched, by runner (every run row)", labels=["backend"]
        )
        for backend, count in sorted(by_backend.items()):
            launched.add_metric([backend], count)
        yield launched
        crs = GaugeMetricFamily("lfops_change_requests", "Change requests by status", labels=["status"])
        for status in ChangeRequestStatus:
            crs.add_metric([status.value], changes.get(status.value, 0))
        yield crs
        yield from self._waiting()

    def _waiting(self) -> Iterator[Metric]:
        """How long runs wait: the oldest queued and pending run now, and launch -> running of the latest runs."""
        now = utcnow()
        try:
            oldest, started = self._waits()
        except LfopsError:
            return
        waiting = GaugeMetricFamily(
            "lfops_runs_waiting_oldest_seconds", "Age of the oldest run waiting in a state (0: none)", labels=["state"]
        )
        for state, since in oldest.items():
            waiting.add_metric([state], (now - aware(since)).total_seconds() if since else 0.0)
        yield waiting
        waits = sorted(max(0.0, (aware(b) - aware(a)).total_seconds()) for a, b in started)
        buckets = [(str(le), bisect.bisect_right(waits, le)) for le in _QUEUE_BUCKETS] + [("+Inf", len(waits))]
        histogram = GaugeHistogramMetricFamily(
            "lfops_run_queue_seconds",
            f"Time from launch to running (queued + pending) of the latest {QUEUE_WINDOW} started runs",
            buckets=buckets,
            gsum_value=sum(waits),
        )
        yield histogram

    def _waits(self) -> tuple[dict[str, Any], list[Any]]:
        with self.store.session() as s:
            oldest = {
                state: s.scalar(select(func.min(Run.created_at)).where(Run.status == state))
                for state in (RunState.QUEUED.value, RunState.PENDING.value)
            }
            started = s.execute(
                select(Run.created_at, Run.started_at)
                .where(Run.started_at.is_not(None))
                .order_by(Run.id.desc())
                .limit(QUEUE_WINDOW)
            ).all()
        return oldest, list(started)


class LeaderCollector:
    """Whether this process leads the run monitor (backend.leader), and how often that changed."""

    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        lead = self.leadership
        leading = GaugeMetricFamily("lfops_leader", "1 when this process leads (runs the duties)", labels=["lease"])
        leading.add_metric([lead.name], 1 if lead.leading else 0)
        yield leading
        changes = CounterMetricFamily(
            "lfops_leader_changes", "Times this process gained or lost the lead", labels=["lease"]
        )
        changes.add_metric([lead.name], lead.changes)
        yield changes


class WatchCollector:
    """Kubernetes watch events this process received, by kind (jobs, pods) and type (ADDED, MODIFIED, ...)."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily("lfops_watch_events", "Kubernetes watch events received", labels=["kind", "type"])
        watcher = sys.modules.get("backend.runners.kubernetes.watcher")  # not loaded: no watch ever ran here
        for (kind, etype), count in sorted(watcher.event_counts().items() if watcher else []):
            events.add_metric([kind, etype], count)
        yield events


class Metrics:
    """The app's Prometheus registry and the instruments the API and the Git layer record into."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "lfops_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "lfops_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=self.registry,
        )
        self.git_push_seconds = Histogram(
            "lfops_git_push_duration_seconds",
            "Pushes to the config repository's origin (saves, merges), by outcome",
            ["outcome"],
            buckets=_PUSH_BUCKETS,
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        self.registry.register(StoreCollector(store))
        self.registry.register(WatchCollector())

    def watch_leadership(self, leadership: Leadership) -> None:
        self.registry.register(LeaderCollector(leadership))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_seconds.labels(method, route).observe(seconds)

    def time_pushes(self, repo: GitStore) -> None:
        """Time every `push` of this GitStore (the instance the app's change requests use), by outcome."""
        push: Callable[..., Any] = repo.push
        if getattr(push, "_lfops_timed", False):
            return

        @functools.wraps(push)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            outcome = "error"
            try:
                result = push(*args, **kwargs)
                outcome = "ok"
                return result
            except LfopsError as exc:
                outcome = exc.code  # conflict (the lease refused it) or unavailable
                raise
            finally:
                self.git_push_seconds.labels(outcome).observe(time.monotonic() - started)

        timed._lfops_timed = True  # type: ignore[attr-defined]
        repo.push = timed  # type: ignore[method-assign]

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
