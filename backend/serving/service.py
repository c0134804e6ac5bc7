"""Deployments: the policy, the rows and the audit of serving registry versions; targets do the work.

Policy (one place):
- deploy, roll out, undeploy and API keys need `deploy.manage` (reviewers and admins: they decide what is merged, so
  they answer for what serves traffic); everyone may read (list, show, keys list).
- Only registered versions are served, and only while `registry verify` passes; the target checks that the version
  can load there (version directory, base model, cluster profile fields) before anything starts.
- All or nothing: a deployment's row is written only after its target started it; if writing the row fails, the
  target stops it again. A refused request leaves no process, no Kubernetes object and no row.
- Every change writes an audit event (`serving.deploy`, `serving.rollout`, `serving.rollout_failed`,
  `serving.undeploy`, `serving.key.create`, `serving.key.revoke`) in the transaction of the change; never a key.

A deployment either is pinned to a version or follows a config: when a run of that config registers a new version,
`on_registered` (the registry's hook) rolls every deployment that follows it, records the rollout, and the catch-up
pass of the supervisor does the same for a registration whose hook did not get to finish (the app stopped).
Each switch is a `rollouts` row (deploy from nothing, manual, follow, undeploy to nothing): that is what lineage
reads to say where a version was served, and when.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend import audit
from backend.auth import Actor, require
from backend.errors import Conflict, LfopsError, NotFound
from backend.registry import MANIFEST, ModelVersionView, Registry
from backend.serving.keys import StoredKey, new_api_key
from backend.serving.names import check_deployment_name, default_deployment_name
from backend.serving.targets import LOCAL, LiveStatus, LocalTarget, ServedVersion, Target
from backend.settings import Settings
from backend.store import Store
from backend.store.models import ApiKey, Config, Deployment, ModelVersion, Rollout, Run, utcnow

log = logging.getLogger(__name__)

# Automatic actions (follow) are done as lfops itself: the deployer decided to follow when they deployed.
SYSTEM = Actor(id=0, name="lfops", role="admin", email="lfops@localhost")
# The registration hook rolls fresh versions; the catch-up pass leaves them to it this long.
FOLLOW_CATCH_UP = timedelta(minutes=2)
CATCH_UP_INTERVAL_S = 30.0


class DeploymentStatus(StrEnum):
    RUNNING = "running"
    ROLLING = "rolling"
    STOPPED = "stopped"


class Trigger(StrEnum):
    DEPLOY = "deploy"
    MANUAL = "manual"
    FOLLOW = "follow"
    UNDEPLOY = "undeploy"


@dataclass(frozen=True)
class DeploymentInfo:
    id: int
    name: str
    model: str  # NAME:vN served now (stopped: served last)
    model_version_id: int
    target: str  # local | a cluster profile
    namespace: str
    endpoint: str
    port: int | None
    status: str  # a DeploymentStatus value
    reason: str
    follows_config: str | None
    created_by: str
    created_at: datetime
    stopped_at: datetime | None
    live: LiveStatus | None = None  # what the target reports now (list/show with live=True)


@dataclass(frozen=True)
class RolloutInfo:
    id: int
    deployment: str
    from_model: str | None
    to_model: str | None
    trigger: str
    actor: str
    status: str  # succeeded | failed
    reason: str
    switch_s: float | None
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    label: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class DeploymentDetail:
    deployment: DeploymentInfo
    rollouts: list[RolloutInfo] = field(default_factory=list)
    keys: list[KeyInfo] = field(default_factory=list)


@dataclass(frozen=True)
class Deployed:
    deployment: DeploymentInfo
    api_key: str  # shown once, never stored


class Serving:
    """The verbs on deployments; `Workspace.serving`."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        settings: Settings,
        *,
        ready_timeout_s: float = 300.0,
        local_options: dict[str, Any] | None = None,
        kubernetes_options: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.ready_timeout_s = ready_timeout_s
        self.local = LocalTarget(settings.workspace / "serving", **(local_options or {}))
        self._kubernetes_options = kubernetes_options or {}
        self._clusters: dict[str, Target] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._follow_threads: list[threading.Thread] = []
        self._catch_up: threading.Thread | None = None
        self._stop = threading.Event()

    # ---- targets ------------------------------------------------------------------------------------------------

    def target(self, name: str) -> Target:
        """`local` or a cluster profile of LFOPS_CLUSTER_PROFILES."""
        name = (name or LOCAL).strip()
        if name == LOCAL:
            return self.local
        profile = self.settings.cluster_profiles.get(name)
        if profile is None:
            known = ", ".join(sorted(self.settings.cluster_profiles)) or "none configured"
            raise LfopsError(
                f"target: {name!r} is neither local nor a cluster profile (profiles: {known})", field="target"
            )
        with self._guard:
            if name not in self._clusters:
                from backend.serving.kubernetes import KubernetesTarget  # the cluster client only when one is used

                self._clusters[name] = KubernetesTarget(
                    profile,
                    self.settings.models_dir,
                    kubeconfig=self.settings.kubeconfig,
                    **self._kubernetes_options,
                )
            return self._clusters[name]

    def targets(self) -> list[str]:
        return [LOCAL, *sorted(self.settings.cluster_profiles)]

    # ---- deploy -------------------------------------------------------------------------------------------------

    def deploy(
        self,
        actor: Actor,
        model: str | int,
        target: str = LOCAL,
        name: str | None = None,
        follow: bool = False,
        port: int | None = None,
        ready_timeout_s: float | None = None,
        key_label: str = "first key",
    ) -> Deployed:
        """Serve a registered version (`NAME` = its newest, `NAME:vN`); returns the deployment and its first API key,
        which is shown this once. `follow`: roll to each version later registered from the same config."""
        require(actor, "deploy.manage")
        where = self.target(target)
        if port is not None and where is not self.local:
            raise LfopsError("port: only a local deployment takes a port (a cluster has its Service)", field="port")
        with self.store.session() as s:
            mv = self.registry.resolve(s, model)
            version = _served(mv)
            follows = _config_path(s, mv) if follow else None
            name = check_deployment_name(name or default_deployment_name(mv.name))
            _refuse_if_taken(s, name)
        version = self._servable(actor, version, where)
        with self._lock(name):
            key, stored = new_api_key()
            started_at, clock = utcnow(), time.monotonic()
            started = where.start(name, version, [stored], port, ready_timeout_s or self.ready_timeout_s)
            try:
                with self.store.session() as s:
                    _refuse_if_taken(s, name)  # another app deployed the same name meanwhile
                    row = s.scalar(select(Deployment).where(Deployment.name == name))
                    if row is None:
                        row = Deployment(name=name, created_at=utcnow())
                        s.add(row)
                    row.model_version_id = version.id
                    row.target = where.name
                    row.namespace = started.namespace
                    row.endpoint = started.endpoint
                    row.port = started.port
                    row.status = DeploymentStatus.RUNNING.value
                    row.reason = ""
                    row.follows_config = follows
                    row.created_by = actor.name
                    row.stopped_at = None
                    s.flush()
                    s.add(
                        Rollout(
                            deployment_id=row.id,
                            from_version_id=None,
                            to_version_id=version.id,
                            trigger=Trigger.DEPLOY.value,
                            actor=actor.name,
                            status="succeeded",
                            switch_s=round(time.monotonic() - clock, 3),
                            started_at=started_at,
                            finished_at=utcnow(),
                        )
                    )
                    s.add(_key_row(row.id, stored, key_label, actor.name))
                    audit.record(
                        s,
                        actor,
                        "serving.deploy",
                        f"deployment:{name}",
                        model=version.ref,
                        target=where.name,
                        namespace=started.namespace,
                        endpoint=started.endpoint,
                        follows=follows,
                        key_id=stored.key_id,
                    )
                    s.flush()
                    info = _info(s, row)
            except BaseException:
                with contextlib.suppress(LfopsError):
                    where.stop(name, started.namespace)
                raise
        return Deployed(info, key)

    def _servable(self, actor: Actor, version: ServedVersion, where: Target) -> ServedVersion:
        """The version with its manifest, once `registry verify` passed and the target can load it."""
        report = self.registry.verify(actor, version.id)
        if not report.ok:
            raise Conflict(
                f"model: {version.ref} fails `registry verify`, not serving it: {report.problems[0]}", field="model"
            )
        served = _with_manifest(version)
        where.check(served)
        return served

    # ---- rollout ------------------------------------------------------------------------------------------------

    def rollout(self, actor: Actor, name: str, model: str | int | None = None) -> DeploymentInfo:
        """Serve another version (default: the newest of the followed config, else of the model's name)."""
        require(actor, "deploy.manage")
        return self._roll(actor, name, model, Trigger.MANUAL)

    def _roll(self, actor: Actor, name: str, model: str | int | None, trigger: Trigger) -> DeploymentInfo:
        with self._lock(name):
            with self.store.session() as s:
                row = _running_row(s, name)
                current = s.get(ModelVersion, row.model_version_id)
                if model is not None:
                    mv = self.registry.resolve(s, model)
                elif row.follows_config:
                    mv = _newest_of_config(s, row.follows_config) or current
                else:
                    mv = self.registry.resolve(s, current.name)
                if mv.id == current.id:
                    if trigger == Trigger.FOLLOW:
                        return _info(s, row)
                    raise Conflict(f"model: deployment {name} already serves {_served(mv).ref}", field="model")
                if trigger == Trigger.FOLLOW and mv.name == current.name and mv.version < current.version:
                    return _info(s, row)  # a late registration never rolls a deployment back
                version, previous = _served(mv), _served(current)
                target_name, namespace, keys = row.target, row.namespace, _active_keys(s, row.id)
            where = self.target(target_name)
            version = self._servable(actor, version, where)
            with contextlib.suppress(LfopsError):
                previous = _with_manifest(previous)
            started_at, clock = utcnow(), time.monotonic()
            self._set_status(name, DeploymentStatus.ROLLING, f"rolling to {version.ref}")
            try:
                where.rollout(name, namespace, version, keys, previous)
            except BaseException as exc:
                try:
                    self._finish_rollout(actor, name, previous, version, trigger, started_at, clock, exc)
                except LfopsError as record_error:  # the database is down too: the rollout's own error matters more
                    log.warning("serving: could not record the failed rollout of %s: %s", name, record_error)
                raise
            return self._finish_rollout(actor, name, previous, version, trigger, started_at, clock, None)

    def _set_status(self, name: str, status: DeploymentStatus, reason: str) -> None:
        with self.store.session() as s:
            s.execute(update(Deployment).where(Deployment.name == name).values(status=status.value, reason=reason))

    def _finish_rollout(
        self,
        actor: Actor,
        name: str,
        previous: ServedVersion,
        version: ServedVersion,
        trigger: Trigger,
        started_at: datetime,
        clock: float,
        error: BaseException | None,
    ) -> DeploymentInfo:
        """The rollout's row and audit event; the deployment serves `version` now, or still `previous`."""
        reason = "" if error is None else f"rollout to {version.ref} failed: {_one_line(error)}"
        with self.store.session() as s:
            row = s.scalar(select(Deployment).where(Deployment.name == name))
            row.status = DeploymentStatus.RUNNING.value
            row.reason = reason
            if error is None:
                row.model_version_id = version.id
            s.add(
                Rollout(
                    deployment_id=row.id,
                    from_version_id=previous.id,
                    to_version_id=version.id,
                    trigger=trigger.value,
                    actor=actor.name,
                    status="succeeded" if error is None else "failed",
                    reason=reason,
                    switch_s=round(time.monotonic() - clock, 3),
                    started_at=started_at,
                    finished_at=utcnow(),
                )
            )
            audit.record(
                s,
                actor,
                "serving.rollout" if error is None else "serving.rollout_failed",
                f"deployment:{name}",
                model=version.ref,
                previous=previous.ref,
                trigger=trigger.value,
                **({"reason": reason} if reason else {}),
            )
            s.flush()
            return _info(s, row)

    # ---- follow -------------------------------------------------------------------------------------------------

    def on_registered(self, view: ModelVersionView) -> None:
        """The registry's hook after a run registered `view`: roll every deployment that follows its config.

        Never raises (a registration has happened whatever serving makes of it). The rollouts run on a thread of
        their own, so the run monitor goes on; it is not a daemon, so a CLI process finishes them before it exits."""
        try:
            with self.store.session() as s:
                mv = s.get(ModelVersion, view.id)
                path = _config_path(s, mv) if mv is not None and mv.run_id is not None else None
                names = (
                    list(
                        s.scalars(
                            select(Deployment.name)
                            .where(
                                Deployment.follows_config == path, Deployment.status != DeploymentStatus.STOPPED.value
                            )
                            .order_by(Deployment.id)
                        )
                    )
                    if path
                    else []
                )
        except Exception as exc:  # noqa: BLE001 - the registration stands whatever happens here
            log.warning("serving: following %s failed: %s", view.ref, exc)
            return
        if names:
            thread = threading.Thread(
                target=self._follow, args=(view.id, names), name="lfops-serving-follow", daemon=False
            )
            with self._guard:
                self._follow_threads = [t for t in self._follow_threads if t.is_alive()] + [thread]
            thread.start()

    def _follow(self, version_id: int, names: list[str]) -> None:
        for name in names:
            try:
                self._roll(SYSTEM, name, version_id, Trigger.FOLLOW)
            except LfopsError as exc:  # recorded as a failed rollout when it got that far
                log.warning("serving: %s did not follow to model version #%s: %s", name, version_id, exc)
            except Exception:  # noqa: BLE001 - one deployment's bug must not stop the others from following
                log.exception("serving: following model version #%s on %s failed", version_id, name)

    def wait_follows(self, timeout: float | None = None) -> None:
        """Until the rollouts started by registrations so far have ended (tests, orderly shutdown)."""
        with self._guard:
            threads = list(self._follow_threads)
        for thread in threads:
            thread.join(timeout)

    def follow_missed(self) -> list[str]:
        """Deployments following a config whose newest version has no rollout yet (its hook did not finish):
        rolled now; returns their names."""
        rolled = []
        with self.store.session() as s:
            rows = list(
                s.scalars(
                    select(Deployment).where(
                        Deployment.follows_config.is_not(None),
                        Deployment.status == DeploymentStatus.RUNNING.value,
                    )
                )
            )
            due = []
            for row in rows:
                newest = _newest_of_config(s, row.follows_config)
                current = s.get(ModelVersion, row.model_version_id)
                if newest is None or newest.id == current.id or _aware(newest.created_at) > utcnow() - FOLLOW_CATCH_UP:
                    continue
                if newest.name == current.name and newest.version < current.version:
                    continue
                tried = s.scalar(
                    select(Rollout.id).where(Rollout.deployment_id == row.id, Rollout.to_version_id == newest.id)
                )
                if tried is None:
                    due.append((row.name, newest.id))
        for name, version_id in due:
            self._follow(version_id, [name])
            rolled.append(name)
        return rolled

    # ---- undeploy -----------------------------------------------------------------------------------------------

    def undeploy(self, actor: Actor, name: str) -> DeploymentInfo:
        """Stop serving: every process or object the deployment made is removed, its keys revoked; the row stays
        (stopped) for lineage. Undeploying a stopped deployment is refused and changes nothing."""
        require(actor, "deploy.manage")
        with self._lock(name):
            with self.store.session() as s:
                row = _running_row(s, name)
                target_name, namespace = row.target, row.namespace
            started_at = utcnow()
            self.target(target_name).stop(name, namespace)
            with self.store.session() as s:
                row = _running_row(s, name)
                now = utcnow()
                revoked = s.execute(
                    update(ApiKey)
                    .where(ApiKey.deployment_id == row.id, ApiKey.revoked_at.is_(None))
                    .values(revoked_at=now)
                ).rowcount
                s.add(
                    Rollout(
                        deployment_id=row.id,
                        from_version_id=row.model_version_id,
                        to_version_id=None,
                        trigger=Trigger.UNDEPLOY.value,
                        actor=actor.name,
                        status="succeeded",
                        started_at=started_at,
                        finished_at=now,
                    )
                )
                row.status = DeploymentStatus.STOPPED.value
                row.reason = f"undeployed by {actor.name}"
                row.stopped_at = now
                audit.record(
                    s,
                    actor,
                    "serving.undeploy",
                    f"deployment:{name}",
                    model=_served(s.get(ModelVersion, row.model_version_id)).ref,
                    target=target_name,
                    keys_revoked=revoked,
                )
                s.flush()
                return _info(s, row)

    # ---- API keys -----------------------------------------------------------------------------------------------

    def create_key(self, actor: Actor, name: str, label: str = "") -> tuple[str, KeyInfo]:
        """A new API key for a running deployment: returned this once; the gateway accepts it within a second."""
        require(actor, "deploy.manage")
        if len(label or "") > 100:
            raise LfopsError("label: at most 100 characters", field="label")
        key, stored = new_api_key()
        with self._lock(name):
            return key, self._change_keys(actor, name, stored, None, label or "")

    def revoke_key(self, actor: Actor, name: str, key_id: str) -> KeyInfo:
        """The gateway refuses the key within a second; the row stays, marked revoked."""
        require(actor, "deploy.manage")
        with self._lock(name):
            return self._change_keys(actor, name, None, key_id.strip(), "")

    def _change_keys(self, actor: Actor, name: str, new: StoredKey | None, revoke: str | None, label: str) -> KeyInfo:
        rendered: tuple[Target, str, ServedVersion] | None = None
        try:
            with self.store.session() as s:
                row = _running_row(s, name)
                if new is not None:
                    key_row = _key_row(row.id, new, label, actor.name)
                    s.add(key_row)
                    action, key_id = "serving.key.create", new.key_id
                else:
                    key_row = s.scalar(select(ApiKey).where(ApiKey.deployment_id == row.id, ApiKey.key_id == revoke))
                    if key_row is None:
                        raise NotFound(f"key: {revoke!r} is not a key of deployment {name}", field="key")
                    if key_row.revoked_at is not None:
                        raise Conflict(f"key: {revoke} of deployment {name} is already revoked", field="key")
                    key_row.revoked_at = utcnow()
                    action, key_id = "serving.key.revoke", revoke
                audit.record(s, actor, action, f"deployment:{name}", key_id=key_id, label=label or None)
                s.flush()
                where, version = self.target(row.target), _served(s.get(ModelVersion, row.model_version_id))
                where.set_keys(name, row.namespace, version, _active_keys(s, row.id))
                rendered = (where, row.namespace, version)
                info = _key_info(key_row)
        except BaseException:
            if rendered is not None:  # the commit failed after the gateway got the keys: give it the stored ones
                with contextlib.suppress(LfopsError), self.store.session() as s:
                    where, namespace, version = rendered
                    where.set_keys(name, namespace, version, _active_keys(s, _row(s, name).id))
            raise
        return info

    def keys(self, actor: Actor, name: str) -> list[KeyInfo]:
        require(actor, "read")
        with self.store.session() as s:
            row = _row(s, name)
            return [
                _key_info(k)
                for k in s.scalars(select(ApiKey).where(ApiKey.deployment_id == row.id).order_by(ApiKey.id))
            ]

    # ---- reading ------------------------------------------------------------------------------------------------

    def list(
        self,
        actor: Actor,
        live: bool = False,
        include_stopped: bool = True,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[DeploymentInfo]:
        """By name; `limit`/`offset`: one page (backend.paging), the live state asked only for that page."""
        require(actor, "read")
        q = select(Deployment).order_by(Deployment.name).offset(offset).limit(limit)
        if not include_stopped:
            q = q.where(Deployment.status != DeploymentStatus.STOPPED.value)
        with self.store.session() as s:
            infos = [_info(s, row) for row in s.scalars(q)]
        return [self._with_live(i) for i in infos] if live else infos

    def get(self, actor: Actor, name: str, live: bool = False) -> DeploymentInfo:
        require(actor, "read")
        with self.store.session() as s:
            info = _info(s, _row(s, name))
        return self._with_live(info) if live else info

    def show(self, actor: Actor, name: str) -> DeploymentDetail:
        info = self.get(actor, name, live=True)
        with self.store.session() as s:
            rollouts = [
                _rollout_info(s, r, name)
                for r in s.scalars(select(Rollout).where(Rollout.deployment_id == info.id).order_by(Rollout.id))
            ]
        return DeploymentDetail(info, rollouts, self.keys(actor, name))

    def _with_live(self, info: DeploymentInfo) -> DeploymentInfo:
        if info.status == DeploymentStatus.STOPPED.value:
            return info
        try:
            live = self.target(info.target).status(info.name, info.namespace)
        except LfopsError as exc:
            live = LiveStatus("unknown", reason=str(exc))
        return replace(info, live=live)

    # ---- supervision --------------------------------------------------------------------------------------------

    def start_supervisor(self, catch_up_interval_s: float = CATCH_UP_INTERVAL_S) -> None:
        """Keep local deployments running (restart on crash, re-attached after an app restart) and catch up with
        follows that a registration's hook did not finish. The app starts this where it starts the run monitor."""
        self.local.start_supervisor()
        with self._guard:
            if self._catch_up is None or not self._catch_up.is_alive():
                self._stop.clear()
                self._catch_up = threading.Thread(
                    target=self._catch_up_loop, args=(catch_up_interval_s,), name="lfops-serving-catch-up", daemon=True
                )
                self._catch_up.start()

    def _catch_up_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.follow_missed()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad pass (the database restarting)
                log.exception("serving: follow catch-up pass failed")

    def stop_supervisor(self) -> None:
        self._stop.set()
        self.local.stop_supervisor()
        if self._catch_up is not None:
            self._catch_up.join(10)
            self._catch_up = None

    def close(self) -> None:
        """Stop the supervision threads and close cluster clients; the deployments themselves go on serving."""
        self.stop_supervisor()
        for target in self._clusters.values():
            close = getattr(target, "close", None)
            if close is not None:
                close()

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """One change at a time per deployment in this process (the local target also locks across processes)."""
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            yield


# ---- rows and views ---------------------------------------------------------------------------------------------


def _served(mv: ModelVersion) -> ServedVersion:
    return ServedVersion(mv.id, mv.name, mv.version, mv.kind, mv.artifact_uri)


def _with_manifest(version: ServedVersion) -> ServedVersion:
    path = Path(version.artifact_uri) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LfopsError(f"model: {version.ref} has no readable {MANIFEST} ({exc})", field="model") from None
    return ServedVersion(version.id, version.name, version.version, version.kind, version.artifact_uri, manifest)


def _config_path(s: Session, mv: ModelVersion) -> str:
    """The config a version was trained from (what a following deployment follows)."""
    run = s.get(Run, mv.run_id) if mv.run_id is not None else None
    if run is None:
        raise LfopsError(
            f"follow: {mv.name}:v{mv.version} comes from no run, so there is no config to follow", field="follow"
        )
    return run.config.path


def _newest_of_config(s: Session, path: str) -> ModelVersion | None:
    """The newest version registered from a run of the config (exports are made from versions, not registered)."""
    return s.scalar(
        select(ModelVersion)
        .join(Run, ModelVersion.run_id == Run.id)
        .join(Config, Run.config_id == Config.id)
        .where(Config.path == path, ModelVersion.parent_id.is_(None))
        .order_by(ModelVersion.id.desc())
        .limit(1)
    )


def _row(s: Session, name: str) -> Deployment:
    row = s.scalar(select(Deployment).where(Deployment.name == name))
    if row is None:
        raise NotFound(f"deployment {name!r} does not exist", field="name")
    return row


def _running_row(s: Session, name: str) -> Deployment:
    row = _row(s, name)
    if row.status == DeploymentStatus.STOPPED.value:
        when = f" since {row.stopped_at:%Y-%m-%d %H:%M:%S}" if row.stopped_at else ""
        raise Conflict(f"deployment {name} is not deployed (undeployed{when})", field="name")
    return row


def _refuse_if_taken(s: Session, name: str) -> None:
    row = s.scalar(select(Deployment).where(Deployment.name == name))
    if row is not None and row.status != DeploymentStatus.STOPPED.value:
        raise Conflict(
            f"name: deployment {name} exists ({row.status} on {row.target}); undeploy it or choose another name",
            field="name",
        )


def _key_row(deployment_id: int, stored: StoredKey, label: str, actor: str) -> ApiKey:
    return ApiKey(
        deployment_id=deployment_id, key_id=stored.key_id, sha256=stored.sha256, label=label, created_by=actor
    )


def _active_keys(s: Session, deployment_id: int) -> list[StoredKey]:
    rows = s.scalars(
        select(ApiKey).where(ApiKey.deployment_id == deployment_id, ApiKey.revoked_at.is_(None)).order_by(ApiKey.id)
    )
    return [StoredKey(k.key_id, k.sha256) for k in rows]


def _key_info(k: ApiKey) -> KeyInfo:
    return KeyInfo(k.key_id, k.label, k.created_by, k.created_at, k.revoked_at)


def _ref(s: Session, version_id: int | None) -> str | None:
    if version_id is None:
        return None
    mv = s.get(ModelVersion, version_id)
    return f"{mv.name}:v{mv.version}" if mv else f"#{version_id}"


def _info(s: Session, row: Deployment) -> DeploymentInfo:
    return DeploymentInfo(
        id=row.id,
        name=row.name,
        model=_ref(s, row.model_version_id) or "",
        model_version_id=row.model_version_id,
        target=row.target,
        namespace=row.namespace,
        endpoint=row.endpoint,
        port=row.port,
        status=row.status,
        reason=row.reason,
        follows_config=row.follows_config,
        created_by=row.created_by,
        created_at=row.created_at,
        stopped_at=row.stopped_at,
    )


def _rollout_info(s: Session, r: Rollout, name: str) -> RolloutInfo:
    return RolloutInfo(
        r.id,
        name,
        _ref(s, r.from_version_id),
        _ref(s, r.to_version_id),
        r.trigger,
        r.actor,
        r.status,
        r.reason,
        r.switch_s,
        r.started_at,
        r.finished_at,
    )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]
