"""One approval rule (backend/approvals.py) everywhere: an author's own approval, however it got into the database,
counts nowhere: not for review, merge, the launch policy, the registry's manifest or lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from backend import approvals
from backend.errors import Conflict
from backend.gitstore import parse_trailers
from backend.registry import MANIFEST
from backend.review_status import ChangeRequestStatus, ReviewDecision
from backend.store.models import ChangeRequest, Config, Review, Run, User
from tests.runs_fixtures import approved_merge, small_config
from tests.snapshots import snapshot


def self_approve(env, cr_id: int) -> None:
    """What the API refuses: the author's approval of their own head, written straight into the database."""
    with env.ws.store.session() as s:
        cr = s.get(ChangeRequest, cr_id)
        s.add(
            Review(
                change_request_id=cr.id,
                reviewer_id=cr.author_id,
                decision=ReviewDecision.APPROVED,
                head_commit=cr.head_commit,
            )
        )
        if ChangeRequestStatus(cr.status).under_review:  # as a decision would leave it
            cr.status = ChangeRequestStatus.APPROVED


def register_fake_run(env, tmp_path: Path, commit: str, name: str) -> dict:
    """A succeeded run of the merged config (its output written here, not trained), registered; its manifest."""
    out = tmp_path / f"out-{name}"
    out.mkdir()
    (out / "adapter_config.json").write_text("{}")
    (out / "adapter_model.safetensors").write_bytes(b"weights")
    with env.ws.store.session() as s:
        config_id = s.scalar(select(Config.id).where(Config.commit == commit))
        alice_id = s.scalar(select(User.id).where(User.name == "alice"))
        run = Run(config_id=config_id, backend="local", status="succeeded", submitted_by_id=alice_id, run_dir=str(out))
        s.add(run)
        s.flush()
        run_id = run.id
    view = env.ws.registry.register_run(run_id)
    return {"ref": view.ref, **json.loads((Path(view.artifact_uri) / MANIFEST).read_text())}


def test_sql_condition_and_python_predicate_agree(any_db_env):
    env = any_db_env
    alice, rita = env.actor("alice"), env.actor("rita")
    cr = env.ws.changes.save(alice, small_config(env, lora_rank=4), "agree", "agree").change_request
    env.ws.changes.request_changes(rita, cr, "not yet")
    env.ws.changes.approve(rita, cr)
    self_approve(env, cr)
    with env.ws.store.session() as s:
        request = s.get(ChangeRequest, cr)
        loaded = {r.id for r in request.reviews if approvals.counts(r, request)}
        joined = set(
            s.scalars(select(Review.id).join(ChangeRequest, approvals.condition()).where(ChangeRequest.id == cr))
        )
        decisions = {r.id: (r.decision, r.reviewer_id == request.author_id) for r in request.reviews}
    assert loaded == joined and len(loaded) == 1
    assert decisions[next(iter(loaded))] == (ReviewDecision.APPROVED, False)


def test_an_authors_own_approval_does_not_make_a_request_mergeable(any_db_env):
    env = any_db_env
    alice, rita = env.actor("alice"), env.actor("rita")
    cr = env.ws.changes.save(alice, small_config(env, lora_rank=4), "selfish", "approve myself").change_request
    self_approve(env, cr)
    view = env.ws.changes.get(rita, cr)
    assert view.status == ChangeRequestStatus.APPROVED and view.approvers == []
    assert [(r.reviewer, r.counts) for r in view.reviews] == [("alice", False)]
    before = snapshot(env)
    with pytest.raises(Conflict, match=f"change request #{cr} has no approval for its current head commit"):
        env.ws.changes.merge(rita, cr)
    assert snapshot(env) == before

    env.ws.changes.approve(rita, cr, "fine")
    assert env.ws.changes.get(alice, cr).approvers == ["rita"]
    merged = env.ws.changes.merge(rita, cr)
    trailers = parse_trailers(env.origin_git("log", "-1", "--format=%B", merged.merged_commit))
    assert trailers["Approved-by"] == ["rita <rita@lfops.local>"]  # not the author's own approval


def test_an_authors_own_approval_counts_for_no_launch_manifest_or_lineage(any_db_env, tmp_path):
    env = any_db_env
    alice = env.actor("alice")
    cr, commit = approved_merge(env, "self-lineage")
    self_approve(env, cr)
    target = env.ws.runs.resolve(cr)

    # rita's approval counts, alice's own does not
    assert env.ws.changes.get(alice, cr).approvers == ["rita"]
    assert env.ws.runs.refusal(target) is None
    first = register_fake_run(env, tmp_path, commit, "first")
    assert first["approvers"] == first["change_request"]["approvers"] == ["rita <rita@lfops.local>"]
    assert env.ws.lineage.of_model(alice, first["ref"]).approvers == ["rita"]

    # without rita's, nothing counts: the author's approval alone is no approval
    with env.ws.store.session() as s:
        s.execute(
            delete(Review).where(
                Review.change_request_id == cr, Review.reviewer_id != s.get(ChangeRequest, cr).author_id
            )
        )
    assert env.ws.changes.get(alice, cr).approvers == []
    assert env.ws.runs.refusal(target) == f"change request #{cr} has no approval for the commit it merged"
    second = register_fake_run(env, tmp_path, commit, "second")
    assert second["approvers"] == second["change_request"]["approvers"] == []
    assert env.ws.lineage.of_model(alice, second["ref"]).approvers == []
    assert env.ws.lineage.of_model(alice, first["ref"]).approvers == []  # lineage reads the database as it is now
