"""The runs' invariants, checked against the runners and repaired (the run side of backend.reconcile):

- run-active-without-process: no run is queued/pending/running without a process or Job behind it. A run whose launch
  died before anything reached the runner, or whose process ended without a trace, is marked lost with the reason.
- run-started-not-recorded: a run whose launch died after its trainer started (the wrapper's marker, the run
  directory) but before the runner id was recorded gets the id and is followed to its end.
- run-ended-not-recorded: a run the runner says ended (succeeded, failed, cancelled) is recorded so, with its metrics.
- run-succeeded-without-model: every succeeded run has its model version (registered when missing).

Runs whose launch is still under way (their launching process lives) and registrations under way elsewhere are left
alone. The RunMonitor runs this at start and then periodically; `lfops doctor` on demand.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select

from backend.errors import LfopsError
from backend.invariants import Finding
from backend.runners.base import RunState
from backend.runs.runner_set import RunnerSet
from backend.runs.tracking import ACTIVE, Tracker
from backend.store import Store
from backend.store.models import Run

if TYPE_CHECKING:
    from backend.registry import Registry

log = logging.getLogger(__name__)


class RunRepair:
    def __init__(self, store: Store, runners: RunnerSet, tracker: Tracker, registry: Registry | None = None) -> None:
        self.store = store
        self.runners = runners
        self.tracker = tracker
        self.registry = registry

    def needed(self) -> bool:
        """Whether a pass could find anything (two indexed lookups): an unfinished run, or a succeeded run without
        its model version."""
        with self.store.session() as s:
            if s.scalar(select(Run.id).where(Run.status.in_(ACTIVE)).limit(1)) is not None:
                return True
        return bool(self.tracker.unregistered(limit=1))

    def check(self, repair: bool = False, retry_failed_registrations: bool = True) -> list[Finding]:
        """Every broken run invariant; with `repair`, each repaired (`Finding.repaired` says whether it took).

        `retry_failed_registrations`: also try again registrations that failed before (on demand; the periodic pass
        leaves them to an operator, who sees the reason on the run)."""
        with self.store.session() as s:
            query = select(Run.id, Run.status, Run.external_id, Run.backend).where(Run.status.in_(ACTIVE))
            active = list(s.execute(query.order_by(Run.id)))
        findings: list[Finding] = []
        for run_id, status, external_id, backend in active:
            try:
                finding = self._check_active(run_id, status, external_id, backend, repair)
            except LfopsError as exc:  # e.g. a cluster that cannot be reached: the next pass tries again
                log.warning("run #%s: %s", run_id, exc)
                continue
            if finding is not None:
                findings.append(finding)
        for run_id in self.tracker.unregistered(retry_failed=retry_failed_registrations, limit=1000):
            finding = self._check_registration(run_id, repair)
            if finding is not None:
                findings.append(finding)
        return findings

    def _check_active(self, run_id: int, status: str, external_id: str, backend: str, repair: bool) -> Finding | None:
        subject = f"run #{run_id}"
        recorded = bool(external_id)
        if not recorded:
            found = self.tracker.unrecorded(run_id)
            if found.lost_reason:
                finding = Finding(
                    "run-active-without-process", subject, f"{status}, but it {found.lost_reason}", "mark it lost"
                )
                if repair:
                    self.tracker.finish(run_id, RunState.LOST, found.lost_reason, None)
                    return _repaired(finding)
                return finding
            if not found.external_id:
                return None  # its launch is under way
            external_id = found.external_id
        state = self.runners.get(backend).status(external_id)
        says = f"{state.state}: {state.reason}" if state.reason else str(state.state)
        then = " and register its model" if state.state == RunState.SUCCEEDED and self.registry else ""
        if state.state == RunState.LOST:
            invariant, fix = "run-active-without-process", "mark it lost"
        elif state.state.finished:
            invariant, fix = "run-ended-not-recorded", f"record it {state.state}{then}"
        elif not recorded:
            invariant, fix = "run-started-not-recorded", "follow the run to its end"
        else:
            return None  # the runner agrees it is under way
        if recorded:
            detail = f"recorded {status}; the {backend} runner says {says}"
        else:
            detail = f"{status} without a runner id; its submit reached the {backend} runner as {external_id}: {says}"
            fix = f"record {external_id}, {fix}"
        finding = Finding(invariant, subject, detail, fix)
        if not repair:
            return finding
        if not recorded:
            self.tracker.record_submitted(run_id, backend, external_id)
        self.tracker.advance_run(run_id)
        with self.store.session() as s:
            now = s.scalar(select(Run.status).where(Run.id == run_id))
        done = now not in ACTIVE if state.state.finished else True
        return _repaired(finding) if done else finding

    def _check_registration(self, run_id: int, repair: bool) -> Finding | None:
        with self.store.session() as s:
            reason = s.scalar(select(Run.reason).where(Run.id == run_id)) or ""
        finding = Finding(
            "run-succeeded-without-model",
            f"run #{run_id}",
            "succeeded without a model version" + (f" ({reason})" if reason else ""),
            "register its output as a model version",
        )
        if not repair:
            return finding
        if not self.tracker.register(run_id, wait=False):
            return None  # another process is registering it right now
        registered = self.registry is not None and self.registry.for_run(run_id) is not None
        return _repaired(finding) if registered else finding


def _repaired(finding: Finding) -> Finding:
    return Finding(finding.invariant, finding.subject, finding.detail, finding.repair, repaired=True)
