"""Lineage: where a model came from, and what came from a commit or a dataset version.

Every question is answered by joins over typed, indexed columns (configs.commit, configs.config_hash,
configs.dataset_version, runs.config_id, model_versions.run_id, deployments.model_version_id, reviews by change
request): never by scanning key/value rows, the way MLflow's params/tags tables force `search_runs` to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.auth import Actor, require
from backend.errors import LfopsError, NotFound
from backend.registry import ModelVersionView, Registry
from backend.registry import _view as model_view
from backend.runs import RunView, commit_filter, runs_query, view_of
from backend.store import Store
from backend.store.models import ChangeRequest, Config, Deployment, Metric, ModelVersion, Review, Run, User

_HEX_RE = re.compile(r"^[0-9a-fA-F]{7,40}$")
_DATASET_RE = re.compile(r"^sha256:[0-9a-f]{8,64}$")


@dataclass(frozen=True)
class DeploymentView:
    id: int
    model_version_id: int
    model: str
    target: str
    endpoint: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class ChangeRequestFacts:
    id: int
    title: str
    author: str
    status: str
    approvers: list[str]
    merged_by: str | None
    merged_commit: str | None
    merged_at: datetime | None


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
    deployments: list[DeploymentView]

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


def _deployments(s: Session, model_ids: list[int]) -> list[DeploymentView]:
    if not model_ids:
        return []
    rows = s.execute(
        select(Deployment, ModelVersion.name, ModelVersion.version)
        .join(ModelVersion, Deployment.model_version_id == ModelVersion.id)
        .where(Deployment.model_version_id.in_(model_ids))
        .order_by(Deployment.id)
    )
    return [
        DeploymentView(d.id, d.model_version_id, f"{name}:v{version}", d.target, d.endpoint, d.status, d.created_at)
        for d, name, version in rows
    ]


def change_request_facts(s: Session, cr_id: int | None) -> ChangeRequestFacts | None:
    if cr_id is None:
        return None
    cr = s.get(ChangeRequest, cr_id)
    if cr is None:
        return None
    approvers = s.scalars(
        select(User.name)
        .join(Review, Review.reviewer_id == User.id)
        .where(
            Review.change_request_id == cr.id,
            Review.decision == "approved",
            Review.head_commit == cr.head_commit,
        )
    )
    return ChangeRequestFacts(
        id=cr.id,
        title=cr.title,
        author=cr.author.name,
        status=cr.status,
        approvers=sorted(set(approvers)),
        merged_by=cr.merged_by.name if cr.merged_by else None,
        merged_commit=cr.merged_commit,
        merged_at=cr.merged_at,
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
            derived = [
                model_view(m)
                for m in s.scalars(
                    select(ModelVersion).where(ModelVersion.parent_id == mv.id).order_by(ModelVersion.id)
                )
            ]
            run = None
            if mv.run_id is not None:
                run = s.scalar(runs_query().where(Run.id == mv.run_id))
            cfg = run.config if run else None
            reproductions = []
            if run is not None:
                reproductions = [
                    view_of(r) for r in s.scalars(runs_query().where(Run.reproduces_run_id == run.id).order_by(Run.id))
                ]
            return ModelLineage(
                model=model_view(mv),
                ancestors=ancestors,
                derived=derived,
                run=view_of(run) if run else None,
                change_request=change_request_facts(s, cfg.change_request_id if cfg else None),
                commit=cfg.commit if cfg else "",
                config_path=cfg.path if cfg else "",
                config_hash=cfg.config_hash if cfg else "",
                dataset_version=cfg.dataset_version if cfg else "",
                base_model=cfg.base_model if cfg else "",
                base_model_revision=cfg.base_model_revision if cfg else "",
                final_loss=run.final_loss if run else None,
                final_metrics=dict(run.final_metrics or {}) if run else {},
                reproductions=reproductions,
                deployments=_deployments(s, [mv.id]),
            )

    # ---- what came from commit / dataset version Y -------------------------------------------------------------

    def from_commit(self, actor: Actor, commit: str, limit: int = 1000) -> Derived:
        require(actor, "read")
        return self._derived("commit", commit, commit_filter(Config.commit, commit), limit)

    def from_dataset_version(self, actor: Actor, version: str, limit: int = 1000) -> Derived:
        require(actor, "read")
        version = version.strip()
        if not _DATASET_RE.match(version):
            raise LfopsError(f"dataset version: {version!r} must be sha256:HEX (at least 8 hex digits)")
        if len(version) == len("sha256:") + 64:
            condition = Config.dataset_version == version
        else:  # a prefix, as a range so the index serves it
            condition = (Config.dataset_version >= version) & (Config.dataset_version < version + "g")
        return self._derived("dataset_version", version, condition, limit)

    def _derived(self, kind: str, key: str, condition: Any, limit: int) -> Derived:
        with self.store.session() as s:
            configs = [
                {
                    "commit": c.commit,
                    "path": c.path,
                    "config_hash": c.config_hash,
                    "dataset_version": c.dataset_version,
                    "change_request": c.change_request_id,
                }
                for c in s.scalars(select(Config).where(condition).order_by(Config.id).limit(limit))
            ]
            runs = list(s.scalars(runs_query().where(condition).order_by(Run.id.desc()).limit(limit)))
            run_ids = [r.id for r in runs]
            models = (
                list(
                    s.scalars(
                        select(ModelVersion)
                        .where(ModelVersion.run_id.in_(run_ids))
                        .order_by(ModelVersion.name, ModelVersion.version)
                    )
                )
                if run_ids
                else []
            )
            return Derived(
                kind=kind,
                key=key,
                configs=configs,
                runs=[view_of(r) for r in runs],
                models=[model_view(m) for m in models],
                deployments=_deployments(s, [m.id for m in models]),
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
            return [view_of(r) for r in s.scalars(q)]

    def compare(
        self, actor: Actor, run_ids: list[int], keys: tuple[str, ...] = ("loss", "eval_loss", "lr")
    ) -> RunComparison:
        """Two or more runs side by side: every hyperparameter (differences marked) and their curves as data."""
        require(actor, "read")
        ids = list(dict.fromkeys(int(i) for i in run_ids))
        if len(ids) < 2:
            raise LfopsError("runs: compare needs at least two different run ids")
        with self.store.session() as s:
            found = {r.id: r for r in s.scalars(runs_query().where(Run.id.in_(ids)))}
            missing = [i for i in ids if i not in found]
            if missing:
                raise NotFound(f"run #{missing[0]} does not exist")
            views = [view_of(found[i]) for i in ids]
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
    for dep in lineage.deployments:
        dep_id = node(f"deployment:{dep.id}", "deployment", f"{dep.target} ({dep.status})")
        edges.append({"from": model, "to": dep_id, "label": "deployed"})
    return {"nodes": nodes, "edges": edges}
