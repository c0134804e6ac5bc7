"""The drift report: what one check of one window found, as the rest of lfops reads it (the retrain change
requests, the WebUI, `lfops monitor`), and its row in the store.

`DriftReport` is frozen and holds plain values only (no session, no ORM object), so a hook may keep it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Integer, func, select
from sqlalchemy.orm import Session

from backend.store.models import DriftReport as DriftReportRow

OK = "ok"
DRIFTING = "drifting"  # this window crossed a threshold
DECLARED = "declared"  # the second drifting window in a row: a drift is declared (once per streak)
REFERENCE_MISSING = "reference_missing"  # the training prompts could not be read: no scores


@dataclass(frozen=True)
class DriftReport:
    id: int
    deployment: str
    model_version_id: int
    model_version: str  # NAME:vN
    created_at: datetime
    window_start: datetime
    window_end: datetime
    n_prompts: int
    declared: bool
    scores: dict[str, float]
    thresholds: dict[str, float]
    top_terms: list[str]
    sample_prompts: list[str]
    state: str = OK
    drifting: bool = False
    n_reference: int = 0
    dataset_version: str = ""
    reason: str = ""
    unknown_words: list[str] = field(default_factory=list)

    @property
    def exceeded(self) -> list[str]:
        """The scores over their threshold."""
        return [k for k, v in self.scores.items() if k in self.thresholds and v > self.thresholds[k]]


def save(s: Session, report: DriftReport) -> DriftReport:
    row = DriftReportRow(
        deployment=report.deployment,
        model_version_id=report.model_version_id,
        model_version=report.model_version,
        created_at=report.created_at,
        window_start=report.window_start,
        window_end=report.window_end,
        n_prompts=report.n_prompts,
        n_reference=report.n_reference,
        dataset_version=report.dataset_version,
        state=report.state,
        drifting=report.drifting,
        declared=report.declared,
        scores=dict(report.scores),
        thresholds=dict(report.thresholds),
        evidence={
            "top_terms": list(report.top_terms),
            "sample_prompts": list(report.sample_prompts),
            "unknown_words": list(report.unknown_words),
        },
        reason=report.reason,
    )
    s.add(row)
    s.flush()
    return of_row(row)


def of_row(row: DriftReportRow) -> DriftReport:
    evidence = row.evidence or {}
    return DriftReport(
        id=row.id,
        deployment=row.deployment,
        model_version_id=row.model_version_id,
        model_version=row.model_version,
        created_at=_aware(row.created_at),
        window_start=_aware(row.window_start),
        window_end=_aware(row.window_end),
        n_prompts=row.n_prompts,
        declared=row.declared,
        scores=dict(row.scores or {}),
        thresholds=dict(row.thresholds or {}),
        top_terms=list(evidence.get("top_terms", [])),
        sample_prompts=list(evidence.get("sample_prompts", [])),
        state=row.state,
        drifting=row.drifting,
        n_reference=row.n_reference,
        dataset_version=row.dataset_version,
        reason=row.reason,
        unknown_words=list(evidence.get("unknown_words", [])),
    )


def recent(s: Session, deployment: str, limit: int = 50, offset: int = 0) -> list[DriftReport]:
    """The newest reports of a deployment, newest first (`offset`: skip that many)."""
    rows = s.scalars(
        select(DriftReportRow)
        .where(DriftReportRow.deployment == deployment)
        .order_by(DriftReportRow.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [of_row(r) for r in rows]


def get(s: Session, report_id: int) -> DriftReport | None:
    row = s.get(DriftReportRow, report_id)
    return None if row is None else of_row(row)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def streak(s: Session, deployment: str, model_version_id: int) -> tuple[int, bool]:
    """(how many drifting windows of this model version came last, whether one of them declared a drift): the
    reports after the last clean window (or the last of another version)."""
    last_break = s.scalar(
        select(func.max(DriftReportRow.id)).where(
            DriftReportRow.deployment == deployment,
            (DriftReportRow.drifting.is_(False)) | (DriftReportRow.model_version_id != model_version_id),
        )
    )
    q = select(func.count(), func.max(DriftReportRow.declared.cast(Integer))).where(
        DriftReportRow.deployment == deployment, DriftReportRow.id > (last_break or 0)
    )
    length, declared = s.execute(q).one()
    return int(length or 0), bool(declared)
