"""Retrain change requests with a dependency bot's safeguards; the merge hook that may launch a merged config.

`Retrain.handle(signal)` decides, in this order (one source for each rule):
1. the signal must name a model version trained here and served by a running deployment, else INVALID (recorded with
   its reason; nothing else changes);
2. the model already has an open retrain request: the same fingerprint again is a DUPLICATE (nothing recorded), new
   evidence is a comment on that request (COMMENTED), never a second request;
3. a request carrying this fingerprint was closed unmerged (or merged): SUPPRESSED until the fingerprint changes;
   (the last attempt for this fingerprint failed less than RETRY_AFTER ago: the same answer, not recorded again);
4. a retrain request of this model was merged less than `cooldown` ago: COOLDOWN;
5. `hourly_limit` requests were opened in the last hour (all models): RATE_LIMITED;
6. otherwise the bot claims the model (a `retrain_requests` row whose unique `open_key` is the model's name, so two
   processes never open two) and saves the proposal through `ChangeRequests.save`, the normal save path, on branch
   `lfops-bot/retrain-<name>`; a branch of that name that is not the bot's gets `-<request id>` appended.
A signal that is refused the same way as the last time its fingerprint was seen is not recorded again (the periodic
check sees the same data every minute). Every recorded outcome writes an audit event in the same transaction.

Merging is people's: `on_merged` (ChangeRequests' hook, after the merge is recorded) settles the retrain request,
starts a run when the merged config says `lfops.launch_on_merge: true` (as the merger, audited; never before the
merge, since the hook only runs once main holds it), then runs the dataset check for the new main.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import String, cast, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend import audit
from backend.auth import Actor, require
from backend.config import TrainConfig
from backend.errors import Conflict, LfopsError
from backend.gitstore import GitStore
from backend.retrain import datasets
from backend.retrain.bot import BOT_NAME, bot_actor
from backend.retrain.proposals import description, launches_on_merge, propose
from backend.retrain.signals import Outcome, RetrainSignal
from backend.review import ChangeRequests, ChangeRequestView
from backend.review_status import UNDER_REVIEW, ChangeRequestStatus
from backend.store import Store
from backend.store.models import (
    AuditEvent,
    ChangeRequest,
    Config,
    Deployment,
    ModelVersion,
    RetrainRequest,
    RetrainSignalRecord,
    Run,
    utcnow,
)

if TYPE_CHECKING:
    from backend.runs import Runs

log = logging.getLogger(__name__)

COOLDOWN = timedelta(hours=24)
HOURLY_LIMIT = 5
# A claim whose change request never appeared (the process died while saving) is given up after this long.
CLAIM_STALE = timedelta(minutes=10)
# A signal whose request could not be opened (dataset files gone, Git away) is tried again after this long, not at
# every periodic pass.
RETRY_AFTER = timedelta(minutes=10)
# A merge's own hook launches it at once; the catch-up (launch_missed) leaves merges this young to it, and does not
# start runs for merges older than a day (people decide then).
LAUNCH_GRACE = timedelta(minutes=2)
LAUNCH_CATCH_UP = timedelta(hours=24)
OPENING, OPEN, MERGED, CLOSED, FAILED = "opening", "open", "merged", "closed", "failed"


@dataclass(frozen=True)
class Handled:
    outcome: Outcome
    change_request: int | None = None
    signal_id: int | None = None  # None: not recorded (a duplicate, or refused as the last time)
    reason: str = ""


@dataclass(frozen=True)
class SignalView:
    id: int
    kind: str
    model_name: str
    deployment: str
    model_version_id: int | None
    fingerprint: str
    evidence_ref: str
    summary: str
    observed_at: datetime
    received_at: datetime
    outcome: Outcome
    reason: str
    change_request: int | None


@dataclass(frozen=True)
class RequestView:
    id: int
    model_name: str
    config_path: str
    change_request: int | None
    branch: str
    state: str
    reason: str
    created_at: datetime
    finished_at: datetime | None


@dataclass
class CheckReport:
    handled: list[tuple[RetrainSignal, Handled]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    checked: int = 0


@dataclass(frozen=True)
class _Target:
    model_name: str
    model_ref: str
    config_path: str
    commit: str
    dataset_version: str


class Retrain:
    """`Workspace.retrain`: signals in, retrain change requests out; the merge hook; the lists."""

    def __init__(
        self,
        store: Store,
        repo: GitStore,
        changes: ChangeRequests,
        runs: Callable[[], Runs],
        cooldown: timedelta = COOLDOWN,
        hourly_limit: int = HOURLY_LIMIT,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.repo = repo
        self.changes = changes
        self.runs = runs
        self.cooldown = cooldown
        self.hourly_limit = hourly_limit
        self.clock = clock

    # ---- signals ------------------------------------------------------------------------------------------------

    def handle(self, signal: RetrainSignal) -> Handled:
        """Act on one signal (module docstring); LfopsError only for a malformed signal, which changes nothing."""
        signal = signal.checked()
        self.settle()
        with self.store.session() as s:
            target = _target(s, signal)
        if isinstance(target, str):
            return self._refuse(signal, _model_name_of(self.store, signal), Outcome.INVALID, target)
        for _attempt in range(2):
            decided = self._decide(signal, target)
            if decided is not None:
                return decided
            try:
                request_id = self._claim(signal, target)
            except IntegrityError:
                continue  # another process claimed the model at this moment: comment on its request instead
            return self._open(signal, target, request_id)
        raise Conflict(f"retrain: the claim on {target.model_name} kept changing hands; the next check tries again")

    def _decide(self, signal: RetrainSignal, target: _Target) -> Handled | None:
        """Rules 2-5; None: open a request."""
        now = self._now()
        with self.store.session() as s:
            current = s.scalar(select(RetrainRequest).where(RetrainRequest.open_key == target.model_name))
            if current is not None:
                if _carries(s, current.id, signal.fingerprint):
                    return Handled(Outcome.DUPLICATE, current.change_request_id, None, "already on the open request")
                row = _record(s, signal, target.model_name, Outcome.COMMENTED, "", current.id, now)
                subject = f"change_request:{current.change_request_id}" if current.change_request_id else "retrain"
                audit.record(
                    s,
                    BOT_NAME,
                    "retrain.comment",
                    subject,
                    signal=row.id,
                    evidence=signal.evidence_ref,
                    fingerprint=signal.fingerprint,
                )
                return Handled(Outcome.COMMENTED, current.change_request_id, row.id)
            before = s.execute(
                select(RetrainRequest.state, RetrainRequest.change_request_id)
                .join(RetrainSignalRecord, RetrainSignalRecord.request_id == RetrainRequest.id)
                .where(
                    RetrainSignalRecord.fingerprint == signal.fingerprint,
                    RetrainRequest.state.in_((CLOSED, MERGED)),
                )
                .order_by(RetrainRequest.id.desc())
                .limit(1)
            ).first()
            if before is not None:
                state, cr = before
                how = "closed unmerged" if state == CLOSED else "merged"
                reason = f"change request #{cr} with this signal was {how}; suppressed until the signal changes"
                return self._refuse(signal, target.model_name, Outcome.SUPPRESSED, reason, s)
            tried = s.execute(  # the last attempt to open a request for this fingerprint (a claim was made)
                select(RetrainSignalRecord.outcome, RetrainSignalRecord.received_at, RetrainSignalRecord.reason)
                .where(
                    RetrainSignalRecord.fingerprint == signal.fingerprint, RetrainSignalRecord.request_id.is_not(None)
                )
                .order_by(RetrainSignalRecord.id.desc())
                .limit(1)
            ).first()
            if (
                tried is not None
                and tried[0] in (Outcome.FAILED, Outcome.INVALID)
                and _aware(tried[1]) > now - RETRY_AFTER
            ):
                return Handled(Outcome(tried[0]), None, None, f"{tried[2]} (tried again after {RETRY_AFTER})")
            merged_at = s.scalar(
                select(func.max(RetrainRequest.finished_at)).where(
                    RetrainRequest.model_name == target.model_name, RetrainRequest.state == MERGED
                )
            )
            if merged_at is not None and _aware(merged_at) > now - self.cooldown:
                until = _aware(merged_at) + self.cooldown
                reason = (
                    f"a retrain of {target.model_name} was merged at {merged_at:%Y-%m-%d %H:%M}; "
                    f"cool-down until {until:%Y-%m-%d %H:%M}"
                )
                return self._refuse(signal, target.model_name, Outcome.COOLDOWN, reason, s)
            opened = s.scalar(
                select(func.count(RetrainRequest.id)).where(
                    RetrainRequest.created_at > now - timedelta(hours=1), RetrainRequest.state != FAILED
                )
            )
            if opened >= self.hourly_limit:
                reason = f"{opened} retrain requests opened in the last hour (limit {self.hourly_limit})"
                return self._refuse(signal, target.model_name, Outcome.RATE_LIMITED, reason, s)
        return None

    def _claim(self, signal: RetrainSignal, target: _Target) -> int:
        name = target.config_path.removeprefix("configs/").removesuffix(".yaml")
        with self.store.session() as s:
            request = RetrainRequest(
                model_name=target.model_name,
                config_path=target.config_path,
                open_key=target.model_name,
                branch=f"{BOT_NAME}/retrain-{name}",
                state=OPENING,
                created_at=self._now(),
            )
            s.add(request)
            s.flush()
            return request.id

    def _open(self, signal: RetrainSignal, target: _Target, request_id: int) -> Handled:
        """Save the proposal as the bot; whatever fails, the claim is released with its reason."""
        try:
            main = self.repo.sync_main()
            proposal = propose(self.repo, main, target.commit, target.config_path, signal)
            message = description(
                signal, target.model_ref, target.config_path, target.commit, target.dataset_version, proposal
            )
            bot = bot_actor(self.store)
            with self.store.session() as s:
                branch = s.get(RetrainRequest, request_id).branch
            try:
                saved = self.changes.save(bot, proposal.config, proposal.name, message, branch)
            except Conflict as exc:  # the branch is someone else's (on origin, or with their open request)
                log.info("retrain: branch %s is taken (%s); using %s-%s", branch, exc, branch, request_id)
                branch = f"{branch}-{request_id}"
                saved = self.changes.save(bot, proposal.config, proposal.name, message, branch)
        except LfopsError as exc:
            invalid = exc.field in ("config", "dataset")
            return self._release(signal, target, request_id, Outcome.INVALID if invalid else Outcome.FAILED, exc)
        with self.store.session() as s:
            request = s.get(RetrainRequest, request_id)
            request.change_request_id = saved.change_request
            request.branch = saved.branch
            request.state = OPEN
            row = _record(s, signal, target.model_name, Outcome.OPENED, "", request_id, self._now())
            audit.record(
                s,
                BOT_NAME,
                "retrain.open",
                f"change_request:{saved.change_request}",
                signal=row.id,
                kind=signal.kind,
                deployment=signal.deployment or "",
                model_version=signal.model_version_id,
                evidence=signal.evidence_ref,
                fingerprint=signal.fingerprint,
                dataset_version=proposal.dataset_version,
            )
            return Handled(Outcome.OPENED, saved.change_request, row.id)

    def _release(
        self, signal: RetrainSignal, target: _Target, request_id: int, outcome: Outcome, exc: LfopsError
    ) -> Handled:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        with self.store.session() as s:
            request = s.get(RetrainRequest, request_id)
            request.state, request.open_key, request.reason, request.finished_at = FAILED, None, reason, self._now()
            row = _record(s, signal, target.model_name, outcome, reason, request_id, self._now())
            audit.record(
                s, BOT_NAME, f"retrain.{outcome}", f"retrain:{target.model_name}", signal=row.id, reason=reason
            )
            return Handled(outcome, None, row.id, reason)

    def _refuse(
        self, signal: RetrainSignal, model_name: str, outcome: Outcome, reason: str, s: Session | None = None
    ) -> Handled:
        """Record a refusal, unless this fingerprint's last record is the same refusal."""
        if s is None:
            with self.store.session() as session:
                return self._refuse(signal, model_name, outcome, reason, session)
        last = s.execute(
            select(RetrainSignalRecord.outcome, RetrainSignalRecord.reason)
            .where(RetrainSignalRecord.fingerprint == signal.fingerprint)
            .order_by(RetrainSignalRecord.id.desc())
            .limit(1)
        ).first()
        if last is not None and tuple(last) == (outcome.value, reason):
            return Handled(outcome, None, None, reason)
        row = _record(s, signal, model_name, outcome, reason, None, self._now())
        audit.record(s, BOT_NAME, f"retrain.{outcome}", f"retrain:{model_name}", signal=row.id, reason=reason)
        return Handled(outcome, None, row.id, reason)

    def settle(self) -> None:
        """Requests whose change request was merged or closed give up their claim; claims that never got a change
        request adopt the bot's request on their branch, or are released once stale."""
        now = self._now()
        with self.store.session() as s:
            for request in s.scalars(select(RetrainRequest).where(RetrainRequest.open_key.is_not(None))):
                cr = s.get(ChangeRequest, request.change_request_id) if request.change_request_id else None
                if cr is None:
                    cr = _bots_request_on(s, request.branch)
                    if cr is None:
                        if _aware(request.created_at) < now - CLAIM_STALE:
                            request.state, request.open_key, request.finished_at = FAILED, None, now
                            request.reason = "no change request appeared for this claim (the save was interrupted)"
                            audit.record(
                                s, BOT_NAME, "retrain.failed", f"retrain:{request.model_name}", reason=request.reason
                            )
                        continue
                    request.change_request_id, request.state = cr.id, OPEN
                status = ChangeRequestStatus(cr.status)
                if status in UNDER_REVIEW or status == ChangeRequestStatus.SAVING:
                    continue
                state = MERGED if status == ChangeRequestStatus.MERGED else CLOSED
                request.state, request.open_key = state, None
                request.finished_at = cr.merged_at if state == MERGED and cr.merged_at else cr.updated_at
                audit.record(s, BOT_NAME, f"retrain.{state}", f"change_request:{cr.id}", model=request.model_name)

    # ---- the dataset trigger ------------------------------------------------------------------------------------

    def check(self, actor: Actor | None = None) -> CheckReport:
        """The dataset trigger over every running deployment, each signal handled (`lfops retrain check`, the
        periodic pass, after every merge). `actor`: who asked (None: lfops itself)."""
        if actor is not None:
            require(actor, "config.save")
        with self.store.session() as s:
            deployed = datasets.deployed_models(s)
        found = datasets.check(self.repo, deployed, self._now())
        report = CheckReport(problems=list(found.problems), checked=found.checked)
        for signal in found.signals:
            try:
                report.handled.append((signal, self.handle(signal)))
            except LfopsError as exc:
                report.problems.append(f"{signal.deployment}: {exc}")
        return report

    # ---- merges -------------------------------------------------------------------------------------------------

    def on_merged(self, view: ChangeRequestView, actor: Actor) -> None:
        """ChangeRequests' hook once a merge is recorded. Never raises: the merge has happened whatever this does."""
        try:
            self.settle()
        except Exception:  # noqa: BLE001 - the next check settles it
            log.exception("retrain: settling after the merge of #%s failed", view.id)
        try:
            self.launch_on_merge(view, actor)
        except Exception:  # noqa: BLE001 - recorded as a failed launch where it got that far
            log.exception("retrain: launch on merge of #%s failed", view.id)
        try:
            self.check()
        except Exception:  # noqa: BLE001 - the periodic check tries again
            log.exception("retrain: the dataset check after the merge of #%s failed", view.id)

    def launch_on_merge(self, view: ChangeRequestView, actor: Actor) -> int | None:
        """When the merged config says `lfops.launch_on_merge: true`: launch the merged request as its merger; the
        run id, or None. A refused launch is audited (`review.launch_on_merge_failed`) and left to people."""
        if view.status != ChangeRequestStatus.MERGED or not view.merged_commit:
            return None
        raw = self.repo.read(view.merged_commit, view.config_path)
        if raw is None or not launches_on_merge(TrainConfig.parse(raw, view.config_path)):
            return None
        subject = f"change_request:{view.id}"
        try:
            run = self.runs().launch(actor, view.id)
        except LfopsError as exc:
            with self.store.session() as s:
                audit.record(s, actor, "review.launch_on_merge_failed", subject, reason=str(exc).splitlines()[0])
            return None
        with self.store.session() as s:
            audit.record(s, actor, "review.launch_on_merge", subject, run=run.id, merge_commit=view.merged_commit)
        return run.id

    def launch_missed(self) -> list[int]:
        """Merges whose config says `launch_on_merge` but whose hook never ran (the process stopped between recording
        the merge and its hook, or the reconcile completed the merge): launched now, as their merger; the run ids.
        Merges younger than LAUNCH_GRACE are left to their hook, and older than LAUNCH_CATCH_UP to people."""
        now = self._now()
        with self.store.session() as s:
            decided = select(AuditEvent.id).where(
                AuditEvent.subject == "change_request:" + cast(ChangeRequest.id, String),
                AuditEvent.action.in_(("review.launch_on_merge", "review.launch_on_merge_failed")),
            )
            launched = (
                select(Run.id)
                .join(Config, Run.config_id == Config.id)
                .where(Config.commit == ChangeRequest.merged_commit, Config.path == ChangeRequest.config_path)
            )
            due = [
                (cr.id, Actor.of(cr.merged_by))
                for cr in s.scalars(
                    select(ChangeRequest).where(
                        ChangeRequest.status == ChangeRequestStatus.MERGED,
                        ChangeRequest.merged_at > now - LAUNCH_CATCH_UP,
                        ChangeRequest.merged_at < now - LAUNCH_GRACE,
                        ChangeRequest.merged_by_id.is_not(None),
                        ~decided.exists(),
                        ~launched.exists(),
                    )
                )
            ]
        runs = [self.launch_on_merge(self.changes.get(merger, cr_id), merger) for cr_id, merger in due]
        return [run for run in runs if run is not None]

    # ---- reading ------------------------------------------------------------------------------------------------

    def signals(self, actor: Actor, limit: int = 50, model: str | None = None, offset: int = 0) -> list[SignalView]:
        """Signals received, newest first, with what became of them."""
        require(actor, "read")
        q = _SIGNALS.order_by(RetrainSignalRecord.id.desc()).offset(offset).limit(limit)
        if model:
            q = q.where(RetrainSignalRecord.model_name == model)
        with self.store.session() as s:
            return [_signal_view(row) for row in s.execute(q)]

    def requests(self, actor: Actor, limit: int = 50, offset: int = 0) -> list[RequestView]:
        require(actor, "read")
        self.settle()
        with self.store.session() as s:
            rows = s.scalars(select(RetrainRequest).order_by(RetrainRequest.id.desc()).offset(offset).limit(limit))
            return [
                RequestView(
                    r.id,
                    r.model_name,
                    r.config_path,
                    r.change_request_id,
                    r.branch,
                    r.state,
                    r.reason,
                    r.created_at,
                    r.finished_at,
                )
                for r in rows
            ]

    def evidence(self, actor: Actor, cr_id: int) -> list[SignalView]:
        """The signals behind a retrain change request, oldest first: the one that opened it, then the comments
        ([] for a request people opened)."""
        require(actor, "read")
        q = _SIGNALS.where(RetrainRequest.change_request_id == cr_id).order_by(RetrainSignalRecord.id)
        with self.store.session() as s:
            return [_signal_view(row) for row in s.execute(q)]

    def _now(self) -> datetime:
        return _aware(self.clock())


_SIGNALS = select(RetrainSignalRecord, RetrainRequest.change_request_id).outerjoin(
    RetrainRequest, RetrainSignalRecord.request_id == RetrainRequest.id
)


def _signal_view(row: tuple[RetrainSignalRecord, int | None]) -> SignalView:
    r, cr = row
    return SignalView(
        r.id,
        r.kind,
        r.model_name,
        r.deployment,
        r.model_version_id,
        r.fingerprint,
        r.evidence_ref,
        r.summary,
        r.observed_at,
        r.received_at,
        Outcome(r.outcome),
        r.reason,
        cr,
    )


def _target(s: Session, signal: RetrainSignal) -> _Target | str:
    """What the signal is about, or why it cannot be acted on."""
    mv = s.get(ModelVersion, signal.model_version_id)
    if mv is None:
        return f"model version: #{signal.model_version_id} does not exist"
    run = s.get(Run, mv.run_id) if mv.run_id is not None else None
    config = s.get(Config, run.config_id) if run is not None else None
    if config is None:
        return f"model version: {mv.name}:v{mv.version} was not trained by a run of lfops (nothing to retrain from)"
    ref = f"{mv.name}:v{mv.version}"
    running = select(Deployment).where(Deployment.status != "stopped")
    if signal.deployment:
        row = s.scalar(select(Deployment).where(Deployment.name == signal.deployment))
        if row is None:
            return f"deployment: {signal.deployment!r} does not exist"
        if row.status == "stopped":
            return f"deployment: {signal.deployment!r} is stopped; nothing it serves needs retraining"
        if row.model_version_id != mv.id:
            return f"deployment: {signal.deployment!r} no longer serves {ref} (the signal is stale)"
    elif s.scalar(running.where(Deployment.model_version_id == mv.id).limit(1)) is None:
        return f"deployment: no running deployment serves {ref}"
    return _Target(mv.name, ref, config.path, config.commit, config.dataset_version)


def _model_name_of(store: Store, signal: RetrainSignal) -> str:
    with store.session() as s:
        mv = s.get(ModelVersion, signal.model_version_id)
        return mv.name if mv is not None else "-"


def _carries(s: Session, request_id: int, fingerprint: str) -> bool:
    return (
        s.scalar(
            select(RetrainSignalRecord.id)
            .where(RetrainSignalRecord.request_id == request_id, RetrainSignalRecord.fingerprint == fingerprint)
            .limit(1)
        )
        is not None
    )


def _bots_request_on(s: Session, branch: str) -> ChangeRequest | None:
    from backend.store.models import User

    return s.scalar(
        select(ChangeRequest)
        .join(User, ChangeRequest.author_id == User.id)
        .where(ChangeRequest.branch == branch, User.name == BOT_NAME, ChangeRequest.status.in_(UNDER_REVIEW))
        .order_by(ChangeRequest.id.desc())
        .limit(1)
    )


def _record(
    s: Session,
    signal: RetrainSignal,
    model_name: str,
    outcome: Outcome,
    reason: str,
    request_id: int | None,
    now: datetime,
) -> RetrainSignalRecord:
    row = RetrainSignalRecord(
        request_id=request_id,
        kind=signal.kind,
        model_name=model_name,
        deployment=signal.deployment or "",
        model_version_id=signal.model_version_id if outcome != Outcome.INVALID or model_name != "-" else None,
        fingerprint=signal.fingerprint,
        evidence_ref=signal.evidence_ref,
        summary=signal.summary_markdown,
        observed_at=signal.observed_at,
        received_at=now,
        outcome=outcome.value,
        reason=reason,
    )
    s.add(row)
    s.flush()
    return row


def _aware(value: datetime) -> datetime:
    """SQLite gives naive datetimes back (stored as UTC)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
