"""The sampling store: request samples in the metadata store, each deployment's sampling policy, the cap and the
retention, and the queries the drift checks and the monitoring view make.

One source for the defaults (`DEFAULT_POLICY`); a deployment without a `sampling_policies` row uses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from backend.errors import LfopsError
from backend.store.models import RequestSample, SamplingPolicy

MAX_RATE_FIELD = "rate"


@dataclass(frozen=True)
class Policy:
    enabled: bool = True
    rate: float = 0.1  # share of requests sampled
    max_samples: int = 50_000  # per deployment; the oldest go first
    retention_days: float = 30.0

    def checked(self) -> Policy:
        """The policy, or a one-line error naming the field as the user sees it."""
        if not 0.0 <= self.rate <= 1.0:
            raise LfopsError(f"rate: must be from 0 to 1, got {self.rate:g}", field="rate")
        if not 1 <= self.max_samples <= 10_000_000:
            raise LfopsError(f"max_samples: must be from 1 to 10000000, got {self.max_samples}", field="max_samples")
        if not 0 < self.retention_days <= 3650:
            raise LfopsError(
                f"retention_days: must be more than 0 and at most 3650, got {self.retention_days:g}",
                field="retention_days",
            )
        return self


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Sample:
    """One sample as the sampler hands it to the store (already redacted and capped)."""

    deployment: str
    model_version: str
    at: datetime
    route: str
    status: int
    error: str
    stream: bool
    latency_ms: float
    ttft_ms: float | None
    prompt: str
    prompt_chars: int
    prompt_truncated: bool
    prompt_binary: bool
    redactions: int
    prompt_tokens: int | None
    completion_tokens: int | None
    response_chars: int
    weight: float


def policy(s: Session, deployment: str) -> Policy:
    row = s.scalar(select(SamplingPolicy).where(SamplingPolicy.deployment == deployment))
    if row is None:
        return DEFAULT_POLICY
    return Policy(row.enabled, row.rate, row.max_samples, row.retention_days)


def set_policy(s: Session, deployment: str, new: Policy, actor: str) -> Policy:
    new.checked()
    row = s.scalar(select(SamplingPolicy).where(SamplingPolicy.deployment == deployment))
    if row is None:
        row = SamplingPolicy(deployment=deployment)
        s.add(row)
    row.enabled, row.rate, row.max_samples, row.retention_days = (
        new.enabled,
        new.rate,
        new.max_samples,
        new.retention_days,
    )
    row.updated_by = actor
    return new


def updated(current: Policy, **changes: object) -> Policy:
    return replace(current, **{k: v for k, v in changes.items() if v is not None}).checked()


def insert(s: Session, samples: Sequence[Sample]) -> None:
    if samples:
        s.execute(RequestSample.__table__.insert(), [sample.__dict__ for sample in samples])


def prune(s: Session, deployment: str, p: Policy, now: datetime | None = None) -> int:
    """Apply the retention period and the cap: returns how many samples were removed."""
    now = now or datetime.now(UTC)
    removed = s.execute(
        delete(RequestSample).where(
            RequestSample.deployment == deployment, RequestSample.at < now - timedelta(days=p.retention_days)
        )
    ).rowcount
    # the id of the newest sample beyond the cap: it and everything older goes
    edge = s.scalar(
        select(RequestSample.id)
        .where(RequestSample.deployment == deployment)
        .order_by(RequestSample.id.desc())
        .offset(p.max_samples)
        .limit(1)
    )
    if edge is not None:
        removed += s.execute(
            delete(RequestSample).where(RequestSample.deployment == deployment, RequestSample.id <= edge)
        ).rowcount
    return removed


def count(s: Session, deployment: str) -> int:
    return s.scalar(select(func.count()).where(RequestSample.deployment == deployment)) or 0


def prompts_between(
    s: Session, deployment: str, after: datetime | None, until: datetime, limit: int
) -> list[tuple[datetime, str]]:
    """(time, prompt) of the newest `limit` samples with a prompt in (after, until], oldest first."""
    q = select(RequestSample.at, RequestSample.prompt).where(
        RequestSample.deployment == deployment,
        RequestSample.at <= until,
        RequestSample.prompt != "",
    )
    if after is not None:
        q = q.where(RequestSample.at > after)
    rows = s.execute(q.order_by(RequestSample.at.desc(), RequestSample.id.desc()).limit(limit)).all()
    return [(_aware(at), prompt) for at, prompt in reversed(rows)]


@dataclass(frozen=True)
class TrafficPoint:
    """Traffic of one time bucket, estimated from the samples (each weighs 1/rate)."""

    start: datetime
    requests_per_min: float
    error_rate: float  # share of requests answered with status >= 400 or cut off
    latency_p50_ms: float
    latency_p95_ms: float
    prompt_tokens: float  # estimated tokens in the bucket
    completion_tokens: float
    samples: int


def traffic(s: Session, deployment: str, since: datetime, bucket: timedelta) -> list[TrafficPoint]:
    rows = s.execute(
        select(
            RequestSample.at,
            RequestSample.status,
            RequestSample.error,
            RequestSample.latency_ms,
            RequestSample.prompt_tokens,
            RequestSample.completion_tokens,
            RequestSample.weight,
        )
        .where(RequestSample.deployment == deployment, RequestSample.at >= since)
        .order_by(RequestSample.at)
    ).all()
    buckets: dict[int, list] = {}
    width = bucket.total_seconds()
    for row in rows:
        buckets.setdefault(int((_aware(row.at) - since).total_seconds() // width), []).append(row)
    points = []
    for index in sorted(buckets):
        group = buckets[index]
        weight = sum(r.weight for r in group)
        errors = sum(r.weight for r in group if r.status >= 400 or r.error)
        latencies = sorted(r.latency_ms for r in group)
        points.append(
            TrafficPoint(
                start=since + timedelta(seconds=index * width),
                requests_per_min=weight / (width / 60.0),
                error_rate=errors / weight if weight else 0.0,
                latency_p50_ms=_quantile(latencies, 0.5),
                latency_p95_ms=_quantile(latencies, 0.95),
                prompt_tokens=sum((r.prompt_tokens or 0) * r.weight for r in group),
                completion_tokens=sum((r.completion_tokens or 0) * r.weight for r in group),
                samples=len(group),
            )
        )
    return points


def deployments_with_samples(s: Session, since: datetime) -> list[str]:
    return list(s.scalars(select(RequestSample.deployment).where(RequestSample.at >= since).distinct()))


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
