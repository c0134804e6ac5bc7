"""Retrain change requests, for real: a real config repository (data pushed to main from a working clone), real
change requests saved by the bot through the normal save path, SQLite and PostgreSQL.

The "deployed model" of most tests is the rows a trained, registered and deployed version leaves (a run of a really
merged config, its model version, a running deployment): training and serving are tested for real in their own
modules (test_runs_training, test_serving_service); here what matters is what the bot does with them. The
launch-on-merge test starts a real run through the local runner.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from backend import demo
from backend.auth import add_user
from backend.cli.main import main as lfops
from backend.config import TrainConfig
from backend.errors import AuthenticationFailed, Conflict, LfopsError, PermissionDenied
from backend.retrain import Outcome, RetrainSignal
from backend.retrain.bot import BOT_NAME, bot_actor
from backend.store.models import AuditEvent, ChangeRequest, Config, Deployment, ModelVersion, Run, User
from tests.helpers import git, git_clone
from tests.runs_fixtures import approved_merge, kill_leftover_runs, small_config
from tests.snapshots import snapshot

DATA = f"data/{demo.DEMO_DATASET}.json"


# ---- set-up ------------------------------------------------------------------------------------------------------


def deployed(env, name: str = "tiny", deployment: str | None = None, **overrides) -> int:
    """`name` merged for real, then the rows its trained, registered and deployed version would leave; returns the
    model version id (version 1, or the next one)."""
    cr, merge = approved_merge(env, name, **overrides)
    return record_trained(env, cr, merge, name, deployment or name)


def record_trained(env, cr: int, merge: str, name: str, deployment: str | None) -> int:
    with env.ws.store.session() as s:
        config = s.scalar(select(Config).where(Config.commit == merge, Config.path == f"configs/{name}.yaml"))
        alice = s.scalar(select(User).where(User.name == "alice"))
        run = Run(config_id=config.id, backend="local", status="succeeded", submitted_by_id=alice.id)
        s.add(run)
        s.flush()
        version = 1 + len(list(s.scalars(select(ModelVersion.id).where(ModelVersion.name == name))))
        mv = ModelVersion(
            name=name,
            version=version,
            run_id=run.id,
            artifact_uri=f"/registry/{name}/v{version}",
            manifest_sha256="0" * 64,
        )
        s.add(mv)
        s.flush()
        if deployment:
            row = s.scalar(select(Deployment).where(Deployment.name == deployment))
            if row is None:
                s.add(Deployment(name=deployment, model_version_id=mv.id, target="local", status="running"))
            else:
                row.model_version_id = mv.id
        return mv.id


def push_data(
    env, tmp_path, records: list[dict] | None = None, remove: bool = False, message: str = "more data"
) -> str:
    """A data change pushed to origin's main from a working clone (how data lands: not through lfops)."""
    clone = tmp_path / f"clone-{datetime.now(UTC).timestamp()}"
    git_clone(env.origin, clone, user="dana")
    path = clone / DATA
    if remove:
        path.unlink()
    else:
        rows = json.loads(path.read_text()) if path.exists() else []
        rows += (
            records
            if records is not None
            else [
                {"instruction": f"What is {i} plus 100?", "input": "", "output": f"{i} plus 100 is {i + 100}."}
                for i in range(8)
            ]
        )
        path.write_text(json.dumps(rows, indent=1) + "\n")
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", message)
    git(clone, "push", "-q", "origin", "HEAD:main")
    return git(clone, "rev-parse", "HEAD").strip()


def drift(mv_id: int, deployment: str = "tiny", report: int = 17, fingerprint: str | None = None) -> RetrainSignal:
    """What the drift adapter hands in for a declared DriftReport."""
    return RetrainSignal(
        kind="drift",
        deployment=deployment,
        model_version_id=mv_id,
        fingerprint=fingerprint or f"drift:{deployment}:{mv_id}",
        summary_markdown=f"PSI 0.41 (threshold 0.2), ROC AUC 0.93 (threshold 0.61)\n\ntop terms: refund ({report})",
        evidence_ref=f"drift-report:{report}",
        observed_at=datetime(2026, 11, 30, 9, 15, tzinfo=UTC),
    )


def bot_requests(env) -> list[ChangeRequest]:
    with env.ws.store.session() as s:
        rows = s.scalars(
            select(ChangeRequest).join(User, ChangeRequest.author_id == User.id).where(User.name == BOT_NAME)
        )
        return [(cr.id, cr.status, cr.branch, cr.description, cr.head_commit) for cr in rows]


def audit_actions(env, actor: str | None = None) -> list[str]:
    with env.ws.store.session() as s:
        q = select(AuditEvent.action).order_by(AuditEvent.id)
        if actor:
            q = q.where(AuditEvent.actor == actor)
        return list(s.scalars(q))


# ---- the dataset trigger ------------------------------------------------------------------------------------------


def test_a_new_dataset_version_opens_one_retrain_request_with_the_diff(any_db_env, tmp_path):
    env = any_db_env
    alice = env.actor("alice")
    deployed(env)
    assert env.ws.retrain.check(alice).handled == []  # the data has not changed: nothing to propose

    push_data(env, tmp_path)
    report = env.ws.retrain.check(alice)
    assert [h.outcome for _, h in report.handled] == [Outcome.OPENED], report
    cr_id = report.handled[0][1].change_request
    [(cid, status, branch, text, head)] = bot_requests(env)
    assert (cid, status, branch) == (cr_id, "open", f"{BOT_NAME}/retrain-tiny")
    assert "| demo_arith | data/demo_arith.json | changed | 8 | 0 | 72 |" in text
    assert "Retrain tiny because the dataset of tiny:v1 changed on main" in text

    # the proposal: the trained config's hyperparameters, the new dataset version pinned in its lfops block
    proposed = TrainConfig.parse(env.ws.repo.read(head, "configs/tiny.yaml"))
    trained = small_config(env)
    assert proposed.args == TrainConfig.parse(trained.canonical_yaml()).args
    view = env.ws.changes.get(alice, cr_id)
    assert proposed.metadata["dataset_version"] == view.dataset_version != ""
    assert proposed.metadata["retrain"] == f"dataset-version:{view.dataset_version}"
    assert env.ws.changes.show(alice, cr_id).validation == ["ok: the config validates"]
    assert audit_actions(env, BOT_NAME) == ["config.save", "retrain.open"]

    # the same data seen again (the periodic pass, the CLI): no second request, nothing recorded
    again = env.ws.retrain.check(alice)
    assert [h.outcome for _, h in again.handled] == [Outcome.DUPLICATE]
    assert len(bot_requests(env)) == 1
    assert [s.outcome for s in env.ws.retrain.signals(alice)] == [Outcome.OPENED]


def test_new_evidence_is_a_comment_on_the_open_request_not_a_second_one(env, tmp_path):
    alice = env.actor("alice")
    mv = deployed(env)
    first = env.ws.retrain.handle(drift(mv, report=17))
    assert first.outcome == Outcome.OPENED
    second = env.ws.retrain.handle(drift(mv, report=18, fingerprint="drift:tiny:new-terms"))
    assert (second.outcome, second.change_request) == (Outcome.COMMENTED, first.change_request)
    push_data(env, tmp_path)
    third = env.ws.retrain.check(alice).handled[0][1]
    assert (third.outcome, third.change_request) == (Outcome.COMMENTED, first.change_request)
    assert len(bot_requests(env)) == 1
    evidence = env.ws.retrain.evidence(alice, first.change_request)
    assert [(e.evidence_ref, e.outcome) for e in evidence] == [
        ("drift-report:17", Outcome.OPENED),
        ("drift-report:18", Outcome.COMMENTED),
        (evidence[2].evidence_ref, Outcome.COMMENTED),
    ]
    assert evidence[2].evidence_ref.startswith("dataset-version:sha256:")
    assert audit_actions(env, BOT_NAME).count("retrain.comment") == 2


def test_closing_unmerged_suppresses_the_same_signal_until_it_changes(any_db_env, tmp_path):
    env = any_db_env
    alice, rita = env.actor("alice"), env.actor("rita")
    deployed(env)
    push_data(env, tmp_path)
    cr = env.ws.retrain.check(alice).handled[0][1].change_request
    env.ws.changes.close(rita, cr)

    suppressed = env.ws.retrain.check(alice).handled[0][1]
    assert suppressed.outcome == Outcome.SUPPRESSED
    assert f"change request #{cr} with this signal was closed unmerged" in suppressed.reason
    assert env.ws.retrain.check(alice).handled[0][1].signal_id is None  # refused the same way: not recorded again
    assert [r[0] for r in bot_requests(env)] == [cr]

    push_data(env, tmp_path, records=[{"instruction": "What is 1 plus 1?", "input": "", "output": "2"}])
    reopened = env.ws.retrain.check(alice).handled[0][1]
    assert reopened.outcome == Outcome.OPENED and reopened.change_request != cr
    # the closed request's branch was deleted, so the bot's branch name is free again
    assert [(r[1], r[2]) for r in bot_requests(env)] == [
        ("closed", "lfops-bot/retrain-tiny"),
        ("open", "lfops-bot/retrain-tiny"),
    ]


def test_a_merged_retrain_starts_a_cool_down(env, tmp_path):
    alice, rita = env.actor("alice"), env.actor("rita")
    mv = deployed(env)
    cr = env.ws.retrain.handle(drift(mv, report=1)).change_request
    env.ws.changes.approve(rita, cr, "retrain it")
    env.ws.changes.merge(rita, cr)
    assert env.ws.retrain.handle(drift(mv, report=1)).outcome == Outcome.SUPPRESSED  # merged: not proposed again

    new = env.ws.retrain.handle(drift(mv, report=2, fingerprint="drift:tiny:again"))
    assert new.outcome == Outcome.COOLDOWN and "cool-down until" in new.reason
    later = datetime.now(UTC) + timedelta(hours=25)
    env.ws.retrain.clock = lambda: later
    assert env.ws.retrain.handle(drift(mv, report=2, fingerprint="drift:tiny:again")).outcome == Outcome.OPENED
    assert len(bot_requests(env)) == 2
    assert alice  # (the analyst reads the list too)
    assert [s.outcome for s in env.ws.retrain.signals(alice)][:2] == [Outcome.OPENED, Outcome.COOLDOWN]


def test_the_hourly_limit_holds_new_requests_back(env):
    env.ws.retrain.hourly_limit = 1
    first = deployed(env, "tiny")
    second = deployed(env, "tiny-two")
    assert env.ws.retrain.handle(drift(first, "tiny")).outcome == Outcome.OPENED
    limited = env.ws.retrain.handle(drift(second, "tiny-two"))
    assert limited.outcome == Outcome.RATE_LIMITED and "(limit 1)" in limited.reason
    assert len(bot_requests(env)) == 1
    later = datetime.now(UTC) + timedelta(minutes=61)
    env.ws.retrain.clock = lambda: later
    assert env.ws.retrain.handle(drift(second, "tiny-two")).outcome == Outcome.OPENED


def test_a_branch_that_already_exists_gets_no_duplicate_request(env, tmp_path):
    mv = deployed(env)
    clone = git_clone(env.origin, tmp_path / "clone", user="dana")
    (clone / "notes.txt").write_text("someone's own work\n")
    git(clone, "add", "notes.txt")
    git(clone, "commit", "-qm", "own work")
    git(clone, "push", "-q", "origin", f"HEAD:refs/heads/{BOT_NAME}/retrain-tiny")
    theirs = env.ws.repo.remote_head(f"{BOT_NAME}/retrain-tiny")

    opened = env.ws.retrain.handle(drift(mv))
    assert opened.outcome == Outcome.OPENED
    [(cr, status, branch, _, _)] = bot_requests(env)
    assert (cr, status) == (opened.change_request, "open")
    assert branch.startswith(f"{BOT_NAME}/retrain-tiny-")
    assert env.ws.repo.remote_head(f"{BOT_NAME}/retrain-tiny") == theirs  # their branch is left alone
    # the same signal again (or a second process): still one request
    assert env.ws.retrain.handle(drift(mv)).outcome == Outcome.DUPLICATE
    assert len(bot_requests(env)) == 1


def test_a_claim_is_one_per_model_even_when_two_processes_race(env):
    """The unique open_key: a second claim for the same model fails in the database, and becomes a comment."""
    from sqlalchemy.exc import IntegrityError

    from backend.store.models import RetrainRequest

    mv = deployed(env)
    with pytest.raises(IntegrityError):
        with env.ws.store.session() as s:
            s.add(RetrainRequest(model_name="tiny", config_path="configs/tiny.yaml", open_key="tiny", state="opening"))
            s.add(RetrainRequest(model_name="tiny", config_path="configs/tiny.yaml", open_key="tiny", state="opening"))
    assert env.ws.retrain.handle(drift(mv)).outcome == Outcome.OPENED


# ---- the bot ------------------------------------------------------------------------------------------------------


def test_the_bot_proposes_but_cannot_approve_merge_launch_or_sign_in(env):
    rita = env.actor("rita")
    mv = deployed(env)
    cr = env.ws.retrain.handle(drift(mv)).change_request
    bot = bot_actor(env.ws.store)
    assert bot.name == BOT_NAME and bot.role == "bot"
    with pytest.raises(PermissionDenied, match=r"^lfops-bot \(bot\) may not approve or request changes$"):
        env.ws.changes.approve(bot, cr)
    human = env.ws.changes.save(env.actor("alice"), small_config(env, seed=7), "other", "someone's change")
    with pytest.raises(PermissionDenied, match="may not approve"):
        env.ws.changes.approve(bot, human.change_request)
    env.ws.changes.approve(rita, cr, "fine")
    before = snapshot(env)
    with pytest.raises(PermissionDenied, match="may not merge change requests"):
        env.ws.changes.merge(bot, cr)
    with pytest.raises(PermissionDenied, match="may not launch runs"):
        env.ws.runs.launch(bot, cr)
    with pytest.raises(AuthenticationFailed):
        env.ws.login(BOT_NAME, "!")
    assert snapshot(env) == before
    with env.ws.store.session() as s:
        with pytest.raises(Conflict, match=r"^name: 'lfops' is reserved for lfops itself$"):
            add_user(s, "lfops", "admin", "a-long-password")


# ---- bad input ----------------------------------------------------------------------------------------------------


def test_bad_signals_leave_a_clear_state_and_nothing_else(env, tmp_path):
    alice = env.actor("alice")
    mv = deployed(env)
    before = snapshot(env)
    with pytest.raises(LfopsError, match=r"^kind: 'hunch' must be one of drift, dataset$"):
        env.ws.retrain.handle(RetrainSignal("hunch", "tiny", mv, "x", "", "x", datetime.now(UTC)))
    with pytest.raises(LfopsError, match=r"^fingerprint: must be one line"):
        env.ws.retrain.handle(RetrainSignal("drift", "tiny", mv, "", "", "x", datetime.now(UTC)))
    assert snapshot(env) == before

    gone = env.ws.retrain.handle(drift(mv, deployment="nowhere"))
    assert (gone.outcome, gone.reason) == (Outcome.INVALID, "deployment: 'nowhere' does not exist")
    missing = env.ws.retrain.handle(drift(9999))
    assert missing.outcome == Outcome.INVALID and missing.reason == "model version: #9999 does not exist"
    with env.ws.store.session() as s:
        s.scalar(select(Deployment).where(Deployment.name == "tiny")).status = "stopped"
    stopped = env.ws.retrain.handle(drift(mv))
    assert stopped.outcome == Outcome.INVALID and "is stopped" in stopped.reason
    assert env.ws.retrain.check(alice).checked == 0  # a stopped deployment is not watched
    assert bot_requests(env) == []
    assert env.origin_git("for-each-ref", "--format=%(refname)", "refs/heads/lfops-bot") == ""


def test_dataset_files_gone_on_main_propose_nothing(env, tmp_path):
    alice = env.actor("alice")
    mv = deployed(env)
    push_data(env, tmp_path, remove=True, message="data removed")
    report = env.ws.retrain.check(alice)
    assert report.handled == []
    assert report.problems == ["tiny: on main, dataset: 'demo_arith': file data/demo_arith.json does not exist"]
    # a drift signal now cannot be proposed either: recorded as invalid, the claim released, no branch
    handled = env.ws.retrain.handle(drift(mv))
    assert handled.outcome == Outcome.INVALID
    assert handled.reason == "dataset: on main, 'demo_arith': file data/demo_arith.json does not exist"
    assert bot_requests(env) == []
    assert [r.state for r in env.ws.retrain.requests(alice)] == ["failed"]
    again = env.ws.retrain.handle(drift(mv))  # not tried again at once (the periodic pass comes every minute)
    assert (again.outcome, again.signal_id) == (Outcome.INVALID, None) and "tried again after 0:10:00" in again.reason
    later = datetime.now(UTC) + timedelta(minutes=11)
    env.ws.retrain.clock = lambda: later
    assert env.ws.retrain.handle(drift(mv)).signal_id is not None  # tried (and refused) again
    assert [r.state for r in env.ws.retrain.requests(alice)] == ["failed", "failed"]
    push_data(env, tmp_path, records=[], message="data back")  # an empty list is a file again
    assert env.ws.retrain.handle(drift(mv, report=5, fingerprint="drift:tiny:5")).outcome == Outcome.OPENED


# ---- launch on merge ----------------------------------------------------------------------------------------------


def test_launch_on_merge_starts_the_run_only_after_the_merge(env):
    alice, rita = env.actor("alice"), env.actor("rita")
    config = small_config(env)
    config.metadata["launch_on_merge"] = True
    cr = env.ws.changes.save(alice, config, "auto", "train as soon as it is merged").change_request
    env.ws.changes.approve(rita, cr, "ok")
    with env.ws.store.session() as s:
        assert s.scalar(select(Run.id)) is None  # approved is not merged: nothing runs
    try:
        merged = env.ws.changes.merge(rita, cr)
        with env.ws.store.session() as s:
            run = s.scalar(select(Run))
            events = {e.action: e for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))}
            assert run is not None and run.submitted_by.name == "rita"
            assert run.config.commit == merged.merged_commit and run.config.change_request_id == cr
            assert run.external_id  # handed to the runner
            assert events["review.merge"].id < events["run.launch"].id < events["review.launch_on_merge"].id
            assert events["review.launch_on_merge"].detail == {"run": run.id, "merge_commit": merged.merged_commit}
            run_id = run.id
        env.ws.runs.cancel(rita, run_id)
    finally:
        kill_leftover_runs(env.ws)


def test_a_config_without_launch_on_merge_is_only_merged(env):
    approved_merge(env, "manual")
    with env.ws.store.session() as s:
        assert s.scalar(select(Run.id)) is None


# ---- lineage and the CLI ------------------------------------------------------------------------------------------


def test_lineage_says_why_a_retrained_version_was_trained(env, tmp_path, capsys, monkeypatch):
    alice, rita = env.actor("alice"), env.actor("rita")
    mv = deployed(env)
    cr = env.ws.retrain.handle(drift(mv, report=17)).change_request
    env.ws.changes.approve(rita, cr, "retrain")
    merge = env.ws.changes.merge(rita, cr).merged_commit
    record_trained(env, cr, merge, "tiny", deployment=None)
    lineage = env.ws.lineage.of_model(alice, "tiny:v2")
    assert lineage.because == (
        f"tiny:v2 was trained because tiny:v1 drifted on 2026-11-30 (deployment tiny); evidence drift-report:17, "
        f"change request #{cr}"
    )
    assert env.ws.lineage.of_model(alice, "tiny:v1").retrain is None

    monkeypatch.setenv("LFOPS_PASSWORD", env.passwords["alice"])
    ws = str(env.ws.settings.workspace)
    assert lfops(["--workspace", ws, "--user", "alice", "lineage", "tiny:v2"], plugins=[]) == 0
    assert "tiny:v2 was trained because tiny:v1 drifted on 2026-11-30" in capsys.readouterr().out
    assert lfops(["--workspace", ws, "--user", "alice", "retrain", "list"], plugins=[]) == 0
    out = capsys.readouterr().out
    assert f"tiny [merged] change request #{cr} branch lfops-bot/retrain-tiny" in out
    assert "drift tiny tiny drift-report:17 -> opened" in out


def test_cli_check_opens_a_request_and_says_so(env, tmp_path, capsys, monkeypatch):
    deployed(env)
    push_data(env, tmp_path)
    monkeypatch.setenv("LFOPS_PASSWORD", env.passwords["alice"])
    ws = str(env.ws.settings.workspace)
    assert lfops(["--workspace", ws, "--user", "alice", "retrain", "check"], plugins=[]) == 0
    out = capsys.readouterr().out
    [(cr, *_)] = bot_requests(env)
    assert "checked 1 running deployment(s)" in out
    assert f"-> opened change request #{cr}" in out


def test_the_review_tab_shows_the_evidence_and_the_comments(env):
    from tests.webui_fixtures import plain
    from webui.review_tab import ReviewTab

    alice = env.actor("alice")
    mv = deployed(env)
    cr = env.ws.retrain.handle(drift(mv, report=17)).change_request
    env.ws.retrain.handle(drift(mv, report=18, fingerprint="drift:tiny:new-terms"))
    detail = env.ws.changes.show(alice, cr)
    header, *_, reviews = ReviewTab.render(detail, False, env.ws.retrain.evidence(alice, cr))
    text = plain(reviews)
    assert "**Retrain evidence** (the retrain bot proposed this; it cannot approve or merge)" in text
    assert "**drift** `drift-report:17` on deployment `tiny`, observed 2026-11-30 09:15: opened this request" in text
    assert "**drift** `drift-report:18` on deployment `tiny`, observed 2026-11-30 09:15: added as a comment" in text
    assert "top terms: refund (18)" in text
    assert "Retrain tiny because tiny:v1 drifted on deployment tiny (drift-report:17)" in plain(header)
    human = env.ws.changes.save(alice, small_config(env, seed=3), "people", "a person's change").change_request
    assert "Retrain evidence" not in ReviewTab.render(env.ws.changes.show(alice, human), False, [])[-1]


# ---- the whole loop, trained for real -----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_loop_for_real_data_changes_a_reviewed_retrain_trains_v2_and_lineage_says_why(env, tmp_path):
    """v1 trained for real (launched by its merge), served (its deployment row: serving is tested elsewhere), new
    data on main -> the bot's request -> review, merge -> v2 trains for real -> lineage says why."""
    alice, rita = env.actor("alice"), env.actor("rita")
    config = small_config(env)
    config.metadata["launch_on_merge"] = True
    cr = env.ws.changes.save(alice, config, "loop", "train on merge").change_request
    env.ws.changes.approve(rita, cr, "ok")
    env.ws.runs.start_monitor(interval=0.2)
    try:
        env.ws.changes.merge(rita, cr)
        [v1_run] = env.ws.runs.list(alice)
        assert env.ws.runs.wait(alice, v1_run.id, timeout=300).status == "succeeded"
        v1 = env.ws.registry.for_run(v1_run.id)
        assert v1.ref == "loop:v1"
        with env.ws.store.session() as s:
            s.add(Deployment(name="loop", model_version_id=v1.id, target="local", status="running"))

        push_data(env, tmp_path)
        [(signal, handled)] = env.ws.retrain.check(alice).handled
        assert handled.outcome == Outcome.OPENED
        retrain_cr = handled.change_request
        with env.ws.store.session() as s:
            assert s.scalar(select(Run.id).where(Run.id != v1_run.id)) is None  # proposed, not trained
        env.ws.changes.approve(rita, retrain_cr, "new data, same recipe")
        env.ws.changes.merge(rita, retrain_cr)
        v2_run = next(r for r in env.ws.runs.list(alice) if r.id != v1_run.id)
        assert v2_run.change_request_id == retrain_cr
        assert env.ws.runs.wait(alice, v2_run.id, timeout=300).status == "succeeded"
    finally:
        env.ws.runs.stop_monitor()
        kill_leftover_runs(env.ws)
    v2 = env.ws.lineage.of_model(alice, "loop:v2")
    assert v2.dataset_version == signal.evidence_ref.removeprefix("dataset-version:") != v1_run.dataset_version
    assert v2.because.startswith(
        "loop:v2 was trained because dataset demo_arith changed (seen "
    ) and v2.because.endswith(
        f"loop:v1 was trained on the old one); evidence {signal.evidence_ref}, change request #{retrain_cr}"
    )
    assert env.ws.retrain.requests(alice)[0].state == "merged"


def test_a_launch_on_merge_whose_hook_did_not_run_is_caught_up_once(env):
    """The process stopped between recording the merge and its hook: the periodic pass launches it, once."""
    from backend.review import ChangeRequests

    alice, rita = env.actor("alice"), env.actor("rita")
    config = small_config(env)
    config.metadata["launch_on_merge"] = True
    cr = env.ws.changes.save(alice, config, "missed", "train on merge").change_request
    env.ws.changes.approve(rita, cr, "ok")
    ChangeRequests(env.ws.store, env.ws.repo).merge(rita, cr)  # no hook: as if the process died right after
    assert env.ws.retrain.launch_missed() == []  # young merges are left to their own hook
    later = datetime.now(UTC) + timedelta(minutes=3)
    env.ws.retrain.clock = lambda: later
    try:
        [run_id] = env.ws.retrain.launch_missed()
        assert env.ws.retrain.launch_missed() == []
        run = env.ws.runs.get(alice, run_id)
        assert (run.change_request_id, run.submitted_by) == (cr, "rita")
        env.ws.runs.cancel(rita, run_id)
    finally:
        kill_leftover_runs(env.ws)


def test_a_declared_drift_from_monitoring_opens_the_models_retrain_request(env):
    """The workspace wires monitoring's on_drift_declared to the retrain bot: a declared report is a signal."""
    from backend.monitoring.report import DECLARED, DriftReport

    mv_id = deployed(env)
    report = DriftReport(
        id=41,
        deployment="tiny",
        model_version_id=mv_id,
        model_version="tiny:v1",
        created_at=datetime(2026, 11, 30, 9, 15),  # naive, as SQLite hands it back
        window_start=datetime(2026, 11, 30, 9, 0),
        window_end=datetime(2026, 11, 30, 9, 15),
        n_prompts=120,
        declared=True,
        scores={"length_psi": 0.41, "oov_rate": 0.05, "domain_auc": 0.93},
        thresholds={"length_psi": 0.2, "oov_rate": 0.3, "domain_auc": 0.61},
        top_terms=["refund", "invoice"],
        sample_prompts=["where is my refund?"],
        state=DECLARED,
    )
    for hook in env.ws.monitoring.on_drift_declared:
        hook(report)
    (request,) = bot_requests(env)
    assert request[1] == "open"
    assert "drift-report:41" in request[3] and "| length_psi | 0.41 | 0.2 |" in request[3]
    for hook in env.ws.monitoring.on_drift_declared:  # the same drift again: no second request
        hook(report)
    assert len(bot_requests(env)) == 1
