"""Lineage: where a model came from, and what came from a commit or a dataset version.

Every question is answered by joins over typed, indexed columns (configs.commit, configs.config_hash,
configs.dataset_version, runs.config_id, model_versions.run_id, deployments.model_version_id,
rollouts.to_version_id, reviews by change request): never by scanning key/value rows, the way MLflow's params/tags
tables force `search_runs` to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, false, func, select
from sqlalchemy.orm import Session, aliased

from backend import approvals
from backend.auth import Actor, require
from backend.errors import LfopsError, NotFound
from backend.registry import ModelVersionView, Registry
from backend.registry import _view as model_view
from backend.review_status import ChangeRequestStatus
from backend.runs import RunView, commit_filter, custom_plans, run_views, runs_query
from backend.runs.queries import id_in_range
from backend.store import Store
from backend.store.models import (
    ChangeRequest,
    Config,
    Deployment,
    Metric,
    ModelVersion,
    RetrainRequest,
    RetrainSignalRecord,
    Review,
    Rollout,
    Run,
    User,
)

_HEX_RE = re.compile(r"^[0-9a-fA-F]{7,40}$")
_DATASET_RE = re.compile(r"^sha256:[0-9a-f]{8,64}$")


@dataclass(frozen=True)
class DeploymentView:
    """A deployment and one version it serves or served (`model`)."""

    id: int
    model_version_id: int
    model: str
    target: str
    endpoint: str
    status: str
    created_at: datetime
    name: str = ""


@dataclass(frozen=True)
class ServedPeriod:
    """A time a model version was served by a deployment: from the rollout to it until the next switch."""

    deployment: str
    target: str
    endpoint: str
    since: datetime
    until: datetime | None  # None: still served
    trigger: str  # deploy | manual | follow: how it came to be served
    actor: str
    deployment_status: str

    @property
    def current(self) -> bool:
        return self.until is None and self.deployment_status != "stopped"


@dataclass(frozen=True)
class ChangeRequestFacts:
    id: int
    title: str
    author: str
    status: ChangeRequestStatus
    approvers: list[str]
    merged_by: str | None
    merged_commit: str | None
    merged_at: datetime | None


@dataclass(frozen=True)
class RetrainCause:
    """Why a retrain change request was opened: the signal that opened it (backend.retrain)."""

    kind: str  # drift | dataset
    evidence_ref: str
    deployment: str
    from_model: str  # NAME:vN the signal was about
    observed_at: datetime
    change_request: int
    datasets: str = ""  # the config's datasets, for "because dataset X changed"

    def sentence(self, model: str) -> str:
        """`model v2 was trained because v1 drifted on <date>` / `... because dataset X changed`."""
        when = f"{self.observed_at:%Y-%m-%d}"
        if self.kind == "drift":
            why = f"{self.from_model} drifted on {when} (deployment {self.deployment or '-'})"
        else:
            why = f"dataset {self.datasets or '?'} changed (seen {when}, {self.from_model} was trained on the old one)"
        return f"{model} was trained because {why}; evidence {self.evidence_ref}, change request #{self.change_request}"


@dataclass(frozen=True)
class ModelLineage:
    """Where one model version came from."""

    model: ModelVersionView
    ancestors: list[ModelVersionView]  # parent first (an export's adapter), then its parent...
    derived: list[ModelVersionView]  # versions made from this one (exports)
    run: RunView | None
    change_request: ChangeRequestFacts | None
    commit: str
    config_path: str
    config_hash: str
    dataset_version: str
    base_model: str
    base_model_revision: str
    final_loss: float | None
    final_metrics: dict[str, float]
    reproductions: list[RunView]  # later runs that relaunched this model's run
    deployments: list[DeploymentView]  # deployments whose current (or, stopped, last) version this is
    served: list[ServedPeriod] = field(default_factory=list)  # where and when it is and was served, oldest first
    retrain: RetrainCause | None = None  # its change request was a retrain request: the signal behind it

    @property
    def because(self) -> str:
        return self.retrain.sentence(self.model.ref) if self.retrain else ""

    @property
    def approvers(self) -> list[str]:
        return self.change_request.approvers if self.change_request else []


@dataclass(frozen=True)
class Derived:
    """Everything that came from one commit or one dataset version."""

    kind: str  # commit | dataset_version
    key: str
    configs: list[dict[str, Any]]
    runs: list[RunView]
    models: list[ModelVersionView]
    deployments: list[DeploymentView]
    # configs and runs are one page of each ([offset, offset + limit)); models and deployments are those of the
    # page's runs. True when configs or runs go on past the page.
    has_more: bool = False


@dataclass(frozen=True)
class ParamDiff:
    key: str
    values: list[Any]  # one per run, in the order of RunComparison.runs (None: not set)

    @property
    def differs(self) -> bool:
        return any(v != self.values[0] for v in self.values[1:])


@dataclass(frozen=True)
class RunComparison:
    runs: list[RunView]
    params: list[ParamDiff]  # every key; `differs` marks the hyperparameter diff
    curves: dict[int, dict[str, list[tuple[int, float]]]]  # run id -> key -> [(step, value)]
    final_metrics: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def differing(self) -> list[ParamDiff]:
        return [p for p in self.params if p.differs]


_DEPLOYMENT_COLUMNS = (
    Deployment.id,
    ModelVersion.id,
    ModelVersion.name,
    ModelVersion.version,
    Deployment.target,
    Deployment.endpoint,
    Deployment.status,
    Deployment.created_at,
    Deployment.name,
)
_DEPLOYMENTS = select(*_DEPLOYMENT_COLUMNS).join(ModelVersion, Deployment.model_version_id == ModelVersion.id)
_DEPLOYMENTS_OF_ONE = _DEPLOYMENTS.where(Deployment.model_version_id == bindparam("mv_id")).order_by(Deployment.id)
# Deployments with every version they served (a succeeded rollout to it), for "what came from commit / dataset Y".
_SERVED_BY = (
    select(*_DEPLOYMENT_COLUMNS)
    .join(Rollout, Rollout.deployment_id == Deployment.id)
    .join(ModelVersion, Rollout.to_version_id == ModelVersion.id)
    .where(Rollout.status == "succeeded")
)


def _deployment_views(rows: Any) -> list[DeploymentView]:
    seen: dict[tuple[int, int], DeploymentView] = {}
    for dep_id, mv_id, name, version, target, endpoint, status, created_at, dep_name in rows:
        seen.setdefault(
            (dep_id, mv_id),
            DeploymentView(dep_id, mv_id, f"{name}:v{version}", target, endpoint, status, created_at, dep_name),
        )
    return [seen[k] for k in sorted(seen)]


def _served_query() -> Any:
    """Each succeeded rollout to one version, with the time the deployment next switched (or None)."""
    later = aliased(Rollout)
    until = (
        select(func.min(later.finished_at))
        .where(later.deployment_id == Rollout.deployment_id, later.id > Rollout.id, later.status == "succeeded")
        .scalar_subquery()
    )
    return (
        select(
            Deployment.name,
            Deployment.target,
            Deployment.endpoint,
            Rollout.finished_at,
            until,
            Rollout.trigger,
            Rollout.actor,
            Deployment.status,
        )
        .join(Deployment, Rollout.deployment_id == Deployment.id)
        .where(Rollout.to_version_id == bindparam("mv_id"), Rollout.status == "succeeded")
        .order_by(Rollout.finished_at, Rollout.id)
    )


_SERVED = _served_query()


_MODEL_COLUMNS = (
    ModelVersion.id,
    ModelVersion.name,
    ModelVersion.version,
    ModelVersion.kind,
    ModelVersion.run_id,
    ModelVersion.parent_id,
    ModelVersion.artifact_uri,
    ModelVersion.manifest_sha256,
    ModelVersion.hub_repo,
    ModelVersion.hub_revision,
    ModelVersion.created_at,
)


_CHILDREN = select(*_MODEL_COLUMNS).where(ModelVersion.parent_id == bindparam("mv_id")).order_by(ModelVersion.id)
_RUN_BY_ID = runs_query().where(Run.id == bindparam("run_id"))
_REPRODUCTIONS = runs_query().where(Run.reproduces_run_id == bindparam("run_id")).order_by(Run.id)


def model_views(s: Session, runs_condition: Any) -> list[ModelVersionView]:
    """Model versions (registered and exported) of the runs whose run/config columns meet a condition."""
    q = (
        select(*_MODEL_COLUMNS)
        .join(Run, ModelVersion.run_id == Run.id)
        .join(Config, Run.config_id == Config.id)
        .where(runs_condition)
        .order_by(ModelVersion.name, ModelVersion.version)
    )
    return [ModelVersionView(*row) for row in s.connection().execute(q).all()]


def _change_request_query() -> Any:
    author, merger, approver = aliased(User), aliased(User), aliased(User)
    return (
        select(
            ChangeRequest.id,
            ChangeRequest.title,
            author.name,
            ChangeRequest.status,
            merger.name,
            ChangeRequest.merged_commit,
            ChangeRequest.merged_at,
            approver.name,
        )
        .join(author, author.id == ChangeRequest.author_id)
        .outerjoin(merger, merger.id == ChangeRequest.merged_by_id)
        .outerjoin(Review, approvals.condition(Review, ChangeRequest))
        .outerjoin(approver, approver.id == Review.reviewer_id)
        .where(ChangeRequest.id == bindparam("cr_id"))
    )


_CHANGE_REQUEST = _change_request_query()


def change_request_facts(s: Session, cr_id: int | None) -> ChangeRequestFacts | None:
    """A change request with its author, merger and the approvers that count (backend.approvals), in one query."""
    if cr_id is None:
        return None
    rows = s.execute(_CHANGE_REQUEST, {"cr_id": cr_id}).all()
    if not rows:
        return None
    first = rows[0]
    return ChangeRequestFacts(
        id=first[0],
        title=first[1],
        author=first[2],
        status=ChangeRequestStatus(first[3]),
        approvers=sorted({row[7] for row in rows if row[7]}),
        merged_by=first[4],
        merged_commit=first[5],
        merged_at=first[6],
    )


_RETRAIN_CAUSE = (
    select(
        RetrainSignalRecord.kind,
        RetrainSignalRecord.evidence_ref,
        RetrainSignalRecord.deployment,
        ModelVersion.name,
        ModelVersion.version,
        RetrainSignalRecord.observed_at,
        RetrainRequest.change_request_id,
    )
    .join(RetrainRequest, RetrainSignalRecord.request_id == RetrainRequest.id)
    .outerjoin(ModelVersion, RetrainSignalRecord.model_version_id == ModelVersion.id)
    .where(RetrainRequest.change_request_id == bindparam("cr_id"), RetrainSignalRecord.outcome == "opened")
    .order_by(RetrainSignalRecord.id)
    .limit(1)
)


def _retrain_cause(s: Session, run: RunView | None) -> RetrainCause | None:
    """The signal that opened the retrain request this run's change request is (None: people opened it)."""
    if run is None or run.change_request_id is None:
        return None
    row = s.execute(_RETRAIN_CAUSE, {"cr_id": run.change_request_id}).first()
    if row is None:
        return None
    kind, ref, deployment, name, version, observed_at, cr = row
    datasets = run.params.get("dataset", "")
    return RetrainCause(
        kind,
        ref,
        deployment,
        f"{name}:v{version}" if name else "-",
        observed_at,
        cr,
        ",".join(datasets) if isinstance(datasets, list) else str(datasets),
    )


class Lineage:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    # ---- where did model X come from ---------------------------------------------------------------------------

    def of_model(self, actor: Actor, ref: str | int) -> ModelLineage:
        require(actor, "read")
        with self.store.session() as s:
            mv = self.registry.resolve(s, ref)
            ancestors = []
            parent_id = mv.parent_id
            while parent_id is not None and len(ancestors) < 100:
                parent = s.get(ModelVersion, parent_id)
                if parent is None:
                    break
                ancestors.append(model_view(parent))
                parent_id = parent.parent_id
            derived = [ModelVersionView(*row) for row in s.execute(_CHILDREN, {"mv_id": mv.id})]
            runs = run_views(s, _RUN_BY_ID, {"run_id": mv.run_id}) if mv.run_id is not None else []
            run = runs[0] if runs else None
            reproductions = run_views(s, _REPRODUCTIONS, {"run_id": run.id}) if run is not None else []
            return ModelLineage(
                model=model_view(mv),
                ancestors=ancestors,
                derived=derived,
                run=run,
                change_request=change_request_facts(s, run.change_request_id if run else None),
                commit=run.commit if run else "",
                config_path=run.config_path if run else "",
                config_hash=run.config_hash if run else "",
                dataset_version=run.dataset_version if run else "",
                base_model=run.base_model if run else "",
                base_model_revision=run.base_model_revision if run else "",
                final_loss=run.final_loss if run else None,
                final_metrics=dict(run.final_metrics) if run else {},
                reproductions=reproductions,
                deployments=_deployment_views(s.execute(_DEPLOYMENTS_OF_ONE, {"mv_id": mv.id})),
                served=[ServedPeriod(*row) for row in s.execute(_SERVED, {"mv_id": mv.id})],
                retrain=_retrain_cause(s, run),
            )

    # ---- what came from commit / dataset version Y -------------------------------------------------------------

    def from_commit(self, actor: Actor, commit: str, limit: int = 1000, offset: int = 0) -> Derived:
        require(actor, "read")
        return self._derived("commit", commit, commit_filter(Config.commit, commit), limit, offset)

    def from_dataset_version(self, actor: Actor, version: str, limit: int = 1000, offset: int = 0) -> Derived:
        require(actor, "read")
        version = version.strip()
        if not _DATASET_RE.match(version):
            raise LfopsError(f"dataset version: {version!r} must be sha256:HEX (at least 8 hex digits)")
        if len(version) == len("sha256:") + 64:
            condition = Config.dataset_version == version
        else:  # a prefix, as a range so the index serves it
            condition = (Config.dataset_version >= version) & (Config.dataset_version < version + "g")
        return self._derived("dataset_version", version, condition, limit, offset)

    def _derived(self, kind: str, key: str, condition: Any, limit: int, offset: int = 0) -> Derived:
        with self.store.session() as s:
            custom_plans(s)
            columns = (Config.commit, Config.path, Config.config_hash, Config.dataset_version, Config.change_request_id)
            configs = [
                dict(zip(("commit", "path", "config_hash", "dataset_version", "change_request"), row, strict=True))
                for row in s.execute(
                    select(*columns).where(condition).order_by(Config.id).limit(limit + 1).offset(offset)
                )
            ]
            runs = run_views(s, runs_query().where(condition).order_by(Run.id.desc()).limit(limit + 1).offset(offset))
            has_more = len(configs) > limit or len(runs) > limit  # one row more than the page was asked for
            configs, runs = configs[:limit], runs[:limit]
            # Models and deployments of exactly those runs, by joins from the same indexed condition (no list of a
            # thousand ids sent back); when the page cut the runs, its newest and oldest runs bound the rest.
            if not runs:
                of_runs = false()
            elif has_more or offset:
                of_runs = and_(condition, Run.id >= runs[-1].id, Run.id <= runs[0].id)
            else:
                of_runs = condition
            models = model_views(s, of_runs)
            # what serves those models now, and every deployment that served one of them (rollouts)
            deployments = _deployment_views(
                [
                    *s.connection().execute(
                        _DEPLOYMENTS.join(Run, ModelVersion.run_id == Run.id)
                        .join(Config, Run.config_id == Config.id)
                        .where(of_runs)
                    ),
                    *s.connection().execute(
                        _SERVED_BY.join(Run, ModelVersion.run_id == Run.id)
                        .join(Config, Run.config_id == Config.id)
                        .where(of_runs)
                    ),
                ]
            )
            return Derived(
                kind=kind,
                key=key,
                configs=configs,
                runs=runs,
                models=models,
                deployments=deployments,
                has_more=has_more,
            )

    def lookup(self, actor: Actor, term: str) -> ModelLineage | Derived:
        """`lfops lineage X`: a dataset version (sha256:...), a model (NAME[:vN]) or a commit (hex)."""
        term = (term or "").strip()
        if term.startswith("sha256:"):
            return self.from_dataset_version(actor, term)
        try:
            return self.of_model(actor, term)
        except (NotFound, LfopsError):
            if not _HEX_RE.match(term):
                raise
        derived = self.from_commit(actor, term)
        if not derived.configs:
            raise NotFound(f"{term}: no model, commit or dataset version by that name is known")
        return derived

    # ---- runs of one config, comparisons ------------------------------------------------------------------------

    def runs_of_config(
        self, actor: Actor, config_hash: str, status: str | None = "succeeded", limit: int = 100
    ) -> list[RunView]:
        """Runs of one config (by config hash), best final loss first (served by ix_runs_config_status_loss)."""
        require(actor, "read")
        # The config ids first (few), so the planner walks ix_runs_config_status_loss rather than every run by status.
        config_ids = select(Config.id).where(Config.config_hash == config_hash).scalar_subquery()
        q = runs_query().where(Run.config_id.in_(config_ids))
        if status:
            q = q.where(Run.status == status)
        q = q.order_by(Run.final_loss.is_(None), Run.final_loss, Run.id).limit(limit)
        with self.store.session() as s:
            custom_plans(s)
            return run_views(s, q)

    def compare(
        self, actor: Actor, run_ids: list[int], keys: tuple[str, ...] = ("loss", "eval_loss", "lr")
    ) -> RunComparison:
        """Two or more runs side by side: every hyperparameter (differences marked) and their curves as data."""
        require(actor, "read")
        ids = list(dict.fromkeys(int(i) for i in run_ids))
        if len(ids) < 2:
            raise LfopsError("runs: compare needs at least two different run ids")
        with self.store.session() as s:
            in_range = [i for i in ids if id_in_range(i)]  # a number beyond the id column names no run
            found = {r.id: r for r in run_views(s, runs_query().where(Run.id.in_(in_range)))}
            missing = [i for i in ids if i not in found]
            if missing:
                raise NotFound(f"run #{missing[0]} does not exist")
            views = [found[i] for i in ids]
            curves: dict[int, dict[str, list[tuple[int, float]]]] = {i: {k: [] for k in keys} for i in ids}
            rows = s.execute(
                select(Metric.run_id, Metric.key, Metric.step, Metric.value)
                .where(Metric.run_id.in_(ids), Metric.key.in_(keys))
                .order_by(Metric.run_id, Metric.key, Metric.step)
            )
            for run_id, key, step, value in rows:
                curves[run_id][key].append((step, value))
        all_keys: list[str] = []
        for view in views:
            all_keys += [k for k in view.params if k not in all_keys]
        params = [ParamDiff(k, [v.params.get(k) for v in views]) for k in all_keys]
        return RunComparison(views, params, curves, {v.id: v.final_metrics for v in views})


def graph(lineage: ModelLineage) -> dict[str, list[dict[str, str]]]:
    """Nodes and edges of one model's lineage, for the WebUI to draw: data -> config -> review -> run -> model."""
    nodes: list[dict[str, str]] = []
    edges: list[dict[str, str]] = []

    def node(node_id: str, kind: str, label: str) -> str:
        if not any(n["id"] == node_id for n in nodes):
            nodes.append({"id": node_id, "kind": kind, "label": label})
        return node_id

    model = node(f"model:{lineage.model.ref}", "model", f"{lineage.model.ref} ({lineage.model.kind})")
    if lineage.run is not None:
        dataset = node(f"dataset:{lineage.dataset_version}", "dataset", f"dataset {lineage.dataset_version[:19]}")
        base = node(f"base:{lineage.base_model}", "base_model", f"{lineage.base_model} @ {lineage.base_model_revision}")
        config = node(f"commit:{lineage.commit}", "commit", f"{lineage.config_path} @ {lineage.commit[:12]}")
        run = node(f"run:{lineage.run.id}", "run", f"run #{lineage.run.id} ({lineage.run.status})")
        edges += [
            {"from": dataset, "to": config, "label": "data"},
            {"from": base, "to": run, "label": "base model"},
            {"from": config, "to": run, "label": "trained"},
        ]
        if lineage.change_request is not None:
            cr = lineage.change_request
            review = node(
                f"cr:{cr.id}", "change_request", f"#{cr.id} {cr.title} (approved by {', '.join(cr.approvers) or '-'})"
            )
            edges.append({"from": review, "to": config, "label": "merged"})
            if lineage.retrain is not None:
                cause = lineage.retrain
                label = f"{cause.kind} signal {cause.evidence_ref} ({cause.observed_at:%Y-%m-%d})"
                signal = node(f"signal:{cause.evidence_ref}", "retrain_signal", label)
                edges.append({"from": signal, "to": review, "label": "opened"})
                if cause.from_model != "-":
                    edges.append({"from": f"model:{cause.from_model}", "to": signal, "label": cause.kind})
        top = lineage.ancestors[-1].ref if lineage.ancestors else lineage.model.ref
        edges.append({"from": run, "to": f"model:{top}", "label": "registered"})
    child = model
    for parent in lineage.ancestors:
        pid = node(f"model:{parent.ref}", "model", f"{parent.ref} ({parent.kind})")
        edges.append({"from": pid, "to": child, "label": "export"})
        child = pid
    for d in lineage.derived:
        did = node(f"model:{d.ref}", "model", f"{d.ref} ({d.kind})")
        edges.append({"from": model, "to": did, "label": "export"})
    served = set()
    for period in lineage.served:
        until = f" until {period.until:%Y-%m-%d %H:%M}" if period.until else ""
        dep_id = node(
            f"deployment:{period.deployment}",
            "deployment",
            f"{period.deployment} on {period.target} (since {period.since:%Y-%m-%d %H:%M}{until})",
        )
        served.add(dep_id)
        edges.append({"from": model, "to": dep_id, "label": "serving" if period.current else "was served"})
    for dep in lineage.deployments:  # rows without rollouts (made before lfops wrote them)
        dep_id = node(f"deployment:{dep.name or dep.id}", "deployment", f"{dep.name or dep.target} on {dep.target}")
        if dep_id not in served:
            edges.append({"from": model, "to": dep_id, "label": "deployed"})
    return {"nodes": nodes, "edges": edges}
