"""Reproduce: relaunch a registered model's exact commit and config; on the CPU with the same seed the loss matches."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from backend.cli import main as lfops
from backend.errors import Conflict
from backend.store.models import Config
from tests.runs_fixtures import approved_merge, kill_leftover_runs, trained_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(template_workspace, tmp_path_factory):
    return trained_run(template_workspace, tmp_path_factory)


def test_reproduced_run_has_the_same_final_train_loss(trained):
    ws, alice = trained.env.ws, trained.env.actor("alice")
    original = ws.runs.get(alice, trained.run_id)
    try:
        repro = ws.runs.reproduce(alice, trained.model)
        assert repro.reproduces_run_id == original.id and repro.id != original.id
        assert (repro.commit, repro.config_path, repro.config_hash) == (
            original.commit,
            original.config_path,
            original.config_hash,
        )
        repro = ws.runs.wait(alice, repro.id, timeout=300)
    finally:
        kill_leftover_runs(ws)
    assert repro.status == "succeeded", repro.reason
    assert abs(repro.final_loss - original.final_loss) <= 1e-6, (repro.final_loss, original.final_loss)

    comparison = ws.lineage.compare(alice, [original.id, repro.id])
    assert comparison.differing == []
    first, second = comparison.curves[original.id]["loss"], comparison.curves[repro.id]["loss"]
    assert [s for s, _ in first] == [s for s, _ in second] == list(range(1, 9))
    assert all(abs(a - b) <= 1e-6 for (_, a), (_, b) in zip(first, second, strict=True))

    lineage = ws.lineage.of_model(alice, trained.model)
    assert [r.id for r in lineage.reproductions] == [repro.id]
    new_model = ws.registry.for_run(repro.id)
    assert new_model is not None and new_model.name == "tiny-sft"
    assert ws.registry.manifest(alice, new_model.ref)["run"]["reproduces_run"] == original.id


def test_compare_shows_the_hyperparameter_difference_of_two_configs(trained):
    """A run of another config (launched and cancelled at once) differs from the trained one in batch size."""
    ws, alice = trained.env.ws, trained.env.actor("alice")
    cr, _ = approved_merge(trained.env, "tiny-sft-b8", per_device_train_batch_size=8)
    other = ws.runs.launch(alice, cr)
    ws.runs.cancel(alice, other.id)
    comparison = ws.lineage.compare(alice, [trained.run_id, other.id])
    assert [(p.key, p.values) for p in comparison.differing] == [("per_device_train_batch_size", [4, 8])]
    assert comparison.curves[trained.run_id]["loss"] and comparison.final_metrics[trained.run_id]["train_loss"]


def test_reproduce_refuses_when_the_base_model_changed(trained, capsys, monkeypatch):
    ws = trained.env.ws
    with ws.store.session() as s:  # as if the local base model's files had changed since the original run
        view = ws.runs.get(trained.env.actor("alice"), trained.run_id)
        s.execute(
            update(Config)
            .where(Config.commit == view.commit, Config.path == view.config_path)
            .values(base_model_revision="local:0123456789abcdef")
        )
    try:
        with pytest.raises(Conflict, match=r"base model changed since run #\d+: revision local:0123456789abcdef then"):
            ws.runs.reproduce(trained.env.actor("alice"), trained.model)
    finally:
        with ws.store.session() as s:
            s.execute(
                update(Config)
                .where(Config.commit == view.commit, Config.path == view.config_path)
                .values(base_model_revision=_current_revision(ws, view))
            )
    monkeypatch.setenv("LFOPS_PASSWORD", trained.env.passwords["alice"])
    assert lfops(["--workspace", str(ws.settings.workspace), "--user", "alice", "reproduce", "no-such-model"]) == 2
    assert "error: model no-such-model is not in the registry" in capsys.readouterr().err


def _current_revision(ws, view) -> str:
    from backend.config import TrainConfig

    return TrainConfig.parse(ws.repo.read(view.commit, view.config_path), view.config_path).base_model_revision()
