"""Launching runs: check the policy, record the run (queued) and hand it to its runner; preview what a launch would do;
reproduce the run that trained a registered model. Refusals change nothing.

A launch is several steps (record the run, submit it, record the runner's id) and may die between any two: the run
records which process launched it, and the runner finds a submitted run by its run id, so the tracker can tell a
launch under way from a dead one and follow whatever it started (backend.runs.tracking.Tracker.unrecorded). Launches
of the same target at the same moment each make their own run.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from backend import audit
from backend import config as cfgmod
from backend.auth import Actor, require
from backend.config_rows import record_config
from backend.errors import Conflict, LfopsError, NotFound, PermissionDenied
from backend.gitstore import GitStore
from backend.runners.base import Resources, Runner, RunSpec, RunState
from backend.runs.launchers import this_process
from backend.runs.params import record_params
from backend.runs.policy import LaunchPolicy, LaunchTarget
from backend.runs.queries import RunQueries, RunView
from backend.runs.runner_set import RunnerSet
from backend.runs.tracking import Tracker, resources_of
from backend.store import Store
from backend.store.models import Run

if TYPE_CHECKING:
    from backend.registry import Registry


class Launcher:
    def __init__(
        self,
        store: Store,
        repo: GitStore,
        policy: LaunchPolicy,
        runners: RunnerSet,
        tracker: Tracker,
        queries: RunQueries,
        registry: Registry | None = None,
    ) -> None:
        self.store = store
        self.repo = repo
        self.policy = policy
        self.runners = runners
        self.tracker = tracker
        self.queries = queries
        self.registry = registry

    def _validated_config(self, resolved: LaunchTarget) -> tuple[cfgmod.TrainConfig, str]:
        """The target's config as its commit has it, validated against that commit's files; and its dataset version."""
        raw = self.repo.read(resolved.commit, resolved.config_path)
        if raw is None:
            raise NotFound(f"config: {resolved.config_path} does not exist at commit {resolved.commit[:12]}")
        return cfgmod.parse_and_validate(raw, self.repo.files(resolved.commit), resolved.config_path)

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
        resolved = self.policy.resolve(target, config_path)
        refusal = self.policy.refusal(resolved)
        if refusal and not override:
            raise PermissionDenied(f"launch refused: {refusal} (an admin may override with a reason)")
        config, dataset_version = self._validated_config(resolved)
        resources = resources or Resources()
        not_runnable = self.policy.hardware_refusal(config, self.repo.files(resolved.commit), resources)
        if not_runnable is not None:
            raise not_runnable  # before anything is recorded: a refused launch changes nothing
        runner = self.runners.for_resources(resources)
        for attempt in range(2):
            try:
                run_id, labels = self._record(
                    actor, resolved, config, dataset_version, runner, resources, refusal, override, reproduces_run_id
                )
                break
            except IntegrityError:
                # another launch of the same commit recorded its config row at the same moment: it is there now
                if attempt:
                    raise
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
            self.tracker.finish(run_id, RunState.FAILED, reason, None)
            raise LfopsError(f"run #{run_id} {reason}") from exc
        with self.store.session() as s:
            run = s.get(Run, run_id)
            run.external_id = external_id
            run.run_dir = runner.output_dir(external_id)
        self.tracker.advance_run(run_id)
        return self.queries.get(actor, run_id)

    def _record(
        self,
        actor: Actor,
        resolved: LaunchTarget,
        config: cfgmod.TrainConfig,
        dataset_version: str,
        runner: Runner,
        resources: Resources,
        refusal: str | None,
        override: str,
        reproduces_run_id: int | None,
    ) -> tuple[int, dict[str, str]]:
        """The run row (queued) and its launch event with the launching process, in one transaction."""
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
            record_params(s, run.id, cfg_row.params)  # searchable by hyperparameter from the start
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
                launcher=this_process(),  # a run left without its runner id is judged by whether this still lives
            )
            labels = {
                "config_hash": cfg_row.config_hash,
                "dataset_version": cfg_row.dataset_version,
                "change_request": str(resolved.change_request_id or ""),
                "submitted_by": actor.name,
            }
            return run.id, labels

    def preview(
        self,
        target: int | str,
        config_path: str | None = None,
        resources: Resources | None = None,
        runner: str | None = None,
    ) -> str:
        """What launching `target` with `resources` would do, from the runner that would do it (or the one named by
        `runner`): the Kubernetes objects, or the local process. Nothing is recorded, created or started.

        Like `lfops log`, it only reads the config repository, so it needs no user; the WebUI still requires sign-in.
        """
        resolved = self.policy.resolve(target, config_path)
        config, dataset_version = self._validated_config(resolved)
        with self.store.session() as s:
            next_id = (s.scalar(select(func.max(Run.id))) or 0) + 1  # names derived from the run id assume the next
        labels = {
            "config_hash": config.config_hash(),
            "dataset_version": dataset_version,
            "change_request": str(resolved.change_request_id or ""),
        }
        resources = resources or Resources(gpus_per_node=1)
        spec = RunSpec(
            next_id,
            self.repo.remote_url,
            resolved.commit,
            resolved.config_path,
            config.training_yaml(),
            resources,
            labels,
        )
        chosen = self.runners.get(runner) if runner else self.runners.for_resources(resources)
        return chosen.preview(spec)

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
        return self.launch(
            actor,
            commit,
            config_path=path,
            override_reason=override_reason,
            resources=resources_of(resources),
            reproduces_run_id=original_id,
        )
