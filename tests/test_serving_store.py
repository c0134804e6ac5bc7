"""Serving's schema, policy table and the mapping of a registry version onto Kubernetes manifests (fast: no model)."""

from __future__ import annotations

import json

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from backend.auth import PERMISSIONS, Actor
from backend.errors import LfopsError, NotFound
from backend.serving.kubernetes import serving_spec
from backend.serving.targets import ServedVersion
from backend.store import Store, _alembic_config, models


def _upgrade_from_0002_with_a_hand_made_deployment(url: str) -> Store:
    store = Store(url)
    with store.engine.begin() as conn:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002_runs_registry")
        conn.execute(
            text(
                "INSERT INTO model_versions (name, version, kind, artifact_uri, manifest_sha256, created_at, hub_repo,"
                " hub_revision) VALUES ('m', 1, 'adapter', '/x', 'h', CURRENT_TIMESTAMP, '', '')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO deployments (model_version_id, target, endpoint, status, created_at, updated_at)"
                " VALUES (1, 'staging', '', 'ready', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    store.upgrade()
    return store


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_the_migration_gives_exactly_the_models_schema_and_names_old_rows(db, tmp_path, request):
    url = request.getfixturevalue("pg_database") if db == "postgresql" else f"sqlite:///{tmp_path}/s.db"
    store = _upgrade_from_0002_with_a_hand_made_deployment(url)
    try:
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), models.Base.metadata) == []
            rows = conn.execute(text("SELECT name, namespace, reason, created_by FROM deployments")).all()
        assert [tuple(r) for r in rows] == [("deployment-1", "", "", "")]
        with store.engine.begin() as conn:  # and back down, for an lfops rolled back
            cfg = _alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0002_runs_registry")
    finally:
        store.dispose()


def test_reviewers_and_admins_deploy_analysts_read():
    assert [role for role, allowed in PERMISSIONS.items() if "deploy.manage" in allowed] == ["reviewer", "admin"]
    assert not Actor(1, "alice", "analyst", "").can("deploy.manage") and Actor(1, "alice", "analyst", "").can("read")


def _version(manifest: dict, kind: str = "adapter") -> ServedVersion:
    return ServedVersion(7, "sft-demo", 3, kind, "/registry/sft-demo/v3", manifest)


def test_a_version_maps_onto_serving_manifests_with_its_lineage(tmp_path):
    models_dir = tmp_path / "models"
    (models_dir / "tiny").mkdir(parents=True)
    (models_dir / "tiny" / "config.json").write_text("{}")
    manifest = {
        "base_model": str(models_dir / "tiny"),
        "config": {"params": {"template": "qwen", "lora_rank": 12}},
        "commit": "a" * 40,
        "config_hash": "b" * 64,
        "dataset_version": "sha256:" + "c" * 64,
        "change_request": {"id": 4},
        "run": {"id": 9},
    }
    spec = serving_spec("bot", _version(manifest), models_dir)
    assert (spec.base_model, spec.base_model_on_volume, spec.template, spec.lora_rank) == ("tiny", True, "qwen", 12)
    assert spec.lineage == {
        "commit": "a" * 40,
        "config_hash": "b" * 64,
        "dataset_version": "sha256:" + "c" * 64,
        "change_request": "4",
        "run": "9",
    }
    hub = serving_spec("bot", _version({**manifest, "base_model": "Qwen/Qwen2.5-0.5B"}), models_dir)
    assert (hub.base_model, hub.base_model_on_volume) == ("Qwen/Qwen2.5-0.5B", False)
    full = serving_spec("bot", _version({**manifest, "base_model": "/elsewhere/x"}, kind="full"), models_dir)
    assert full.kind == "full" and not full.base_model_on_volume  # a merged model needs no base
    with pytest.raises(LfopsError, match=r"^base model: /elsewhere/x of sft-demo:v3 is a path outside the models"):
        serving_spec("bot", _version({**manifest, "base_model": "/elsewhere/x"}), models_dir)
    with pytest.raises(NotFound, match=r"^base model: .*/gone of sft-demo:v3 is missing$"):
        serving_spec("bot", _version({**manifest, "base_model": str(models_dir / "gone")}), models_dir)
    json.dumps(spec.lineage)  # plain strings: labels and annotations
