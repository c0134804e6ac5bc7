"""What a retrain trigger hands in, and what became of it.

Any trigger makes a `RetrainSignal`: the dataset trigger here (backend.retrain.datasets), the drift detector through
a small adapter (a declared DriftReport -> kind "drift"). `fingerprint` says what "the same signal" is: a signal
with the fingerprint of a request that was closed unmerged is suppressed until the fingerprint changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from backend.errors import LfopsError

KINDS = ("drift", "dataset")
FINGERPRINT_MAX = 255
EVIDENCE_REF_MAX = 255
SUMMARY_MAX = 20_000  # characters of evidence kept (a commit message and a database row, not a report store)


@dataclass(frozen=True)
class RetrainSignal:
    """A reason to retrain a deployed model version.

    kind: "drift" | "dataset"; deployment: the deployment that observed it (None: the model version alone);
    model_version_id: the version served (its run says what config, commit and dataset it was trained on);
    fingerprint: what identifies the same signal (e.g. "drift:<deployment>:<version id>",
    "dataset:<config path>:<new dataset version>"); summary_markdown: the evidence; evidence_ref: where the whole
    evidence is ("drift-report:17", "dataset-version:sha256:..."); observed_at: when it was observed.
    """

    kind: str
    deployment: str | None
    model_version_id: int
    fingerprint: str
    summary_markdown: str
    evidence_ref: str
    observed_at: datetime

    def checked(self) -> RetrainSignal:
        """The signal if every field is usable; else LfopsError naming the field."""
        if self.kind not in KINDS:
            raise LfopsError(f"kind: {self.kind!r} must be one of {', '.join(KINDS)}", field="kind")
        if not isinstance(self.model_version_id, int) or isinstance(self.model_version_id, bool):
            raise LfopsError(f"model version: {self.model_version_id!r} must be an id", field="model_version_id")
        for name, value, limit in (
            ("fingerprint", self.fingerprint, FINGERPRINT_MAX),
            ("evidence_ref", self.evidence_ref, EVIDENCE_REF_MAX),
        ):
            if not value or not value.strip() or len(value) > limit or "\n" in value:
                raise LfopsError(f"{name}: must be one line of 1-{limit} characters", field=name)
        if self.observed_at.tzinfo is None:
            raise LfopsError("observed_at: must carry a time zone", field="observed_at")
        return self


class Outcome(StrEnum):
    """What handling a signal did. Only OPENED and COMMENTED change a change request."""

    OPENED = "opened"  # a new retrain change request
    COMMENTED = "commented"  # new evidence added to the model's open request
    DUPLICATE = "duplicate"  # the open request already carries this fingerprint: nothing new
    SUPPRESSED = "suppressed"  # a request with this fingerprint was closed unmerged (or already merged)
    COOLDOWN = "cooldown"  # a retrain request of this model was merged recently
    RATE_LIMITED = "rate_limited"  # the hourly limit of new requests is reached
    INVALID = "invalid"  # the signal cannot be acted on (no such deployment, dataset files gone...); reason says why
    FAILED = "failed"  # opening the request failed (Git or the database away); the next signal tries again

    @property
    def acted(self) -> bool:
        return self in (Outcome.OPENED, Outcome.COMMENTED)


class DeclaredDrift(Protocol):
    """What a declared drift report (backend.monitoring.report.DriftReport) offers; retrain never imports monitoring."""

    id: int
    deployment: str
    model_version_id: int
    model_version: str
    created_at: datetime
    n_prompts: int
    scores: Mapping[str, float]
    thresholds: Mapping[str, float]
    top_terms: list[str]
    sample_prompts: list[str]


def signal_from_drift(report: DeclaredDrift) -> RetrainSignal:
    """The retrain signal of a declared drift. Its fingerprint is the deployment, the version and which scores are over
    their thresholds: the same drift going on is the same signal (suppressed once its request is closed unmerged), a
    drift of another kind is a new one."""
    over = sorted(k for k, v in report.scores.items() if k in report.thresholds and v > report.thresholds[k])
    rows = "\n".join(
        f"| {name} | {report.scores[name]:.4g} | {report.thresholds.get(name, float('nan')):.4g} |"
        for name in sorted(report.scores)
    )
    samples = "\n".join(f"> {p[:200]}" for p in report.sample_prompts[:5])
    summary = (
        f"Drift declared on deployment **{report.deployment}** ({report.model_version}) at "
        f"{report.created_at:%Y-%m-%d %H:%M} UTC over {report.n_prompts} sampled prompts "
        f"(drift-report:{report.id}).\n\n| score | value | threshold |\n|---|---:|---:|\n{rows}\n\n"
        f"Most discriminative terms: {', '.join(report.top_terms[:15]) or '-'}\n\nSample prompts:\n{samples or '-'}"
    )
    return RetrainSignal(
        kind="drift",
        deployment=report.deployment,
        model_version_id=report.model_version_id,
        fingerprint=f"drift:{report.deployment}:{report.model_version_id}:{'+'.join(over) or 'declared'}",
        summary_markdown=summary[:SUMMARY_MAX],
        evidence_ref=f"drift-report:{report.id}",
        # the store may hand back naive UTC times (SQLite)
        observed_at=report.created_at if report.created_at.tzinfo else report.created_at.replace(tzinfo=UTC),
    )
