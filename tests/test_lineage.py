"""Lineage queries on the shared trained run: where a model came from, what came from a commit or dataset version."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event, select

from backend.cli import main as lfops
from backend.errors import LfopsError, NotFound
from backend.lineage import Derived, ModelLineage, graph
from backend.store.models import Config, Deployment, ModelVersion
from tests.runs_fixtures import trained_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(template_workspace, tmp_path_factory):
    t = trained_run(template_workspace, tmp_path_factory)
    with t.env.ws.store.session() as s:  # a deployment of the model, as the deployment feature would record it
        if s.scalar(select(Deployment.id).where(Deployment.target == "staging")) is None:
            mv = s.scalar(select(ModelVersion).where(ModelVersion.run_id == t.run_id, ModelVersion.version == 1))
            s.add(
                Deployment(
                    name="staging",
                    model_version_id=mv.id,
                    target="staging",
                    endpoint="http://127.0.0.1:8000/v1",
                    status="ready",
                )
            )
    return t


def test_where_did_the_model_come_from(trained):
    ws, alice = trained.env.ws, trained.env.actor("alice")
    lin = ws.lineage.of_model(alice, trained.model)
    with ws.store.session() as s:
        cfg = s.scalar(select(Config).where(Config.commit == trained.commit, Config.path == "configs/tiny-sft.yaml"))
        expected = (cfg.config_hash, cfg.dataset_version, cfg.base_model, cfg.base_model_revision)
    assert lin.model.ref == trained.model
    assert lin.change_request.id == trained.cr and lin.change_request.author == "alice"
    assert lin.change_request.title == "tiny-sft for tests" and lin.change_request.merged_by == "rita"
    assert lin.approvers == ["rita"]
    assert lin.commit == trained.commit and lin.config_path == "configs/tiny-sft.yaml"
    assert (lin.config_hash, lin.dataset_version, lin.base_model, lin.base_model_revision) == expected
    assert lin.dataset_version.startswith("sha256:") and lin.base_model.endswith("tiny-llama")
    assert lin.run.id == trained.run_id and lin.run.submitted_by == "alice"
    assert lin.final_loss is not None and lin.final_loss == lin.final_metrics["train_loss"]
    assert [(d.target, d.status) for d in lin.deployments] == [("staging", "ready")]


def test_what_came_from_a_commit(trained):
    ws, alice = trained.env.ws, trained.env.actor("alice")
    for key in (trained.commit, trained.commit[:12]):
        derived = ws.lineage.from_commit(alice, key)
        assert [c["path"] for c in derived.configs] == ["configs/tiny-sft.yaml"]
        assert trained.run_id in [r.id for r in derived.runs]
        assert trained.model in [m.ref for m in derived.models]
        assert [d.target for d in derived.deployments] == ["staging"]
    nothing = ws.lineage.from_commit(alice, "0" * 40)
    assert (nothing.configs, nothing.runs, nothing.models) == ([], [], [])


def test_what_came_from_a_dataset_version(trained):
    ws, alice = trained.env.ws, trained.env.actor("alice")
    version = ws.runs.get(alice, trained.run_id).dataset_version
    for key in (version, version[:20]):
        derived = ws.lineage.from_dataset_version(alice, key)
        assert trained.commit in [c["commit"] for c in derived.configs]
        assert trained.run_id in [r.id for r in derived.runs]
        assert trained.model in [m.ref for m in derived.models]
    with pytest.raises(LfopsError, match="dataset version: 'sha256:xyz' must be sha256:HEX"):
        ws.lineage.from_dataset_version(alice, "sha256:xyz")


def test_lookup_tells_models_commits_and_dataset_versions_apart(trained):
    ws, alice = trained.env.ws, trained.env.actor("alice")
    version = ws.runs.get(alice, trained.run_id).dataset_version
    assert isinstance(ws.lineage.lookup(alice, trained.model), ModelLineage)
    assert isinstance(ws.lineage.lookup(alice, "tiny-sft"), ModelLineage)
    assert ws.lineage.lookup(alice, trained.commit[:10]).kind == "commit"
    assert ws.lineage.lookup(alice, version).kind == "dataset_version"
    with pytest.raises(NotFound, match="abcdef1234: no model, commit or dataset version by that name is known"):
        ws.lineage.lookup(alice, "abcdef1234")
    with pytest.raises(NotFound, match="model nothing-here is not in the registry"):
        ws.lineage.lookup(alice, "nothing-here")


def test_runs_of_one_config_sorted_by_final_loss(trained):
    ws, alice = trained.env.ws, trained.env.actor("alice")
    config_hash = ws.runs.get(alice, trained.run_id).config_hash
    runs = ws.lineage.runs_of_config(alice, config_hash)
    assert trained.run_id in [r.id for r in runs]
    losses = [r.final_loss for r in runs]
    assert losses == sorted(losses)
    filtered = ws.runs.list(
        alice,
        config_hash=config_hash,
        dataset_version=runs[0].dataset_version,
        submitted_by="alice",
        change_request=trained.cr,
        commit=trained.commit[:9],
    )
    assert trained.run_id in [r.id for r in filtered]
    assert ws.runs.list(alice, config_hash=config_hash, submitted_by="rita") == []


def test_lineage_graph_links_data_review_run_and_model(trained):
    lin = trained.env.ws.lineage.of_model(trained.env.actor("alice"), trained.model)
    g = graph(lin)
    kinds = {n["kind"] for n in g["nodes"]}
    assert {"dataset", "commit", "change_request", "run", "model", "base_model", "deployment"} <= kinds
    edges = {(e["from"].split(":")[0], e["to"].split(":")[0], e["label"]) for e in g["edges"]}
    assert {
        ("dataset", "commit", "data"),
        ("cr", "commit", "merged"),
        ("commit", "run", "trained"),
        ("run", "model", "registered"),
        ("model", "deployment", "deployed"),
    } <= edges
    ids = {n["id"] for n in g["nodes"]}
    assert all(e["from"] in ids and e["to"] in ids for e in g["edges"])


def test_compare_needs_two_existing_runs(trained):
    ws, alice = trained.env.ws, trained.env.actor("alice")
    with pytest.raises(LfopsError, match="runs: compare needs at least two different run ids"):
        ws.lineage.compare(alice, [trained.run_id, trained.run_id])
    with pytest.raises(NotFound, match="run #424242 does not exist"):
        ws.lineage.compare(alice, [trained.run_id, 424242])


def test_lineage_queries_use_indexes_not_table_scans(trained):
    """Every statement behind the lineage tab is planned by SQLite as index searches over runs, configs, metrics and
    model versions (the MLflow lesson: no scan of key/value rows)."""
    ws, alice = trained.env.ws, trained.env.actor("alice")
    view = ws.runs.get(alice, trained.run_id)
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(ws.store.engine, "before_cursor_execute", capture)
    try:
        ws.lineage.of_model(alice, trained.model)
        ws.lineage.from_commit(alice, trained.commit)
        ws.lineage.from_dataset_version(alice, view.dataset_version)
        ws.lineage.runs_of_config(alice, view.config_hash)
        ws.runs.metrics(alice, trained.run_id)
    finally:
        event.remove(ws.store.engine, "before_cursor_execute", capture)
    big = ("runs", "metrics", "configs", "model_versions", "reviews", "deployments")
    plans: list[str] = []
    with ws.store.engine.connect() as conn:
        for statement, params in statements:
            plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)]
            scans = [p for p in plan if re.match(rf"SCAN ({'|'.join(big)})\b", p)]
            assert not scans, f"{statement}\n{plan}"
            plans.append(" / ".join(plan))
    # runs of one config come from the (config, status, final loss) index, not from every run with that status
    assert any("ix_runs_config_status_loss (config_id=? AND status=?)" in p for p in plans), plans


def test_cli_lineage(trained, capsys, monkeypatch):
    ws = trained.env.ws
    monkeypatch.setenv("LFOPS_PASSWORD", trained.env.passwords["rita"])
    base = ["--workspace", str(ws.settings.workspace), "--user", "rita"]
    assert lfops([*base, "lineage", trained.model]) == 0
    out = capsys.readouterr().out
    assert "approved by rita" in out and f"change request #{trained.cr}" in out and "dataset version sha256:" in out
    assert f"commit {trained.commit}" in out and "deployed to staging [ready]" in out
    assert lfops([*base, "lineage", trained.commit[:12]]) == 0
    out = capsys.readouterr().out
    assert f"run #{trained.run_id} [succeeded]" in out and f"model {trained.model}" in out
    assert lfops([*base, "lineage", "ffffffffffff"]) == 2
    assert "error: ffffffffffff: no model, commit or dataset version" in capsys.readouterr().err
    assert isinstance(ws.lineage.lookup(trained.env.actor("rita"), trained.commit), Derived)
