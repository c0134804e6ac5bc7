"""The model registry on the shared trained run: manifest, verify and tampering, export (LoRA merge), hub push."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from backend.cli import main as lfops
from backend.errors import Conflict, LfopsError, NotFound, PermissionDenied
from backend.registry import MANIFEST
from backend.store.models import AuditEvent, ModelVersion, Run
from tests.runs_fixtures import trained_run
from tests.snapshots import db_state

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(template_workspace, tmp_path_factory):
    return trained_run(template_workspace, tmp_path_factory)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_succeeded_run_is_registered_with_a_complete_manifest(trained):
    ws, alice = trained.env.ws, trained.env.actor("alice")
    assert trained.model == "tiny-sft:v1"
    view = ws.registry.get(alice, trained.model)
    assert (view.kind, view.run_id, view.parent_id) == ("adapter", trained.run_id, None)
    root = Path(view.artifact_uri)
    assert root == ws.settings.registry_dir / "tiny-sft" / "v1"
    manifest = json.loads((root / MANIFEST).read_text())
    assert _sha(root / MANIFEST) == view.manifest_sha256
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    assert sorted(manifest["files"]) == on_disk
    assert "adapter_model.safetensors" in on_disk and not any(p.startswith("checkpoint-") for p in on_disk)
    for rel, meta in manifest["files"].items():
        assert meta == {"sha256": _sha(root / rel), "size": (root / rel).stat().st_size}
    run = ws.runs.get(alice, trained.run_id)
    assert manifest["commit"] == trained.commit == manifest["config"]["commit"]
    assert manifest["config_hash"] == run.config_hash and manifest["dataset_version"] == run.dataset_version
    assert manifest["base_model"] == run.base_model and manifest["base_model_revision"].startswith("local:")
    assert manifest["approvers"] == ["rita <rita@lfops.local>"]
    assert manifest["change_request"]["id"] == trained.cr and manifest["change_request"]["author"] == "alice"
    assert manifest["metrics"]["train_loss"] == run.final_loss == manifest["final_loss"]
    assert manifest["config"]["params"]["per_device_train_batch_size"] == 4
    assert manifest["run"]["id"] == trained.run_id and manifest["run"]["submitted_by"] == "alice"


def test_registering_a_run_twice_gives_the_same_version(trained):
    ws = trained.env.ws
    again = ws.registry.register_run(trained.run_id)
    assert again.ref == trained.model
    with ws.store.session() as s:
        assert (
            len(
                s.scalars(
                    select(ModelVersion).where(ModelVersion.run_id == trained.run_id, ModelVersion.parent_id.is_(None))
                ).all()
            )
            == 1
        )


def test_only_succeeded_runs_are_registered(trained):
    ws = trained.env.ws
    with ws.store.session() as s:
        original = s.get(Run, trained.run_id)
        failed = Run(
            config_id=original.config_id, backend="local", status="failed", submitted_by_id=original.submitted_by_id
        )
        s.add(failed)
        s.flush()
        failed_id = failed.id
    before = db_state(ws.store)
    with pytest.raises(Conflict, match=f"run #{failed_id} is failed; only succeeded runs are registered"):
        ws.registry.register_run(failed_id)
    assert db_state(ws.store) == before


def test_verify_detects_changed_missing_added_files_and_a_changed_manifest(trained, capsys, monkeypatch):
    ws, alice = trained.env.ws, trained.env.actor("alice")
    root = Path(ws.registry.get(alice, trained.model).artifact_uri)
    assert ws.registry.verify(alice, trained.model).ok

    weights = root / "adapter_model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit flipped
    try:
        report = ws.registry.verify(alice, trained.model)
        assert not report.ok
        assert report.problems == ["adapter_model.safetensors: sha256 differs from the manifest (the file was changed)"]
        monkeypatch.setenv("LFOPS_PASSWORD", trained.env.passwords["alice"])
        code = lfops(
            ["--workspace", str(ws.settings.workspace), "--user", "alice", "registry", "verify", trained.model]
        )
        assert code == 1 and "tiny-sft:v1: FAILED" in capsys.readouterr().out
    finally:
        weights.write_bytes(original)

    moved = root.parent / "moved-away"
    shutil.move(root / "adapter_config.json", moved)
    (root / "extra.bin").write_bytes(b"x")
    try:
        problems = ws.registry.verify(alice, trained.model).problems
        assert problems == ["adapter_config.json: missing", "extra.bin: not in the manifest (a file was added)"]
    finally:
        shutil.move(moved, root / "adapter_config.json")
        (root / "extra.bin").unlink()

    manifest_path = root / MANIFEST
    text = manifest_path.read_text()
    manifest_path.write_text(text.replace('"approvers": [\n  "rita', '"approvers": [\n  "mallory'))
    try:
        assert ws.registry.verify(alice, trained.model).problems == [
            "manifest.json: changed since registration (sha256 differs from the database)"
        ]
    finally:
        manifest_path.write_text(text)
    assert ws.registry.verify(alice, trained.model).ok


@pytest.mark.parametrize(
    ("ref", "error", "message"),
    [
        ("no-such-model", NotFound, "model no-such-model is not in the registry"),
        ("tiny-sft:v99", NotFound, "model tiny-sft:v99 is not in the registry"),
        ("../etc:v1", LfopsError, "model: '../etc:v1' must be NAME or NAME:vN"),
    ],
)
def test_bad_model_refs_are_named(trained, ref, error, message):
    with pytest.raises(error, match=message):
        trained.env.ws.registry.get(trained.env.actor("alice"), ref)


class _RecordingHub:
    """Stands in for huggingface_hub.HfApi (no hub is reachable from the tests): records the calls it gets."""

    calls: list = []
    fail_with: Exception | None = None

    def __init__(self, token=None):
        type(self).calls.append(("init", token))

    def create_repo(self, repo_id, **kwargs):
        type(self).calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        type(self).calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        if type(self).fail_with is not None:
            raise type(self).fail_with
        type(self).calls.append(("upload_folder", kwargs))


def test_push_to_mock_hub_uses_the_version_as_revision_and_never_stores_the_token(trained, monkeypatch):
    import huggingface_hub

    ws = trained.env.ws
    admin, alice = trained.env.actor("admin"), trained.env.actor("alice")
    monkeypatch.setattr(huggingface_hub, "HfApi", _RecordingHub)
    _RecordingHub.calls = []
    token = "hf_secret_token_0123456789"

    monkeypatch.delenv("HF_TOKEN", raising=False)
    before = db_state(ws.store)
    with pytest.raises(LfopsError, match="HF_TOKEN: set it in the environment"):
        ws.registry.push(admin, trained.model, repo_id="team/tiny-sft")
    monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(PermissionDenied, match=r"alice \(analyst\) may not manage the model registry"):
        ws.registry.push(alice, trained.model, repo_id="team/tiny-sft")
    with pytest.raises(LfopsError, match="hub repo: 'not a repo' must be OWNER/NAME"):
        ws.registry.push(admin, trained.model, repo_id="not a repo")
    _RecordingHub.fail_with = RuntimeError(f"401 Unauthorized for token {token}")
    try:
        with pytest.raises(LfopsError, match=r"hub push of tiny-sft:v1 to team/tiny-sft failed: 401") as exc:
            ws.registry.push(admin, trained.model, repo_id="team/tiny-sft")
        assert token not in str(exc.value)
    finally:
        _RecordingHub.fail_with = None
    assert db_state(ws.store) == before
    _RecordingHub.calls = []

    view = ws.registry.push(admin, trained.model, repo_id="team/tiny-sft")
    assert (view.hub_repo, view.hub_revision) == ("team/tiny-sft", "v1")
    init, create_repo, create_branch, upload = _RecordingHub.calls
    assert init == ("init", token)
    assert create_repo[1] == "team/tiny-sft" and create_branch[2]["branch"] == "v1"
    assert upload[1]["revision"] == "v1" and upload[1]["folder_path"] == view.artifact_uri
    assert token not in repr(db_state(ws.store))
    with ws.store.session() as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "registry.push"))
        assert event.actor == "admin" and event.detail == {"hub_repo": "team/tiny-sft", "revision": "v1"}


def test_export_merges_the_adapter_into_a_full_version_whose_parent_is_the_adapter(trained):
    ws = trained.env.ws
    admin, alice = trained.env.actor("admin"), trained.env.actor("alice")
    with pytest.raises(PermissionDenied, match="may not manage the model registry"):
        ws.registry.export(alice, trained.model)
    adapter = ws.registry.get(alice, trained.model)
    full = ws.registry.export(admin, trained.model)
    assert (full.name, full.kind, full.parent_id, full.run_id) == ("tiny-sft", "full", adapter.id, trained.run_id)
    assert full.version > adapter.version
    root = Path(full.artifact_uri)
    assert (root / "config.json").exists() and list(root.glob("*.safetensors"))
    assert not list(root.glob("adapter_*"))
    assert ws.registry.verify(alice, full.ref).ok
    manifest = ws.registry.manifest(alice, full.ref)
    assert manifest["parent"] == {
        "name": "tiny-sft",
        "version": adapter.version,
        "kind": "adapter",
        "manifest_sha256": adapter.manifest_sha256,
    }
    assert manifest["approvers"] == ["rita <rita@lfops.local>"] and manifest["commit"] == trained.commit
    assert manifest["export"]["tool"] == "llamafactory-cli export"

    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(root)  # a plain model now: no PEFT needed to load it
    assert merged.config.num_hidden_layers == 2
    with pytest.raises(Conflict, match=f"{full.ref} is a full model; only adapters are merged"):
        ws.registry.export(admin, full.ref)
    lineage = ws.lineage.of_model(alice, full.ref)
    assert [a.ref for a in lineage.ancestors] == [trained.model]
    assert lineage.approvers == ["rita"] and lineage.run.id == trained.run_id


def test_cli_registry_list_and_show(trained, capsys, monkeypatch):
    ws = trained.env.ws
    monkeypatch.setenv("LFOPS_PASSWORD", trained.env.passwords["alice"])
    base = ["--workspace", str(ws.settings.workspace), "--user", "alice"]
    assert lfops([*base, "registry", "list", "tiny-sft"]) == 0
    assert "tiny-sft:v1" in capsys.readouterr().out
    assert lfops([*base, "registry", "show", trained.model]) == 0
    out = capsys.readouterr().out
    assert '"dataset_version": "sha256:' in out and "adapter_model.safetensors" in out
    assert lfops([*base, "registry", "verify", trained.model]) == 0
    assert "tiny-sft:v1: ok" in capsys.readouterr().out
