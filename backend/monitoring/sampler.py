"""Request sampling in the gateway: a RequestObserver (backend.serving.observers) that stores a share of each
deployment's requests in the metadata store.

    request path      wants(route): one attribute read and one random number; False while sampling is off
    dispatcher thread observe(record): the prompt redacted and capped (backend.monitoring.prompts), queued
    writer thread     batches of samples written in one transaction; the policy re-read; cap and retention applied

Nothing here can slow or fail a request: the pending queue is bounded (a full queue drops the sample), a store that
is down drops the batch, and every drop is counted on the gateway's /metrics
(`lfops_gateway_samples_total{outcome=...}`). The policy (on/off, rate, cap, retention) lives in the store and is
re-read every `policy_refresh_s`; while the store is unreachable the last policy read stays in force.

The gateway process loads it with `--observer backend.monitoring.sampler:for_deployment`; the database URL comes
from LFOPS_SAMPLING_DATABASE_URL (else LFOPS_DATABASE_URL).
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from backend.errors import LfopsError
from backend.monitoring import samples
from backend.monitoring.prompts import clean_prompt
from backend.serving.observers import SAMPLING_DATABASE_VARIABLE, SAMPLING_OBSERVER, RequestRecord
from backend.store import Store

log = logging.getLogger(__name__)

SAMPLED_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions"})
DATABASE_VARIABLE = SAMPLING_DATABASE_VARIABLE
OBSERVER = SAMPLING_OBSERVER
OUTCOMES = ("stored", "dropped_queue_full", "dropped_store_unavailable", "pruned")
PROMPT_KINDS = ("truncated", "binary", "redacted")


class RequestSampler:
    def __init__(
        self,
        deployment: str,
        store: Store,
        *,
        max_pending: int = 4096,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        policy_refresh_s: float = 10.0,
        prune_interval_s: float = 60.0,
        retry_after_s: float = 2.0,
        random_source: Callable[[], float] = random.random,
        start: bool = True,
    ) -> None:
        self.deployment = deployment
        self.store = store
        self.policy = samples.DEFAULT_POLICY
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.prompt_counts = dict.fromkeys(PROMPT_KINDS, 0)
        self._random = random_source
        self._pending: queue.Queue[samples.Sample | None] = queue.Queue(maxsize=max_pending)
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._policy_refresh_s = policy_refresh_s
        self._prune_interval_s = prune_interval_s
        self._retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._policy_read_at = 0.0
        self._pruned_at = 0.0
        self._store_down_until = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"lfops-sampler-{deployment}", daemon=True)
        if start:
            self._thread.start()

    # ---- the observer -------------------------------------------------------------------------------------------

    def wants(self, route: str) -> bool:
        p = self.policy  # one read: the writer thread replaces the object whole
        return p.enabled and route in SAMPLED_ROUTES and self._random() < p.rate

    def observe(self, record: RequestRecord) -> None:
        clean = clean_prompt(record.prompt, record.prompt_chars)
        rate = self.policy.rate
        sample = samples.Sample(
            deployment=record.deployment,
            model_version=record.model_version[:255],
            at=datetime.fromtimestamp(record.started_at, UTC),
            route=record.route[:32],
            status=record.status,
            error=record.error[:200],
            stream=record.stream,
            latency_ms=record.latency_s * 1000.0,
            ttft_ms=None if record.ttft_s is None else record.ttft_s * 1000.0,
            prompt=clean.text,
            prompt_chars=clean.chars,
            prompt_truncated=not clean.binary and (clean.truncated or record.prompt_truncated),
            prompt_binary=clean.binary,
            redactions=clean.redactions,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            response_chars=record.response_chars,
            weight=1.0 / rate if rate > 0 else 1.0,
        )
        with self._lock:
            self.prompt_counts["truncated"] += sample.prompt_truncated
            self.prompt_counts["binary"] += sample.prompt_binary
            self.prompt_counts["redacted"] += sample.redactions > 0
        try:
            self._pending.put_nowait(sample)
        except queue.Full:
            self._count("dropped_queue_full")

    # ---- metrics ------------------------------------------------------------------------------------------------

    def register_metrics(self, registry: Any) -> None:
        """Expose the counts on the gateway's /metrics (its own registry)."""
        registry.register(_SamplerCollector(self))

    # ---- the writer ---------------------------------------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until what is queued now has been written or dropped (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._pending.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self, timeout_s: float = 5.0) -> None:
        self.flush(timeout_s)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _count(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self.counts[outcome] += n

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = list(self._take())
            now = time.monotonic()
            try:
                if now >= self._store_down_until:
                    self._write(batch, now)
                elif batch:
                    self._count("dropped_store_unavailable", len(batch))
            except Exception as exc:  # noqa: BLE001 - the store away (or anything else): drop, count, retry later
                self._store_down_until = time.monotonic() + self._retry_after_s
                self._count("dropped_store_unavailable", len(batch))
                log.warning("sampling %s: %d samples dropped: %s", self.deployment, len(batch), exc)
            finally:
                for _ in batch:
                    self._pending.task_done()

    def _take(self) -> Iterator[samples.Sample]:
        """The next batch: everything queued after a pause of `flush_interval_s`, at most `batch_size`. The writer
        sleeps between batches rather than waking for each sample: one transaction and one wake-up per batch."""
        if self._pending.empty():
            self._stop.wait(self._flush_interval_s)
        for _ in range(self._batch_size):
            try:
                yield self._pending.get_nowait()
            except queue.Empty:
                return

    def _write(self, batch: list[samples.Sample], now: float) -> None:
        refresh = now - self._policy_read_at >= self._policy_refresh_s
        prune = now - self._pruned_at >= self._prune_interval_s
        if not (batch or refresh or prune):
            return
        with self.store.session() as s:
            if refresh:
                self.policy = samples.policy(s, self.deployment)
                self._policy_read_at = now
            samples.insert(s, batch)
            removed = samples.prune(s, self.deployment, self.policy) if prune and (batch or refresh) else 0
        self._count("stored", len(batch))
        if prune:
            self._pruned_at = now
            self._count("pruned", removed)


class _SamplerCollector:
    def __init__(self, sampler: RequestSampler) -> None:
        self.sampler = sampler

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        s = self.sampler
        outcomes = CounterMetricFamily(
            "lfops_gateway_samples",
            "Sampled requests: stored, dropped (and why), pruned",
            labels=["deployment", "outcome"],
        )
        for outcome, n in s.counts.items():
            outcomes.add_metric([s.deployment, outcome], n)
        yield outcomes
        prompts = CounterMetricFamily(
            "lfops_gateway_sampled_prompts",
            "Sampled prompts cut to the cap, not stored as binary, or with credentials/e-mail addresses replaced",
            labels=["deployment", "kind"],
        )
        for kind, n in s.prompt_counts.items():
            prompts.add_metric([s.deployment, kind], n)
        yield prompts


def for_deployment(deployment: str) -> RequestSampler:
    """The gateway process's factory (`--observer backend.monitoring.sampler:for_deployment`)."""
    url = os.environ.get(DATABASE_VARIABLE) or os.environ.get("LFOPS_DATABASE_URL")
    if not url:
        raise LfopsError(f"{DATABASE_VARIABLE}: not set; the sampler needs the metadata store", field=DATABASE_VARIABLE)
    return RequestSampler(deployment, Store(url))
