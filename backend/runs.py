"""Runs: the launch policy, run records and their tracking (status, metrics, logs, cancel, wait).

Launch policy. A run trains exactly the merge commit of a merged change request, and only while that commit is on
main: the merge commit is the one tree that was validated at merge time with its approval (the config, the data
and everything else in the repository exactly as reviewed). A later commit on main "contains" the approved config
but also changes nobody approved together with it (other data files, a dataset_info.json edit), so it is not
launchable by itself; launch the change request that made it. An admin may launch any commit of the repository
with a reason (`override_reason`), which is audited. The checks live here, not in a UI.

Tracking. A run goes queued -> running -> succeeded | failed | cancelled | lost, each change persisted with its
time and reason. `advance()` moves runs forward from what the runner reports; the background `RunMonitor`
(started by the WebUI and `lfops runs wait`) calls it every second. Metrics are tailed from LLaMA-Factory's
`trainer_log.jsonl` while training and completed from `trainer_state.json` / `all_results.json` at the end.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, cast, func, select, text, update
from sqlalchemy.orm import Session

from backend import approvals, audit
from backend import config as cfgmod
from backend.auth import Actor, require
from backend.config_rows import record_config
from backend.errors import Conflict, LfopsError, NotFound, PermissionDenied
from backend.gitstore import GitStore
from backend.review_status import ChangeRequestStatus
from backend.runners.base import Resources, Runner, RunSpec, RunState
from backend.store import Store
from backend.store.models import ChangeRequest, Config, Metric, ModelVersion, Run, User, utcnow

if TYPE_CHECKING:
    from backend.registry import Registry
    from backend.settings import Settings

log = logging.getLogger(__name__)

ACTIVE = (RunState.QUEUED.value, RunState.PENDING.value, RunState.RUNNING.value)
# A run row without a runner id this long after launch was never submitted (the app died while launching).
SUBMIT_GRACE = timedelta(minutes=5)
# Runs.wait's full tracking pass (database, metrics) at most this often; the runner's status in between.
FULL_PASS_S = 1.0
# A succeeded run still without a model version this long after it ended missed its registration.
REGISTER_CATCH_UP = timedelta(minutes=1)
# trainer_log.jsonl fields that are bookkeeping, not metrics.
_NOT_METRICS = {"current_steps", "total_steps", "elapsed_time", "remaining_time"}
# trainer_state.json names what trainer_log.jsonl calls otherwise.
_STATE_KEY_NAMES = {"learning_rate": "lr"}
_CR_RE = re.compile(r"^#?(\d{1,6})$")
_COMMIT_RE = re.compile(r"^[0-9a-fA-F]{7,40}$")


# Not frozen: a lineage answer builds a thousand of these, and a frozen dataclass initialises 6x slower.
@dataclass(slots=True)
class RunView:
    id: int
    status: str
    reason: str
    backend: str
    external_id: str
    commit: str
    config_path: str
    config_hash: str
    dataset_version: str
    base_model: str
    change_request_id: int | None
    submitted_by: str
    override_reason: str
    reproduces_run_id: int | None
    final_loss: float | None
    final_metrics: dict[str, float]
    params: dict[str, Any]
    resources: dict[str, Any]
    output_dir: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    base_model_revision: str = ""

    @property
    def finished(self) -> bool:
        return RunState(self.status).finished

    @property
    def config_name(self) -> str:
        return Path(self.config_path).stem

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or utcnow()
        return (_aware(end) - _aware(self.started_at)).total_seconds()


@dataclass(frozen=True)
class LaunchTarget:
    commit: str
    config_path: str
    change_request_id: int | None


@dataclass
class _Progress:
    """What one pass of the tracker learned about one run."""

    changed: bool = False
    new_metrics: int = 0
    notes: list[str] = field(default_factory=list)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were written in UTC.
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


_RUN_COLUMNS = (
    Run.id,
    Run.status,
    Run.reason,
    Run.backend,
    Run.external_id,
    Config.commit,
    Config.path,
    Config.config_hash,
    Config.dataset_version,
    Config.base_model,
    Config.change_request_id,
    User.name,
    Run.override_reason,
    Run.reproduces_run_id,
    Run.final_loss,
    # JSON read as text (psycopg would decode it per row): params decoded once per config, "{}" not at all
    cast(Run.final_metrics, Text),
    cast(Config.params, Text),
    cast(Run.resources, Text),
    Run.run_dir,
    Run.created_at,
    Run.started_at,
    Run.finished_at,
    Config.base_model_revision,
    Config.id,
)


def runs_query() -> Any:
    """Runs with their config and submitter as plain columns in one query (lists of runs skip the ORM's per-row
    object building: 1,000 runs in a lineage answer stay well under the 50 ms budget)."""
    return (
        select(*_RUN_COLUMNS)
        .select_from(Run)
        .join(Config, Run.config_id == Config.id)
        .join(User, Run.submitted_by_id == User.id)
    )


def run_views(s: Session, query: Any, params: dict[str, Any] | None = None) -> list[RunView]:
    """Execute a `runs_query()` (with its filters and order) and build the views."""
    params_by_config: dict[int, dict[str, Any]] = {}
    views = []
    for row in s.connection().execute(query, params or {}).all():  # Core rows, fetched at once
        (
            run_id, status, reason, backend, external_id, commit, path, config_hash, dataset_version, base_model,
            cr_id, submitter, override, reproduces, final_loss, final_metrics, params, resources, run_dir,
            created_at, started_at, finished_at, base_model_revision, config_id,
        ) = row  # fmt: skip
        if config_id not in params_by_config:
            params_by_config[config_id] = _json(params)
        views.append(
            RunView(
                id=run_id,
                status=status,
                reason=reason,
                backend=backend,
                external_id=external_id,
                commit=commit,
                config_path=path,
                config_hash=config_hash,
                dataset_version=dataset_version,
                base_model=base_model,
                change_request_id=cr_id,
                submitted_by=submitter,
                override_reason=override,
                reproduces_run_id=reproduces,
                final_loss=final_loss,
                final_metrics=_json(final_metrics),
                params=params_by_config[config_id],
                resources=_json(resources),
                output_dir=run_dir,
                created_at=created_at,
                started_at=started_at,
                finished_at=finished_at,
                base_model_revision=base_model_revision,
            )
        )
    return views


def custom_plans(s: Session) -> None:
    """PostgreSQL: plan this transaction's queries for their own values. psycopg prepares a statement after five
    executions and the server then switches to a generic plan, which for a skewed key (one dataset version of a
    hundred) joins through whole tables: measured 30 ms -> 150+ ms from the tenth lineage query on. No-op elsewhere."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def _json(value: Any) -> dict[str, Any]:
    # SQLite hands back the JSON text; psycopg decodes json columns itself
    if value is None or value == "{}":
        return {}
    return value if isinstance(value, dict) else json.loads(value)


RUNNERS = ("local", "kubernetes")


def make_runner(settings: Settings, repo: GitStore, name: str | None = None) -> Runner:
    """The runner called `name` (default settings.runner); heavy backends are imported only when chosen."""
    name = name or settings.runner
    if name == "local":
        from backend.runners.local import LocalRunner

        return LocalRunner(settings.runs_dir, repo)
    if name == "kubernetes":
        from backend.runners import kubernetes

        return kubernetes.KubernetesRunner.from_settings(settings)  # type: ignore[attr-defined]
    raise LfopsError(f"runner: {name!r} is not a runner (use local or kubernetes)")


class Runs:
    def __init__(
        self,
        store: Store,
        repo: GitStore,
        runner: Runner,
        registry: Registry | None = None,
        other_runners: Callable[[str], Runner] | None = None,
    ) -> None:
        self.store = store
        self.repo = repo
        self.runner = runner  # the default: launches without a cluster profile go here
        self.registry = registry
        self._other_runners = other_runners
        self._runners: dict[str, Runner] = {runner.name: runner}
        self._runners_lock = threading.Lock()
        self._monitor: RunMonitor | None = None
        self._monitor_lock = threading.Lock()

    def runner_for(self, backend: str) -> Runner:
        """The runner a run was launched on (each run row names its backend); made on first use."""
        with self._runners_lock:
            runner = self._runners.get(backend)
            if runner is None:
                if self._other_runners is None or backend not in RUNNERS:
                    raise LfopsError(f"runner: {backend!r} is not configured in this app")
                runner = self._runners[backend] = self._other_runners(backend)
            return runner

    # ---- policy -------------------------------------------------------------------------------------------------

    def resolve(self, target: int | str, config_path: str | None = None) -> LaunchTarget:
        """A change request number (`12`, `#12`) or a commit id (7-40 hex digits) -> commit and config path."""
        text = str(target).strip()
        m = _CR_RE.match(text)
        if m:
            with self.store.session() as s:
                cr = s.get(ChangeRequest, int(m.group(1)))
                if cr is None:
                    raise NotFound(f"change request #{m.group(1)} does not exist")
                if cr.status != ChangeRequestStatus.MERGED or not cr.merged_commit:
                    raise Conflict(
                        f"change request #{cr.id} is {cr.status}, not merged: only merged change requests can be "
                        "launched"
                    )
                if config_path and config_path != cr.config_path:
                    raise LfopsError(f"config: change request #{cr.id} changed {cr.config_path}, not {config_path}")
                return LaunchTarget(cr.merged_commit, cr.config_path, cr.id)
        if not _COMMIT_RE.match(text):
            raise LfopsError(f"target: {text!r} must be a change request number or a commit id (7-40 hex digits)")
        commit = self._rev_parse(text.lower())
        with self.store.session() as s:
            cr = s.scalar(
                select(ChangeRequest).where(
                    ChangeRequest.merged_commit == commit, ChangeRequest.status == ChangeRequestStatus.MERGED
                )
            )
            cr_id, cr_path = (cr.id, cr.config_path) if cr else (None, None)
            if cr_path is None and config_path is None:  # e.g. a change request's branch head: its one config
                paths = list(s.scalars(select(Config.path).where(Config.commit == commit).limit(2)))
                config_path = paths[0] if len(paths) == 1 else None
        if config_path is None:
            if cr_path is None:
                raise LfopsError(
                    f"config: commit {commit[:12]} is not the merge of a change request; name the config with --config"
                )
            config_path = cr_path
        return LaunchTarget(commit, config_path, cr_id if config_path == cr_path else None)

    def _rev_parse(self, text: str) -> str:
        for attempt in range(2):
            out = self.repo.git("rev-parse", "--verify", "--quiet", f"{text}^{{commit}}", check=False).strip()
            if out:
                return out
            if attempt == 0:
                self.repo.fetch()
        raise NotFound(f"commit: {text} is not in the config repository")

    def refusal(self, target: LaunchTarget) -> str | None:
        """Why this commit may not be launched without an override (None: it may)."""
        with self.store.session() as s:
            cr = s.scalar(
                select(ChangeRequest).where(
                    ChangeRequest.merged_commit == target.commit, ChangeRequest.status == ChangeRequestStatus.MERGED
                )
            )
            if cr is None:
                return f"commit {target.commit[:12]} is not the merge commit of an approved change request"
            if cr.config_path != target.config_path:
                return f"change request #{cr.id} approved {cr.config_path}, not {target.config_path}"
            if not any(approvals.counts(review, cr) for review in cr.reviews):
                return f"change request #{cr.id} has no approval for the commit it merged"
        main = self.repo.sync_main()
        if not self.repo.is_ancestor(target.commit, main):
            return f"commit {target.commit[:12]} is not on {self.repo.main}"
        return None

    # ---- launch -------------------------------------------------------------------------------------------------

    def launch(
        self,
        actor: Actor,
        target: int | str,
        config_path: str | None = None,
        override_reason: str | None = None,
        resources: Resources | None = None,
        reproduces_run_id: int | None = None,
    ) -> RunView:
        """Check the policy, record the run (queued) and hand it to the runner; refusals change nothing."""
        require(actor, "run.launch")
        override = (override_reason or "").strip()
        if override_reason is not None:
            require(actor, "run.override")
            if not override:
                raise LfopsError("override: give a reason for launching without the approval policy")
        self.store.check()
        resolved = self.resolve(target, config_path)
        refusal = self.refusal(resolved)
        if refusal and not override:
            raise PermissionDenied(f"launch refused: {refusal} (an admin may override with a reason)")
        raw = self.repo.read(resolved.commit, resolved.config_path)
        if raw is None:
            raise NotFound(f"config: {resolved.config_path} does not exist at commit {resolved.commit[:12]}")
        config, dataset_version = cfgmod.parse_and_validate(raw, self.repo.files(resolved.commit), resolved.config_path)
        resources = resources or Resources()
        runner = self.runner_for("kubernetes") if resources.profile else self.runner
        with self.store.session() as s:
            # recorded at merge; for an overridden commit nobody merged, recorded here: what it trains
            cfg_row = record_config(
                s, resolved.commit, resolved.config_path, config, dataset_version, resolved.change_request_id
            )
            run = Run(
                config_id=cfg_row.id,
                backend=runner.name,
                status=RunState.QUEUED.value,
                submitted_by_id=actor.id,
                resources=dataclasses.asdict(resources),
                override_reason=override if refusal else "",
                reproduces_run_id=reproduces_run_id,
            )
            s.add(run)
            s.flush()
            audit.record(
                s,
                actor,
                "run.launch",
                f"run:{run.id}",
                commit=resolved.commit,
                config_path=resolved.config_path,
                config_hash=cfg_row.config_hash,
                change_request=resolved.change_request_id,
                override_reason=override if refusal else "",
                refusal_overridden=refusal or "",
                reproduces_run=reproduces_run_id,
            )
            run_id = run.id
            labels = {
                "config_hash": cfg_row.config_hash,
                "dataset_version": cfg_row.dataset_version,
                "change_request": str(resolved.change_request_id or ""),
                "submitted_by": actor.name,
            }
        spec = RunSpec(
            run_id=run_id,
            repo_url=self.repo.remote_url,
            commit=resolved.commit,
            config_path=resolved.config_path,
            training_yaml=config.training_yaml(),
            resources=resources,
            labels=labels,
        )
        try:
            external_id = runner.submit(spec)
        except Exception as exc:  # noqa: BLE001 - whatever the backend raised, the run must not stay queued
            reason = f"could not start: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
            self._finish(run_id, RunState.FAILED, reason, None)
            raise LfopsError(f"run #{run_id} {reason}") from exc
        with self.store.session() as s:
            run = s.get(Run, run_id)
            run.external_id = external_id
            run.run_dir = runner.output_dir(external_id)
        self.advance_run(run_id)
        return self.get(actor, run_id)

    def preview(self, target: int | str, config_path: str | None = None, resources: Resources | None = None) -> str:
        """The Kubernetes objects launching `target` with `resources` would create, for review (no API call).

        Like `lfops log`, it only reads the config repository, so it needs no user; the WebUI still requires sign-in.
        """
        resolved = self.resolve(target, config_path)
        raw = self.repo.read(resolved.commit, resolved.config_path)
        if raw is None:
            raise NotFound(f"config: {resolved.config_path} does not exist at commit {resolved.commit[:12]}")
        config, dataset_version = cfgmod.parse_and_validate(raw, self.repo.files(resolved.commit), resolved.config_path)
        with self.store.session() as s:
            next_id = (s.scalar(select(func.max(Run.id))) or 0) + 1  # the Job's name assumes the next run id
        labels = {
            "config_hash": config.config_hash(),
            "dataset_version": dataset_version,
            "change_request": str(resolved.change_request_id or ""),
        }
        spec = RunSpec(
            next_id,
            self.repo.remote_url,
            resolved.commit,
            resolved.config_path,
            config.training_yaml(),
            resources or Resources(gpus_per_node=1),
            labels,
        )
        return self.runner_for("kubernetes").preview(spec)  # type: ignore[attr-defined]

    def reproduce(self, actor: Actor, model: str, override_reason: str | None = None) -> RunView:
        """Launch the exact commit and config that trained a registered model again (the policy applies again)."""
        if self.registry is None:
            raise LfopsError("registry: not configured")
        require(actor, "run.launch")
        version = self.registry.get(actor, model)
        if version.run_id is None:
            raise Conflict(f"model {version.ref} has no run to reproduce")
        with self.store.session() as s:
            original = s.get(Run, version.run_id)
            cfg = original.config
            commit, path, revision, resources = cfg.commit, cfg.path, cfg.base_model_revision, original.resources
            original_id = original.id
        raw = self.repo.read(commit, path)
        if raw is None:
            raise NotFound(f"config: {path} is gone from commit {commit[:12]}")
        now = cfgmod.TrainConfig.parse(raw, path).base_model_revision()
        if revision and now != revision:
            raise Conflict(f"base model changed since run #{original_id}: revision {revision} then, {now} now")
        known = {f.name for f in dataclasses.fields(Resources)}
        return self.launch(
            actor,
            commit,
            config_path=path,
            override_reason=override_reason,
            resources=Resources(**{k: v for k, v in (resources or {}).items() if k in known}),
            reproduces_run_id=original_id,
        )

    # ---- tracking -----------------------------------------------------------------------------------------------

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
        self._register_missed()
        return changed

    def advance_run(self, run_id: int) -> _Progress:
        progress = _Progress()
        with self.store.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound(f"run #{run_id} does not exist")
            status, external_id, created_at, backend = run.status, run.external_id, run.created_at, run.backend
        if status not in ACTIVE:
            return progress
        if not external_id:
            if utcnow() - _aware(created_at) > SUBMIT_GRACE:
                progress.changed = self._finish(
                    run_id, RunState.LOST, "never reached the runner (lfops stopped while launching)", None
                )
            return progress
        runner = self.runner_for(backend)
        state = runner.status(external_id)
        out = runner.output_dir(external_id)
        progress.new_metrics = self._ingest(run_id, Path(out)) if out else 0
        if state.state.finished:
            progress.changed = self._finish(run_id, state.state, state.reason, Path(out) if out else None)
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

    def _finish(self, run_id: int, state: RunState, reason: str, out: Path | None) -> bool:
        """Move a run to a final state exactly once (another monitor may be racing us) with its final metrics."""
        if out is not None:
            self._ingest(run_id, out)
        final = _final_metrics(out) if out is not None else {}
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
            if out is not None:
                self._ingest_state(s, run_id, out)
            audit.record(
                s, "lfops", f"run.{state.value}", f"run:{run_id}", reason=reason, final_loss=final.get("train_loss")
            )
        if state == RunState.SUCCEEDED:
            self._register(run_id)
        return True

    def _register(self, run_id: int) -> None:
        if self.registry is None:
            return
        try:
            self.registry.register_run(run_id)
        except LfopsError as exc:
            with self.store.session() as s:
                run = s.get(Run, run_id)
                run.reason = f"model registration failed: {exc}"
                audit.record(s, "lfops", "registry.register_failed", f"run:{run_id}", error=str(exc))

    def _register_missed(self) -> None:
        """Succeeded runs whose registration never happened (the app stopped right after the run ended)."""
        if self.registry is None:
            return
        with self.store.session() as s:
            missed = list(
                s.scalars(
                    select(Run.id)
                    .outerjoin(ModelVersion, ModelVersion.run_id == Run.id)
                    .where(
                        Run.status == RunState.SUCCEEDED.value,
                        ModelVersion.id.is_(None),
                        Run.reason == "",
                        Run.finished_at < utcnow() - REGISTER_CATCH_UP,  # younger ones are being registered now
                    )
                    .limit(20)
                )
            )
        for run_id in missed:
            self._register(run_id)

    def _ingest(self, run_id: int, out: Path) -> int:
        """Store the complete lines of trainer_log.jsonl that arrived since the last pass; returns rows added."""
        path = out / "trainer_log.jsonl"
        try:
            size = path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return 0
        with self.store.session() as s:
            offset = s.scalar(select(Run.metrics_offset).where(Run.id == run_id)) or 0
            if size <= offset:
                return 0
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read(size - offset)
            end = data.rfind(b"\n")
            if end < 0:
                return 0  # half a line: LLaMA-Factory is still writing it
            records = []
            for line in data[: end + 1].splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("current_steps"), int):
                    records.append(record)
            # LLaMA-Factory logs the last step twice (the second time without the loss): one row per (step, key).
            first_step = min((r["current_steps"] for r in records), default=0)
            have = {
                (step, key)
                for step, key in s.execute(
                    select(Metric.step, Metric.key).where(Metric.run_id == run_id, Metric.step >= first_step)
                )
            }
            rows = []
            for record in records:
                step = record["current_steps"]
                for key, value in record.items():
                    if key not in _NOT_METRICS and _is_number(value) and (step, key[:64]) not in have:
                        have.add((step, key[:64]))
                        rows.append(Metric(run_id=run_id, step=step, key=key[:64], value=float(value)))
            # Only the pass that moves the offset stores the rows: a second monitor racing us stores nothing.
            moved = s.execute(
                update(Run)
                .where(Run.id == run_id, Run.metrics_offset == offset)
                .values(metrics_offset=offset + end + 1)
            ).rowcount
            if not moved:
                return 0
            s.add_all(rows)
        return len(rows)

    def _ingest_state(self, s: Session, run_id: int, out: Path) -> None:
        """At the end: what trainer_state.json logged that trainer_log.jsonl does not carry (grad_norm, eval...)."""
        try:
            state = json.loads((out / "trainer_state.json").read_text())
        except (FileNotFoundError, ValueError):
            return
        have = {(step, key) for step, key in s.execute(select(Metric.step, Metric.key).where(Metric.run_id == run_id))}
        for entry in state.get("log_history", []):
            step = entry.get("step")
            if not isinstance(step, int) or "train_runtime" in entry:
                continue  # the summary entry is in final_metrics
            for key, value in entry.items():
                name = _STATE_KEY_NAMES.get(key, key)[:64]
                if key in ("step", "epoch") or not _is_number(value) or (step, name) in have:
                    continue
                s.add(Metric(run_id=run_id, step=step, key=name, value=float(value)))
                have.add((step, name))

    def start_monitor(self, interval: float = 1.0) -> RunMonitor:
        """The background thread that advances runs (one per Runs; starting it twice returns the same one)."""
        with self._monitor_lock:
            if self._monitor is None or not self._monitor.alive:
                self._monitor = RunMonitor(self, interval)
                self._monitor.start()
            return self._monitor

    def stop_monitor(self) -> None:
        with self._monitor_lock:
            if self._monitor is not None:
                self._monitor.stop()
                self._monitor = None

    def wait(self, actor: Actor, run_id: int, timeout: float | None = None, poll: float = 0.5) -> RunView:
        """Until the run ends. Between full tracking passes (database, metrics; once a second) only the runner's
        own status is polled, which is cheap: polling the database 20 times a second slowed a 2-core training by
        several percent."""
        require(actor, "read")
        deadline = None if timeout is None else time.monotonic() + timeout
        last_pass = -math.inf
        ended = False
        while True:
            if ended or time.monotonic() - last_pass >= FULL_PASS_S:
                last_pass = time.monotonic()
                self.advance_run(run_id)
                view = self.get(actor, run_id)
                if view.finished:
                    return view
                if deadline is not None and time.monotonic() > deadline:
                    raise LfopsError(f"timeout: run #{run_id} is still {view.status} after {timeout:g} s")
            time.sleep(poll)
            if view.external_id:
                ended = self.runner_for(view.backend).status(view.external_id).state.finished

    def cancel(self, actor: Actor, run_id: int) -> RunView:
        """End a run and its whole process tree; its submitter or an admin may."""
        require(actor, "run.cancel")
        with self.store.session() as s:
            run = _get(s, run_id)
            if run.submitted_by_id != actor.id and not actor.can("run.override"):
                raise PermissionDenied(f"{actor.name} may not cancel run #{run_id} of {run.submitted_by.name}")
            if run.status not in ACTIVE:
                raise Conflict(f"run #{run_id} is already {run.status}")
            external_id, backend = run.external_id, run.backend
            audit.record(s, actor, "run.cancel", f"run:{run_id}")
        reason = f"cancelled by {actor.name}"
        if external_id:
            self.runner_for(backend).cancel(external_id, reason=reason)
        for _ in range(100):  # the runner reports cancelled once the process tree is gone
            if self.advance_run(run_id).changed or not external_id:
                break
            time.sleep(0.1)
        if not external_id:
            self._finish(run_id, RunState.CANCELLED, reason, None)
        return self.get(actor, run_id)

    # ---- reading ------------------------------------------------------------------------------------------------

    def get(self, actor: Actor, run_id: int) -> RunView:
        require(actor, "read")
        with self.store.session() as s:
            views = run_views(s, runs_query().where(Run.id == run_id))
        if not views:
            raise NotFound(f"run #{run_id} does not exist")
        return views[0]

    def list(
        self,
        actor: Actor,
        *,
        status: str | None = None,
        commit: str | None = None,
        config: str | None = None,
        config_hash: str | None = None,
        dataset_version: str | None = None,
        submitted_by: str | None = None,
        change_request: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunView]:
        """Runs, newest first; every filter is an indexed column (no key/value scan)."""
        require(actor, "read")
        if status and status not in {s.value for s in RunState}:
            raise LfopsError(f"status: {status!r} must be one of {', '.join(s.value for s in RunState)}")
        q = runs_query().order_by(Run.id.desc()).limit(max(1, min(limit, 10_000))).offset(max(0, offset))
        if status:
            q = q.where(Run.status == status)
        if commit:
            q = q.where(commit_filter(Config.commit, commit))
        if config:
            q = q.where(Config.path == (config if "/" in config else f"configs/{config}.yaml"))
        if config_hash:
            q = q.where(Config.config_hash == config_hash)
        if dataset_version:
            q = q.where(Config.dataset_version == dataset_version)
        if submitted_by:
            q = q.where(User.name == submitted_by)
        if change_request is not None:
            q = q.where(Config.change_request_id == change_request)
        with self.store.session() as s:
            custom_plans(s)
            return run_views(s, q)

    def metrics(
        self, actor: Actor, run_id: int, keys: tuple[str, ...] = ("loss",)
    ) -> dict[str, list[tuple[int, float]]]:
        """Curves of one run: key -> [(step, value)] in step order (the metrics index serves it)."""
        require(actor, "read")
        with self.store.session() as s:
            _get(s, run_id)
            rows = s.execute(
                select(Metric.key, Metric.step, Metric.value)
                .where(Metric.run_id == run_id, Metric.key.in_(keys))
                .order_by(Metric.key, Metric.step)
            )
            curves: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}
            for key, step, value in rows:
                curves[key].append((step, value))
            return curves

    def logs(self, actor: Actor, run_id: int, follow: bool = False) -> Iterator[str]:
        view = self.get(actor, run_id)
        if not view.external_id:
            return iter(())
        return self.runner_for(view.backend).logs(view.external_id, follow=follow)


class RunMonitor:
    """A daemon thread in the app process that advances runs every `interval` seconds until stopped."""

    def __init__(self, runs: Runs, interval: float = 1.0) -> None:
        self.runs = runs
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lfops-run-monitor", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.runs.advance()
            except Exception:  # noqa: BLE001 - the monitor must outlive one bad pass (e.g. the database restarting)
                log.exception("run monitor pass failed")
            self._stop.wait(self.interval)


def commit_filter(column: Any, prefix: str) -> Any:
    """Exact commit, or a prefix as a range (both SQLite and PostgreSQL use the index for a range)."""
    prefix = prefix.lower()
    if not _COMMIT_RE.match(prefix):
        raise LfopsError(f"commit: {prefix!r} must be 7-40 hex digits")
    if len(prefix) == 40:
        return column == prefix
    return (column >= prefix) & (column < prefix + "g")


def _get(s: Session, run_id: int) -> Run:
    run = s.get(Run, run_id)
    if run is None:
        raise NotFound(f"run #{run_id} does not exist")
    return run


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _final_metrics(out: Path) -> dict[str, float]:
    """all_results.json (train and eval summaries), else train_results.json; numbers only."""
    for name in ("all_results.json", "train_results.json"):
        try:
            data = json.loads((out / name).read_text())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            continue
        if isinstance(data, dict):
            return {k: float(v) for k, v in data.items() if _is_number(v)}
    return {}
