"""Monitoring: the verbs over sampled requests and drift reports; `Workspace.monitoring`.

- `check(name)` / `check_all()`: the next window of a deployment (backend.monitoring.declaration) against the prompts
  of the dataset its model was trained on (backend.monitoring.reference), scored (backend.monitoring.checks), stored
  as a report. A declared drift writes the audit event `monitoring.drift_declared` in the report's transaction and
  then calls every hook in `on_drift_declared` once, after the commit (a failing hook is logged; the report stays).
  Checks are system work (like the reconcile): they need no user.
- `overview(actor, name)`: traffic estimated from the samples, drift scores over time, the latest report, the
  sampling policy. Everyone may read.
- `set_sampling(actor, name, ...)`: on/off, rate, cap and retention of a deployment; needs `deploy.manage` and is
  audited (`monitoring.sampling`). The gateway picks the change up within its policy refresh (10 s).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend import audit
from backend.auth import Actor, require
from backend.errors import LfopsError, NotFound
from backend.gitstore import GitStore
from backend.monitoring import declaration, reference, report, samples
from backend.monitoring.checks import PreparedReference, detect
from backend.monitoring.declaration import WindowRules
from backend.monitoring.report import DriftReport
from backend.store import Store
from backend.store.models import Deployment, ModelVersion

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "lfops"
REFERENCES_KEPT = 4


@dataclass(frozen=True)
class Overview:
    deployment: str
    model_version: str
    status: str
    policy: samples.Policy
    samples_stored: int
    traffic: list[samples.TrafficPoint]
    reports: list[DriftReport] = field(default_factory=list)  # newest first

    @property
    def latest(self) -> DriftReport | None:
        return self.reports[0] if self.reports else None


class Monitoring:
    def __init__(self, store: Store, repo: GitStore, rules: WindowRules | None = None) -> None:
        self.store = store
        self.repo = repo
        self.rules = (rules or WindowRules()).checked()
        # called once per declared drift, after its report is committed (the retrain change requests hook in here)
        self.on_drift_declared: list[Callable[[DriftReport], None]] = []
        self._references: OrderedDict[tuple[str, str], tuple[reference.Reference, PreparedReference | None]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    # ---- checks -------------------------------------------------------------------------------------------------

    def check_all(self, now: datetime | None = None) -> list[DriftReport]:
        """Check every deployment that is not stopped; one failing deployment does not stop the others."""
        with self.store.session() as s:
            names = list(s.scalars(select(Deployment.name).where(Deployment.status != "stopped")))
        made = []
        for name in names:
            try:
                result = self.check(name, now)
            except LfopsError as exc:
                log.warning("monitoring: check of %s failed: %s", name, exc)
                continue
            if result is not None:
                made.append(result)
        return made

    def check(self, name: str, now: datetime | None = None) -> DriftReport | None:
        """The next window of `name` checked and reported; None when it has too few prompts (nothing is written)."""
        now = now or datetime.now(UTC)
        with self.store.session() as s:
            row = s.scalar(select(Deployment).where(Deployment.name == name))
            if row is None:
                raise NotFound(f"deployment {name!r} does not exist", field="deployment")
            mv = s.get(ModelVersion, row.model_version_id)
            version_id, version_ref = mv.id, f"{mv.name}:v{mv.version}"
            previous = report.recent(s, name, limit=1)
            after = previous[0].window_end if previous else None
            streak = declaration.Streak(*report.streak(s, name, version_id))
            window = samples.prompts_between(s, name, after, now, self.rules.max_prompts)
            if not declaration.enough(len(window), self.rules):
                return None
            try:
                commit, config_path, dataset_version = reference.source_of(s, version_id)
            except LfopsError as exc:
                commit, config_path, dataset_version, no_source = "", "", "", str(exc)
            else:
                no_source = ""
        ref, prepared = (
            (reference.Reference(problem=no_source), None)
            if no_source
            else self._reference(commit, config_path, dataset_version)
        )
        base = {
            "id": 0,
            "deployment": name,
            "model_version_id": version_id,
            "model_version": version_ref,
            "created_at": now,
            "window_start": window[0][0],
            "window_end": window[-1][0],
            "n_prompts": len(window),
            "n_reference": len(ref.prompts),
            "dataset_version": ref.dataset_version,
        }
        if prepared is None:
            new = DriftReport(
                **base,
                declared=False,
                scores={},
                thresholds={},
                top_terms=[],
                sample_prompts=[],
                state=report.REFERENCE_MISSING,
                reason=ref.problem,
            )
        else:
            findings = detect(prepared, [prompt for _at, prompt in window])
            state = declaration.decide(findings.drifting, streak, self.rules)
            exceeded = [k for k, v in findings.scores.items() if v > findings.thresholds[k]]
            new = DriftReport(
                **base,
                declared=state == report.DECLARED,
                scores=findings.scores,
                thresholds=findings.thresholds,
                top_terms=findings.top_terms,
                sample_prompts=findings.sample_prompts,
                state=state,
                drifting=findings.drifting,
                reason=("over the threshold: " + ", ".join(exceeded)) if exceeded else "",
                unknown_words=findings.unknown_words,
            )
        try:
            with self.store.session() as s:
                saved = report.save(s, new)
                if saved.declared:
                    audit.record(
                        s,
                        SYSTEM_ACTOR,
                        "monitoring.drift_declared",
                        f"deployment:{name}",
                        report=saved.id,
                        model=version_ref,
                        scores=saved.scores,
                        thresholds=saved.thresholds,
                        top_terms=saved.top_terms,
                    )
        except IntegrityError:  # another checker reported this window first (uq_drift_reports_window)
            log.info("monitoring: a window of %s starting %s was reported by another check", name, base["window_start"])
            return None
        if saved.declared:
            self._declared(saved)
        return saved

    def _declared(self, saved: DriftReport) -> None:
        for hook in list(self.on_drift_declared):
            try:
                hook(saved)
            except Exception:  # noqa: BLE001 - the report stands; a hook's failure is its own to report
                log.exception("monitoring: a drift-declared hook failed for report %s", saved.id)

    def _reference(
        self, commit: str, config_path: str, dataset_version: str
    ) -> tuple[reference.Reference, PreparedReference | None]:
        key = (commit, config_path)
        with self._lock:
            if key in self._references:
                self._references.move_to_end(key)
                return self._references[key]
        ref = reference.load(self.repo, commit, config_path, dataset_version)
        entry = (ref, PreparedReference.of(ref.prompts) if ref.prompts else None)
        with self._lock:
            self._references[key] = entry
            while len(self._references) > REFERENCES_KEPT:
                self._references.popitem(last=False)
        return entry

    # ---- reading and the sampling policy ------------------------------------------------------------------------

    def overview(
        self, actor: Actor, name: str, hours: float = 24.0, bucket_minutes: float = 5.0, reports: int = 100
    ) -> Overview:
        require(actor, "read")
        if not 0 < hours <= 24 * 90:
            raise LfopsError(f"hours: must be more than 0 and at most {24 * 90}, got {hours:g}", field="hours")
        if not 0 < bucket_minutes <= 24 * 60:
            raise LfopsError(
                f"bucket: must be more than 0 and at most 1440 minutes, got {bucket_minutes:g}", field="bucket"
            )
        since = datetime.now(UTC) - timedelta(hours=hours)
        with self.store.session() as s:
            row = _deployment(s, name)
            mv = s.get(ModelVersion, row.model_version_id)
            return Overview(
                deployment=name,
                model_version=f"{mv.name}:v{mv.version}",
                status=row.status,
                policy=samples.policy(s, name),
                samples_stored=samples.count(s, name),
                traffic=samples.traffic(s, name, since, timedelta(minutes=bucket_minutes)),
                reports=report.recent(s, name, reports),
            )

    def report(self, actor: Actor, report_id: int, deployment: str | None = None) -> DriftReport:
        """One report; with `deployment`, only one of that deployment's."""
        require(actor, "read")
        with self.store.session() as s:
            found = report.get(s, report_id)
        if found is None or (deployment is not None and found.deployment != deployment):
            of = f" of deployment {deployment!r}" if deployment is not None else ""
            raise NotFound(f"drift report {report_id}{of} does not exist", field="report")
        return found

    def reports(self, actor: Actor, name: str, limit: int = 50, offset: int = 0) -> list[DriftReport]:
        """The drift reports of a deployment, newest first."""
        require(actor, "read")
        with self.store.session() as s:
            _deployment(s, name)
            return report.recent(s, name, limit, offset)

    def check_for(self, actor: Actor, name: str) -> DriftReport | None:
        """`check(name)` asked by a person (the API): reviewers and admins, as for the sampling policy they answer
        for; audited (`monitoring.check`) with what it found. The schedule and the CronJob run `check` as lfops."""
        require(actor, "deploy.manage")
        made = self.check(name)  # an unknown deployment is refused before anything is written
        with self.store.session() as s:
            audit.record(
                s,
                actor,
                "monitoring.check",
                f"deployment:{name}",
                report=made.id if made is not None else None,
                state=made.state if made is not None else "no new window",
            )
        return made

    def set_sampling(
        self,
        actor: Actor,
        name: str,
        *,
        enabled: bool | None = None,
        rate: float | None = None,
        max_samples: int | None = None,
        retention_days: float | None = None,
    ) -> samples.Policy:
        require(actor, "deploy.manage")
        with self.store.session() as s:
            _deployment(s, name)
            before = samples.policy(s, name)
            new = samples.updated(
                before, enabled=enabled, rate=rate, max_samples=max_samples, retention_days=retention_days
            )
            samples.set_policy(s, name, new, actor.name)
            audit.record(
                s,
                actor,
                "monitoring.sampling",
                f"deployment:{name}",
                enabled=new.enabled,
                rate=new.rate,
                max_samples=new.max_samples,
                retention_days=new.retention_days,
            )
        return new

    def sampling(self, actor: Actor, name: str) -> samples.Policy:
        require(actor, "read")
        with self.store.session() as s:
            _deployment(s, name)
            return samples.policy(s, name)


def _deployment(s: Session, name: str) -> Deployment:
    row = s.scalar(select(Deployment).where(Deployment.name == name))
    if row is None:
        raise NotFound(f"deployment {name!r} does not exist", field="deployment")
    return row
