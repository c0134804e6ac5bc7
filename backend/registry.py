"""The model registry: versions of trained models under settings.registry_dir, each with a manifest.

    registry/<name>/v<N>/          the model files (a LoRA adapter, or a full model made by `export`)
    registry/<name>/v<N>/manifest.json
        sha256 and size of every file, base model and revision, config (path, commit, hash, hyperparameters),
        dataset version, change request with its approvers, run, final metrics, parent version

The database keeps the manifest's sha256, so `verify` catches a changed manifest as well as changed, missing or
extra files. A version directory appears by an atomic rename in the same transaction that records it, so a crash
leaves either both or neither. The name comes from the config's file name (`configs/sft-demo.yaml` -> `sft-demo`),
versions count up per name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend import approvals, audit, yamlio
from backend.auth import Actor, require
from backend.errors import Conflict, LfopsError, NotFound, TimedOut
from backend.runners import lfprocess
from backend.runners.base import RunState
from backend.settings import HUB_REPO_PATTERN, Settings
from backend.store import Store
from backend.store.models import ChangeRequest, ModelVersion, Run, utcnow

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "lfops-model-manifest/1"
_REF_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,199}?)(?::v?(?P<version>\d+))?$")
# Built once: statement construction costs more than the indexed lookup itself.
_BY_NAME_VERSION = select(ModelVersion).where(
    ModelVersion.name == bindparam("name"), ModelVersion.version == bindparam("version")
)
_NEWEST_BY_NAME = (
    select(ModelVersion).where(ModelVersion.name == bindparam("name")).order_by(ModelVersion.version.desc()).limit(1)
)
# Intermediate checkpoints are not part of the model (they are large and the final weights are beside them).
_SKIP_DIR_RE = re.compile(r"^checkpoint-\d+$")


@dataclass(frozen=True)
class ModelVersionView:
    id: int
    name: str
    version: int
    kind: str
    run_id: int | None
    parent_id: int | None
    artifact_uri: str
    manifest_sha256: str
    hub_repo: str
    hub_revision: str
    created_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"


@dataclass(frozen=True)
class VerifyReport:
    ref: str
    ok: bool
    files_checked: int
    problems: list[str] = field(default_factory=list)


def _view(mv: ModelVersion) -> ModelVersionView:
    return ModelVersionView(
        id=mv.id,
        name=mv.name,
        version=mv.version,
        kind=mv.kind,
        run_id=mv.run_id,
        parent_id=mv.parent_id,
        artifact_uri=mv.artifact_uri,
        manifest_sha256=mv.manifest_sha256,
        hub_repo=mv.hub_repo,
        hub_revision=mv.hub_revision,
        created_at=mv.created_at,
    )


def model_name(config_path: str) -> str:
    """`configs/sft-demo.yaml` -> `sft-demo` (config names are already restricted to safe characters)."""
    return Path(config_path).stem


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_tree(root: Path) -> dict[str, dict[str, Any]]:
    """relative path -> {sha256, size} for every file under root except the manifest itself."""
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != MANIFEST:
            files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return files


def _copy_model_files(src: Path, dst: Path) -> None:
    """The run's output without intermediate checkpoints."""
    dst.mkdir(parents=True)
    for item in sorted(src.iterdir()):
        if item.is_dir() and _SKIP_DIR_RE.match(item.name):
            continue
        if item.is_dir():
            shutil.copytree(item, dst / item.name, symlinks=False)
        elif item.is_file():
            shutil.copy2(item, dst / item.name)


class Registry:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        on_registered: Callable[[ModelVersionView], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.root = Path(settings.registry_dir)
        # called once per version a run registered (serving rolls the deployments that follow its config); never raises
        self.on_registered = on_registered or (lambda _view: None)

    # ---- reading ------------------------------------------------------------------------------------------------

    def resolve(self, s: Session, ref: str | int) -> ModelVersion:
        """`name` (its newest version), `name:vN` / `name:N`, or a model version id as an int."""
        if isinstance(ref, int):
            mv = s.get(ModelVersion, ref)
            if mv is None:
                raise NotFound(f"model version id {ref} does not exist", field="model")
            return mv
        m = _REF_RE.match(str(ref).strip())
        if not m:
            raise LfopsError(f"model: {ref!r} must be NAME or NAME:vN", field="model")
        if m.group("version"):
            mv = s.scalar(_BY_NAME_VERSION, {"name": m.group("name"), "version": int(m.group("version"))})
        else:
            mv = s.scalar(_NEWEST_BY_NAME, {"name": m.group("name")})
        if mv is None:
            raise NotFound(f"model {ref} is not in the registry", field="model")
        return mv

    def get(self, actor: Actor, ref: str | int) -> ModelVersionView:
        require(actor, "read")
        with self.store.session() as s:
            return _view(self.resolve(s, ref))

    def list(
        self, actor: Actor, name: str | None = None, limit: int | None = None, offset: int = 0
    ) -> list[ModelVersionView]:
        """By name, newest version first; `limit`/`offset` pick a page (backend.paging), None: all of them."""
        require(actor, "read")
        q = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version.desc()).limit(limit).offset(offset)
        if name:
            q = q.where(ModelVersion.name == name)
        with self.store.session() as s:
            return [_view(mv) for mv in s.scalars(q)]

    def manifest(self, actor: Actor, ref: str | int) -> dict[str, Any]:
        view = self.get(actor, ref)
        try:
            return json.loads((Path(view.artifact_uri) / MANIFEST).read_text())
        except (FileNotFoundError, ValueError) as exc:
            raise LfopsError(f"manifest: {view.ref} has no readable {MANIFEST} ({exc})") from None

    def for_run(self, run_id: int) -> ModelVersionView | None:
        """The version a run registered (not exports made from it later)."""
        with self.store.session() as s:
            mv = s.scalar(
                select(ModelVersion)
                .where(ModelVersion.run_id == run_id, ModelVersion.parent_id.is_(None))
                .order_by(ModelVersion.id)
                .limit(1)
            )
            return _view(mv) if mv else None

    # ---- verify -------------------------------------------------------------------------------------------------

    def verify(self, actor: Actor, ref: str | int) -> VerifyReport:
        """Recompute every file's sha256 and compare with the manifest, and the manifest with the database."""
        view = self.get(actor, ref)
        root = Path(view.artifact_uri)
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            return VerifyReport(view.ref, False, 0, [f"{MANIFEST}: missing from {root}"])
        problems = []
        if sha256_file(manifest_path) != view.manifest_sha256:
            problems.append(f"{MANIFEST}: changed since registration (sha256 differs from the database)")
        try:
            listed = json.loads(manifest_path.read_text()).get("files", {})
        except ValueError:
            return VerifyReport(view.ref, False, 0, [*problems, f"{MANIFEST}: not valid JSON"])
        actual = hash_tree(root)
        for rel, meta in sorted(listed.items()):
            if rel not in actual:
                problems.append(f"{rel}: missing")
            elif actual[rel]["sha256"] != meta.get("sha256"):
                problems.append(f"{rel}: sha256 differs from the manifest (the file was changed)")
        for rel in sorted(set(actual) - set(listed)):
            problems.append(f"{rel}: not in the manifest (a file was added)")
        return VerifyReport(view.ref, not problems, len(listed), problems)

    # ---- register -----------------------------------------------------------------------------------------------

    def register_run(self, run_id: int) -> ModelVersionView:
        """Register a succeeded run's output as the next version of its config's model (once per run)."""
        existing = self.for_run(run_id)
        if existing is not None:
            return existing
        with self.store.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound(f"run #{run_id} does not exist")
            if run.status != RunState.SUCCEEDED:
                raise Conflict(f"run #{run_id} is {run.status}; only succeeded runs are registered")
            out = Path(run.run_dir) if run.run_dir else None
            facts = _lineage_facts(s, run)
            name = model_name(run.config.path)
        if out is None or not out.is_dir():
            raise LfopsError(f"output: run #{run_id}'s output directory {out} is not readable here")
        kind = "adapter" if (out / "adapter_config.json").exists() else "full"
        staging = self._staging(name)
        try:
            _copy_model_files(out, staging)
            view = self._publish(name, kind, run_id, None, staging, facts, "lfops")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.on_registered(view)
        return view

    def _staging(self, name: str) -> Path:
        (self.root / name).mkdir(parents=True, exist_ok=True)
        return self.root / name / f".staging-{uuid.uuid4().hex}"

    def _publish(
        self,
        name: str,
        kind: str,
        run_id: int | None,
        parent_id: int | None,
        staging: Path,
        facts: dict[str, Any],
        actor: Actor | str,
    ) -> ModelVersionView:
        """Write the manifest, record the version and move the directory into place, all or nothing."""
        files = hash_tree(staging)
        for _attempt in range(5):  # another registration may take the same version number: take the next
            final: Path | None = None
            try:
                with self.store.session() as s:
                    latest = s.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name))
                    version = (latest or 0) + 1
                    final = self.root / name / f"v{version}"
                    if final.exists():
                        raise Conflict(f"registry: {final} exists but is not recorded; move it away first")
                    manifest = {
                        "format": MANIFEST_FORMAT,
                        "name": name,
                        "version": version,
                        "kind": kind,
                        "created_at": utcnow().isoformat(),
                        **facts,
                        "files": files,
                    }
                    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
                    mv = ModelVersion(
                        name=name,
                        version=version,
                        kind=kind,
                        run_id=run_id,
                        parent_id=parent_id,
                        artifact_uri=str(final),
                        manifest_sha256=sha256_file(staging / MANIFEST),
                    )
                    s.add(mv)
                    s.flush()
                    audit.record(
                        s,
                        actor,
                        "registry.register",
                        f"model:{name}:v{version}",
                        kind=kind,
                        run=run_id,
                        parent=parent_id,
                        manifest_sha256=mv.manifest_sha256,
                    )
                    os.rename(staging, final)
                    view = _view(mv)
                return view
            except IntegrityError:
                _move_back(final, staging)
                continue
            except BaseException:
                _move_back(final, staging)
                raise
        raise Conflict(f"registry: could not take a version number for {name}; try again")

    # ---- hub ----------------------------------------------------------------------------------------------------

    def push(
        self, actor: Actor, ref: str | int, repo_id: str | None = None, revision_format: str = "v{version}"
    ) -> ModelVersionView:
        """Upload a verified version to a Hugging Face Hub repo, the version as the revision (a branch).

        The token comes from the environment (HF_TOKEN) and goes only to huggingface_hub: never to the
        database, the audit log or a message.
        """
        require(actor, "registry.manage")
        repo_id = (repo_id or self.settings.hub_repo or "").strip()
        if not HUB_REPO_PATTERN.fullmatch(repo_id):
            raise LfopsError(f"hub repo: {repo_id!r} must be OWNER/NAME (pass one or set LFOPS_HUB_REPO)")
        token = os.environ.get("HF_TOKEN")
        if not token:
            raise LfopsError("HF_TOKEN: set it in the environment to push to a hub")
        report = self.verify(actor, ref)
        if not report.ok:
            raise Conflict(f"{report.ref} fails verification, not pushing: {report.problems[0]}")
        view = self.get(actor, ref)
        revision = revision_format.format(version=view.version, name=view.name)
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, repo_type="model", private=True, exist_ok=True)
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
            api.upload_folder(
                repo_id=repo_id,
                folder_path=view.artifact_uri,
                revision=revision,
                repo_type="model",
                commit_message=f"{view.ref} from lfops (manifest sha256 {view.manifest_sha256[:12]})",
            )
        except Exception as exc:  # noqa: BLE001 - network, auth, hub errors: one line, never the token
            message = str(exc).replace(token, "***").strip().splitlines()
            raise LfopsError(f"hub push of {view.ref} to {repo_id} failed: {message[0] if message else exc}") from None
        with self.store.session() as s:
            mv = s.get(ModelVersion, view.id)
            mv.hub_repo, mv.hub_revision = repo_id, revision
            audit.record(s, actor, "registry.push", f"model:{view.ref}", hub_repo=repo_id, revision=revision)
            return _view(mv)

    # ---- export -------------------------------------------------------------------------------------------------

    def export(self, actor: Actor, ref: str | int, timeout_s: float = 1800) -> ModelVersionView:
        """Merge a LoRA adapter version into its base model (`llamafactory-cli export`) as a new full version."""
        require(actor, "registry.manage")
        parent = self.get(actor, ref)
        if parent.kind != "adapter":
            raise Conflict(f"{parent.ref} is a {parent.kind} model; only adapters are merged into their base")
        report = self.verify(actor, parent.id)
        if not report.ok:
            raise Conflict(f"{parent.ref} fails verification, not exporting: {report.problems[0]}")
        parent_manifest = self.manifest(actor, parent.id)
        params = parent_manifest.get("config", {}).get("params", {})
        staging = self._staging(parent.name)
        args = {
            "model_name_or_path": parent_manifest.get("base_model"),
            "adapter_name_or_path": parent.artifact_uri,
            "template": params.get("template", "default"),
            "finetuning_type": params.get("finetuning_type", "lora"),
            "trust_remote_code": bool(params.get("trust_remote_code", False)),
            "export_dir": str(staging),
            "export_size": 5,
            "export_device": "cpu",
            "export_legacy_format": False,
        }
        try:
            with tempfile.TemporaryDirectory(prefix="lfops-export-") as tmp:
                yaml_path = Path(tmp) / "export.yaml"
                yaml_path.write_text(yamlio.dump(args))
                log_path = Path(tmp) / "export.log"
                try:
                    code = lfprocess.run("export", yaml_path, cwd=Path(tmp), log_path=log_path, timeout_s=timeout_s)
                except TimedOut:
                    raise TimedOut(f"export of {parent.ref} took longer than {timeout_s:g} s") from None
                if code != 0 or not (staging / "config.json").exists():
                    raise LfopsError(f"export of {parent.ref} failed: {lfprocess.failure_reason(log_path, code)}")
            facts = {
                k: v
                for k, v in parent_manifest.items()
                if k not in ("format", "name", "version", "kind", "files", "created_at")
            }
            facts["parent"] = {
                "name": parent.name,
                "version": parent.version,
                "kind": parent.kind,
                "manifest_sha256": parent.manifest_sha256,
            }
            facts["export"] = {"tool": "llamafactory-cli export", "args": {**args, "export_dir": "."}}
            return self._publish(parent.name, "full", parent.run_id, parent.id, staging, facts, actor)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _move_back(final: Path | None, staging: Path) -> None:
    if final is not None and final.exists() and not staging.exists():
        os.rename(final, staging)


def _lineage_facts(s: Session, run: Run) -> dict[str, Any]:
    """What the manifest says about where a run's model came from (the same facts lineage queries return)."""
    cfg = run.config
    cr = s.get(ChangeRequest, cfg.change_request_id) if cfg.change_request_id else None
    approvers: list[str] = []
    change_request = None
    if cr is not None:
        approvers = approvals.approver_lines(s, cr.id)
        change_request = {
            "id": cr.id,
            "title": cr.title,
            "author": cr.author.name,
            "merged_by": cr.merged_by.name if cr.merged_by else None,
            "merged_commit": cr.merged_commit,
            "approvers": approvers,
        }
    return {
        "base_model": cfg.base_model,
        "base_model_revision": cfg.base_model_revision,
        "config": {
            "path": cfg.path,
            "commit": cfg.commit,
            "config_hash": cfg.config_hash,
            "params": cfg.params,
        },
        "commit": cfg.commit,
        "config_hash": cfg.config_hash,
        "dataset_version": cfg.dataset_version,
        "change_request": change_request,
        "approvers": approvers,
        "run": {
            "id": run.id,
            "backend": run.backend,
            "submitted_by": run.submitted_by.name,
            "override_reason": run.override_reason,
            "reproduces_run": run.reproduces_run_id,
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        },
        "final_loss": run.final_loss,
        "metrics": run.final_metrics,
        "parent": None,
    }
