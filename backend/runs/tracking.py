"""Tracking runs: queued -> running -> succeeded | failed | cancelled | lost, each change persisted with its time and
reason, from what the runner reports; metrics ingested on the way; a succeeded run registered as a model version.

`advance()` moves every unfinished run forward (the RunMonitor calls it every second); `wait` and `cancel` are the
user's verbs on one run.

A run without its runner id (the launching process died between starting the run and recording the id) is looked up
at its runner by its run id (`Runner.find_submitted`: for the local runner the run directory and the wrapper's marker)
and followed from there; when nothing of it reached the runner and its launching process is gone, it is lost. A
succeeded run is registered once, whichever process gets there first (a lock per run in the registry).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from backend import audit
from backend.auth import Actor, require
from backend.errors import Conflict, LfopsError, PermissionDenied, TimedOut
from backend.filelock import file_lock
from backend.runners.base import Resources, RunState
from backend.runs.ingest import final_metrics, ingest_log, ingest_state
from backend.runs.launchers import launcher_of
from backend.runs.params import record_loss
from backend.runs.progress import RunProgress
from backend.runs.queries import RunQueries, RunView, aware, run_row
from backend.runs.runner_set import RunnerSet
from backend.store import Store
from backend.store.models import ModelVersion, Run, utcnow

if TYPE_CHECKING:
    from backend.registry import Registry

log = logging.getLogger(__name__)

ACTIVE = (RunState.QUEUED.value, RunState.PENDING.value, RunState.RUNNING.value)
# A run row without a runner id this long after launch was never submitted (the app died while launching), when
# neither its runner nor its launching process can tell sooner.
SUBMIT_GRACE = timedelta(minutes=5)
# Tracker.wait's full tracking pass (database, metrics) at most this often; the runner's status in between.
FULL_PASS_S = 1.0
# The reason a succeeded run carries when its registration failed (the periodic passes do not retry those).
REGISTRATION_FAILED = "model registration failed"


def resources_of(record: dict[str, Any] | None) -> Resources:
    """A run row's resources (JSON) as Resources, ignoring fields an older lfops wrote."""
    known = {f.name for f in dataclasses.fields(Resources)}
    return Resources(**{k: v for k, v in (record or {}).items() if k in known})


@dataclass(frozen=True)
class Unrecorded:
    """What became of a run without its runner id: its submit reached the runner (`external_id`), or nothing did and
    its launch is over (`lost_reason`), or neither (its launch is still under way)."""

    external_id: str = ""
    lost_reason: str = ""


@dataclass
class Progress:
    """What one pass of the tracker learned about one run."""

    changed: bool = False
    new_metrics: int = 0
    notes: list[str] = field(default_factory=list)


class Tracker:
    def __init__(self, store: Store, runners: RunnerSet, queries: RunQueries, registry: Registry | None = None) -> None:
        self.store = store
        self.runners = runners
        self.queries = queries
        self.registry = registry

    def advance(self) -> list[int]:
        """One tracking pass over every unfinished run; returns the ids whose status changed."""
        with self.store.session() as s:
            ids = list(s.scalars(select(Run.id).where(Run.status.in_(ACTIVE)).order_by(Run.id)))
        changed = []
        for run_id in ids:
            try:
                if self.advance_run(run_id).changed:
                    changed.append(run_id)
            except LfopsError as exc:
                log.warning("run #%s: %s", run_id, exc)
        self.register_missed()
        return changed

    def advance_run(self, run_id: int) -> Progress:
        progress = Progress()
        with self.store.session() as s:
            run = run_row(s, run_id)
            status, external_id, backend = run.status, run.external_id, run.backend
        if status not in ACTIVE:
            return progress
        if not external_id:
            found = self.unrecorded(run_id)
            if found.lost_reason:
                progress.changed = self.finish(run_id, RunState.LOST, found.lost_reason, None)
            if not found.external_id:
                return progress
            self.record_submitted(run_id, backend, found.external_id)
            external_id = found.external_id
        runner = self.runners.get(backend)
        state = runner.status(external_id)
        out = runner.output_dir(external_id)
        progress.new_metrics = ingest_log(self.store, run_id, Path(out)) if out else 0
        if state.state.finished:
            progress.changed = self.finish(run_id, state.state, state.reason, Path(out) if out else None)
        elif state.state.value != status:
            with self.store.session() as s:
                n = s.execute(
                    update(Run)
                    .where(Run.id == run_id, Run.status == status)
                    .values(
                        status=state.state.value,
                        reason=state.reason,
                        started_at=utcnow() if state.state == RunState.RUNNING else None,
                    )
                ).rowcount
                if n:
                    audit.record(s, "lfops", f"run.{state.state.value}", f"run:{run_id}", reason=state.reason)
            progress.changed = bool(n)
        return progress

    def unrecorded(self, run_id: int) -> Unrecorded:
        """Look a run without its runner id up at its runner: found, lost, or still being launched.

        The launching process is asked first: while it lives, its launch records the id itself (unless it is overdue:
        that launch broke off and the process lives on, e.g. the WebUI); once it is known to be gone, nothing can reach
        the runner any more, so the runner's answer that follows is final."""
        with self.store.session() as s:
            run = run_row(s, run_id)
            backend, resources, created_at = run.backend, run.resources, run.created_at
            launcher = launcher_of(s, run_id)
        overdue = utcnow() - aware(created_at) > SUBMIT_GRACE
        if launcher is not None and not overdue and launcher.under_way():
            return Unrecorded()
        launch_ended = launcher is not None and launcher.ended()
        try:
            found = self.runners.get(backend).find_submitted(run_id, resources_of(resources))
        except NotImplementedError:  # this backend cannot look a run up: only time tells
            found, launch_ended = None, False
        if found:
            return Unrecorded(external_id=found)
        if launch_ended:
            return Unrecorded(lost_reason=f"never reached the runner (its launch by {launcher} ended before)")
        if overdue:
            return Unrecorded(lost_reason="never reached the runner (lfops stopped while launching)")
        return Unrecorded()

    def record_submitted(self, run_id: int, backend: str, external_id: str) -> bool:
        """Record the runner id a lookup found (once: the launch itself may record it at the same moment)."""
        out = self.runners.get(backend).output_dir(external_id)
        with self.store.session() as s:
            n = s.execute(
                update(Run).where(Run.id == run_id, Run.external_id == "").values(external_id=external_id, run_dir=out)
            ).rowcount
            if n:
                audit.record(s, "lfops", "run.found", f"run:{run_id}", external_id=external_id)
        return bool(n)

    def finish(self, run_id: int, state: RunState, reason: str, out: Path | None) -> bool:
        """Move a run to a final state exactly once (another monitor may be racing us) with its final metrics."""
        if out is not None:
            ingest_log(self.store, run_id, out)
        final = final_metrics(out) if out is not None else {}
        with self.store.session() as s:
            run = s.get(Run, run_id)
            values: dict[str, Any] = {"status": state.value, "reason": reason, "finished_at": utcnow()}
            if run.started_at is None and state != RunState.LOST:
                values["started_at"] = run.created_at
            if final:
                values["final_metrics"] = final
                values["final_loss"] = final.get("train_loss")
            n = s.execute(update(Run).where(Run.id == run_id, Run.status.in_(ACTIVE)).values(**values)).rowcount
            if not n:
                return False
            if final:  # the search's copy of the loss, in the same transaction (backend.runs.params)
                record_loss(s, run_id, final.get("train_loss"))
            if out is not None:
                ingest_state(s, run_id, out)
            audit.record(
                s, "lfops", f"run.{state.value}", f"run:{run_id}", reason=reason, final_loss=final.get("train_loss")
            )
        if state == RunState.SUCCEEDED:
            self.register(run_id)
        return True

    def register(self, run_id: int, wait: bool = True) -> bool:
        """Register a succeeded run as a model version, once whichever process gets there first: a lock per run
        (released when its holder dies) makes the others wait, then find the version registered. Without `wait`, a
        registration under way elsewhere is left to finish. False when nothing was attempted."""
        if self.registry is None:
            return False
        with _registration_lock(self.registry.root, run_id, wait) as held:
            if not held:
                return False
            try:
                self.registry.register_run(run_id)
            except LfopsError as exc:
                with self.store.session() as s:
                    run = s.get(Run, run_id)
                    run.reason = f"{REGISTRATION_FAILED}: {exc}"
                    audit.record(s, "lfops", "registry.register_failed", f"run:{run_id}", error=str(exc))
        return True

    def unregistered(self, retry_failed: bool = False, limit: int = 20) -> list[int]:
        """Succeeded runs without their model version (the app stopped between the end and the registration);
        those whose registration failed only with `retry_failed`."""
        if self.registry is None:
            return []
        query = (
            select(Run.id)
            .outerjoin(ModelVersion, ModelVersion.run_id == Run.id)
            .where(Run.status == RunState.SUCCEEDED.value, ModelVersion.id.is_(None))
            .order_by(Run.id)
            .limit(limit)
        )
        if not retry_failed:
            query = query.where(Run.reason.not_like(f"{REGISTRATION_FAILED}%"))
        with self.store.session() as s:
            return list(s.scalars(query))

    def register_missed(self) -> None:
        """Register what `unregistered` finds, leaving the ones another process is registering right now to it."""
        for run_id in self.unregistered():
            self.register(run_id, wait=False)

    def wait(
        self,
        actor: Actor,
        run_id: int,
        timeout: float | None = None,
        poll: float = 0.5,
        on_progress: Callable[[RunProgress], None] | None = None,
    ) -> RunView:
        """Until the run ends. Between full tracking passes (database, metrics; once a second) only the runner's
        own status is polled, which is cheap: polling the database 20 times a second slowed a 2-core training by
        several percent. `on_progress` gets the run's progress after each full pass, the last one included."""
        require(actor, "read")
        deadline = None if timeout is None else time.monotonic() + timeout
        last_pass = -math.inf
        ended = False
        while True:
            if ended or time.monotonic() - last_pass >= FULL_PASS_S:
                last_pass = time.monotonic()
                self.advance_run(run_id)
                view = self.queries.get(actor, run_id)
                if on_progress is not None:
                    on_progress(self.queries.progress(actor, run_id))
                if view.finished:
                    return view
                if deadline is not None and time.monotonic() > deadline:
                    raise TimedOut(f"timeout: run #{run_id} is still {view.status} after {timeout:g} s")
            time.sleep(poll)
            if view.external_id:
                ended = self.runners.get(view.backend).status(view.external_id).state.finished

    @staticmethod
    def may_cancel(actor: Actor | None, view: RunView) -> bool:
        """Whether `actor` may cancel this run now: it is unfinished, and theirs (or they are an admin)."""
        return _cancel_refusal(actor, view.id, view.status, view.submitted_by) is None

    def cancel(self, actor: Actor, run_id: int) -> RunView:
        """End a run and its whole process tree; its submitter or an admin may."""
        require(actor, "run.cancel")
        with self.store.session() as s:
            run = run_row(s, run_id)
            refusal = _cancel_refusal(actor, run_id, run.status, run.submitted_by.name)
            if refusal is not None:
                raise refusal
            external_id, backend = run.external_id, run.backend
            audit.record(s, actor, "run.cancel", f"run:{run_id}")
        reason = f"cancelled by {actor.name}"
        if external_id:
            self.runners.get(backend).cancel(external_id, reason=reason)
        for _ in range(100):  # the runner reports cancelled once the process tree is gone
            if self.advance_run(run_id).changed or not external_id:
                break
            time.sleep(0.1)
        if not external_id:
            self.finish(run_id, RunState.CANCELLED, reason, None)
        return self.queries.get(actor, run_id)


def _cancel_refusal(actor: Actor | None, run_id: int, status: str, submitter: str) -> LfopsError | None:
    """The one rule for cancelling (the verb, and whether a Cancel button is offered): why `actor` may not, or None."""
    if actor is None or not actor.can("run.cancel"):
        return PermissionDenied(f"{actor.name if actor else 'nobody'} may not cancel run #{run_id}")
    if submitter != actor.name and not actor.can("run.override"):
        return PermissionDenied(f"{actor.name} may not cancel run #{run_id} of {submitter}")
    if status not in ACTIVE:
        return Conflict(f"run #{run_id} is already {RunState(status).label}")
    return None


@contextmanager
def _registration_lock(root: Path, run_id: int, wait: bool) -> Iterator[bool]:
    """An flock per run next to the registry's versions; yields False when not `wait` and another process holds it."""
    with file_lock(Path(root) / ".locks" / f"run-{run_id}.lock", wait) as acquired:
        yield acquired
