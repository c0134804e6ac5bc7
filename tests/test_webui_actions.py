"""The WebUI's own handlers (Save to repo, Review, Launch, Runs & lineage, role gates), driven in this process over a
real workspace: Git remote, SQLite, LlamaBoard's form and, for Launch, real training of the tiny model."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import threading

import pytest
from llamafactory.webui.control import list_datasets
from sqlalchemy import func, select

from backend.auth import add_user
from backend.store.models import AuditEvent, ChangeRequest
from tests.helpers import git_clone, wait_for
from tests.runs_fixtures import kill_leftover_runs
from tests.snapshots import snapshot
from tests.webui_fixtures import build_in_process, plain, request_for
from tests.workspace_fixtures import make_env
from webui import llamaboard as lb

BOB_PASSWORD = "bob-password-1"  # a second analyst with a known password, added the way an admin would


@pytest.fixture(scope="module")
def web(template_workspace, tmp_path_factory):
    cwd = os.getcwd()
    env = make_env(template_workspace, tmp_path_factory.mktemp("actions") / "ws")
    with env.ws.store.session() as s:
        add_user(s, "bob", "analyst", BOB_PASSWORD)
    env.passwords["bob"] = BOB_PASSWORD
    try:
        yield build_in_process(env)
    finally:
        kill_leftover_runs(env.ws)
        env.ws.runs.stop_monitor()
        os.chdir(cwd)
        env.ws.store.dispose()


def form(web, name: str, message: str = "Raise LR, rank 16", **values) -> dict:
    base = {
        "top.lang": "en",
        "top.model_name": "Custom",
        "top.model_path": str(web.env.ws.settings.models_dir / "tiny-llama"),
        "train.dataset": ["demo_arith"],
        "train.output_dir": "train_2025-01-01-00-00-00",
        "train.compute_type": "fp32",
        "train.learning_rate": "2e-4",
        "train.lora_rank": 16,
        "train.max_samples": "32",
        "train.num_train_epochs": "1.0",
        "train.logging_steps": 1,
        "train.cutoff_len": 128,
    }
    data = lb.form_values(web.board, {**base, **values})
    data[web.app.train.name] = name
    data[web.app.train.message] = message
    return data


def save(web, user: str, name: str, **values) -> str:
    text, _yaml = web.app.train.on_save(form(web, name, **values), request_for(user))
    return text


def cr_id_of(text: str) -> int:
    m = re.search(r"change request #(\d+)", text)
    assert m, text
    return int(m.group(1))


def test_save_to_repo_commits_the_form_on_a_branch_with_a_change_request(web):
    text, saved = web.app.train.on_save(form(web, "lr-rank"), request_for("alice"))
    cr = cr_id_of(text)
    assert "branch `alice/lr-rank`" in text
    commit = web.env.origin_git("rev-parse", "refs/heads/alice/lr-rank").strip()
    assert commit in text
    content = web.env.origin_git("show", f"{commit}:configs/lr-rank.yaml")
    assert content == saved["value"]
    for line in ("learning_rate: 0.0002", "lora_rank: 16", "dataset_dir: data", "output_dir: saves/lr-rank"):
        assert line in content.splitlines(), line
    assert "trust_remote_code" not in content and "preprocessing_num_workers" not in content
    with web.env.ws.store.session() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.subject == f"change_request:{cr}")).one()
        assert (event.actor, event.action) == ("alice", "config.save")


@pytest.mark.parametrize(
    ("name", "values", "message", "expected"),
    [
        ("bad-lr", {"train.learning_rate": "fast"}, "m", "Learning rate: must be a number (got 'fast')"),
        ("bad name", {}, "m", "config name: 'bad name' is not allowed"),
        ("no-message", {}, "", "message: say what changes and why"),
        ("no-data", {"train.dataset": ["nope"]}, "m", "dataset: 'nope' is not defined in data/dataset_info.json"),
        ("ds", {"train.ds_stage": "3"}, "m", "DeepSpeed stage: DeepSpeed stages point at LlamaBoard's cache"),
        ("key", {"train.extra_args": '{"hf_hub_token": "hf_x"}'}, "m", "hf_hub_token: secrets never go"),
    ],
)
def test_bad_input_names_the_field_and_changes_nothing(web, name, values, message, expected):
    before = snapshot(web.env)
    text, saved = web.app.train.on_save(form(web, name, message, **values), request_for("alice"))
    assert text.startswith("**Not saved:**") and expected in plain(text), text
    assert saved == {"visible": False, "__type__": "update"}
    assert snapshot(web.env) == before


def test_a_signed_out_or_deactivated_user_cannot_save(web):
    before = snapshot(web.env)
    assert "sign in first" in plain(save(web, None, "anon"))
    with web.env.ws.store.session() as s:
        add_user(s, "gone", "analyst", "gone-password-1").active = False
    assert "no longer active" in plain(save(web, "gone", "gone"))
    assert snapshot(web.env)[0] == before[0]  # nothing reached the remote


def test_two_analysts_saving_at_the_same_moment_get_their_own_change_requests(web):
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def analyst(user: str) -> None:
        data = form(web, "same-moment")
        barrier.wait()
        results[user] = web.app.train.on_save(data, request_for(user))[0]

    threads = [threading.Thread(target=analyst, args=(u,)) for u in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = {user: cr_id_of(text) for user, text in results.items()}
    assert len(set(ids.values())) == 2
    with web.env.ws.store.session() as s:
        rows = s.execute(select(ChangeRequest.id, ChangeRequest.branch).where(ChangeRequest.id.in_(ids.values())))
        assert sorted(b for _i, b in rows) == ["alice/same-moment", "bob/same-moment"]
    for branch in ("alice/same-moment", "bob/same-moment"):
        web.env.origin_git("rev-parse", "--verify", f"refs/heads/{branch}")


def test_roles_decide_what_is_offered(web):
    gates = web.ctx.gates
    review = web.app.review

    def offered(user: str | None) -> dict:
        who, *updates = web.ctx.on_load(request_for(user))
        return {"who": who, **{id(g[0]): u["visible"] for g, u in zip(gates, updates, strict=True)}}

    alice, rita, anonymous = offered("alice"), offered("rita"), offered(None)
    assert "Signed in as **alice** (analyst" in alice["who"] and "Sign out" in alice["who"]
    for button in (review.approve_btn, review.changes_btn, review.merge_btn):
        assert alice[id(button)] is False and rita[id(button)] is True and anonymous[id(button)] is False
    assert alice[id(review.reviewer_note)] is True and rita[id(review.reviewer_note)] is False
    assert alice[id(web.app.train.save_btn)] is True and anonymous[id(web.app.train.save_btn)] is False
    assert anonymous["who"].startswith("Not signed in")
    admin = offered("admin")
    assert admin[id(web.app.train.override_box)] is True and alice[id(web.app.train.override_box)] is False


def test_only_an_admin_launches_outside_the_policy_and_must_say_why(web):
    train = web.app.train
    save(web, "alice", "override-me")  # saved, never reviewed
    commit = web.env.origin_git("rev-parse", "refs/heads/alice/override-me").strip()
    path = "configs/override-me.yaml"
    before = snapshot(web.env)
    refused = plain(train.on_override(commit, path, "urgent", request_for("alice")))
    assert "alice (analyst) may not launch unapproved commits" in refused
    assert "override: give a reason" in plain(train.on_override(commit, path, "  ", request_for("admin")))
    assert "target: give a commit" in plain(train.on_override("", path, "urgent", request_for("admin")))
    assert snapshot(web.env) == before


def test_review_shows_the_changes_and_the_backend_decides_who_may_act(web):
    cr = cr_id_of(save(web, "alice", "review-me"))
    review = web.app.review
    shown = review.on_show(cr, False, False, request_for("rita"))
    header, _title, params, _diff_title, diff, _since, _since_diff, validation, reviews = shown[:9]
    assert f"#{cr}" in header and "alice/review-me" in header
    assert "learning_rate: 0.0002" in diff and "lora_rank: 16" in diff
    changed = {row[0]: row for row in params}
    assert changed["learning_rate"][1:] == ["5e-05", "0.0002", "changed"]
    assert changed["lora_rank"][2] == "16"
    assert "ok: the config validates" in validation and "none yet" in reviews

    before = snapshot(web.env)
    assert "alice (analyst) may not approve" in plain(review.on_approve(cr, "mine is fine", request_for("alice")))
    assert "alice (analyst) may not merge" in plain(review.on_merge(cr, "", request_for("alice")))
    assert "sign in first" in plain(review.on_approve(cr, "", request_for(None)))
    assert snapshot(web.env) == before

    assert "not approved" in plain(review.on_merge(cr, "", request_for("rita")))
    assert "comment: say what should change" in plain(review.on_request_changes(cr, "", request_for("rita")))
    assert f"#{cr} approved" in review.on_approve(cr, "LR and rank look right", request_for("rita"))
    main_before = web.ctx.workdir.refresh_data()
    assert f"#{cr} merged" in review.on_merge(cr, "", request_for("rita"))
    assert web.ctx.workdir.data.resolve().name != main_before  # LlamaBoard's data/ follows the new main
    rows = review.on_list("merged", "alice", request_for("alice"))
    assert [r[0] for r in rows if r[0] == cr] == [cr]
    assert review.on_list("open", "nobody", request_for("alice")) == []
    reviews = review.on_show(cr, False, False, request_for("alice"))[8]
    assert "**rita** approved" in reviews and "LR and rank look right" in plain(reviews)
    with web.env.ws.store.session() as s:
        actions = s.scalars(select(AuditEvent.action).where(AuditEvent.subject == f"change_request:{cr}")).all()
        assert actions == ["config.save", "review.approved", "review.merge"]


def test_data_of_main_is_what_llamaboard_lists(web, tmp_path):
    """A dataset added on main (here by a plain Git push) appears in LlamaBoard's dropdown after the refresh."""
    clone = tmp_path / "clone"
    git_clone(web.env.origin, clone)
    info_path = clone / "data" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["demo_copy"] = dict(info["demo_arith"])
    info_path.write_text(json.dumps(info, indent=2))
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@x"]
    subprocess.run([*git, "commit", "-qam", "add demo_copy"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD:main"], check=True)
    assert "demo_copy" not in {c[0] for c in list_datasets("data").choices}
    web.ctx.workdir.refresh_data()
    assert {"demo_arith", "demo_copy"} <= {c[0] for c in list_datasets("data").choices}
    exported = web.ctx.workdir.data / "dataset_info.json"
    assert stat.S_IMODE(exported.stat().st_mode) == 0o444  # read-only: the repository is where data changes


@pytest.mark.slow
def test_launch_trains_an_approved_config_and_runs_tab_shows_it(web):
    """Two launches of one merged change request train the tiny model; the Runs tab lists, plots and compares them,
    and the registered model's lineage is drawn."""
    review, train = web.app.review, web.app.train
    cr = cr_id_of(save(web, "alice", "to-launch"))
    choices, button, reason, _listed = train.on_offer(None, None, request_for("alice"))
    assert cr not in [c[1] for c in choices["choices"]]
    review.on_approve(cr, "ok", request_for("rita"))
    review.on_merge(cr, "", request_for("rita"))
    choices, button, reason, _listed = train.on_offer(None, None, request_for("alice"))
    assert cr in [c[1] for c in choices["choices"]] and button["interactive"] is True and reason == ""
    assert choices["value"] is None  # nothing preselected: the list shows every merged request
    unmerged = cr_id_of(save(web, "alice", "not-reviewed"))
    assert "only merged change requests can be launched" in plain(
        train.on_launch(unmerged, request=request_for("alice"))
    )

    web.env.ws.runs.start_monitor(0.5)
    first = train.on_launch(cr, request=request_for("alice"))
    second = train.on_launch(cr, request=request_for("bob"))
    assert first.startswith("**Run #") and second.startswith("**Run #"), (first, second)
    runs = web.app.runs

    def finished() -> list | None:
        rows = runs.on_list("all", "to-launch", "", request_for("rita"))
        return rows if len(rows) == 2 and all(r[1] in ("succeeded", "failed", "lost") for r in rows) else None

    rows = wait_for(finished, timeout=300, what="both runs to finish")
    assert [r[1] for r in rows] == ["succeeded", "succeeded"], runs.on_show(rows[0][0], [], request_for("rita"))[0]
    run_ids = sorted(r[0] for r in rows)
    assert runs.on_list("all", "", "bob", request_for("rita"))[0][0] == run_ids[1]
    info, progress, curves_pick, curves, log, cancel, lineage, model = runs.on_show(
        run_ids[0], ["loss", "lr"], request_for("alice")
    )
    assert f"Run #{run_ids[0]} — succeeded" in info and "train_loss" in info and f"model version `{model}`" in info
    assert re.search(r"succeeded · step (\d+) / \1 \(100%\)", progress), progress
    assert {"loss", "lr"} <= set(curves_pick["choices"]) and curves_pick["value"] == ["loss", "lr"]
    assert not set(curves_pick["choices"]) & {"total_steps", "percentage", "elapsed_s", "remaining_s", "epoch"}
    loss = web.env.ws.runs.metrics(web.env.actor("alice"), run_ids[0], ("loss",))["loss"]
    assert set(curves["value"]["metric"]) == {"loss", "lr"} and len(curves["value"]) == 2 * len(loss) > 0
    assert curves["caption"].startswith(f"loss {loss[-1][1]:.4g} at step {loss[-1][0]} · lr ")
    assert "train_runtime" in log or "***** train metrics *****" in log, log
    assert cancel["visible"] is False and lineage["visible"] is True  # finished: no Cancel; its model's lineage
    assert lineage["value"] == f"Lineage of {model}"
    table, curves = runs.on_compare(f"{run_ids[0]}, {run_ids[1]}", request_for("alice"))
    assert list(table.columns) == ["parameter", f"run #{run_ids[0]}", f"run #{run_ids[1]}"]
    assert table.iloc[-1, 0] == "final train_loss" and curves is not None

    assert "may not cancel" in plain(runs.on_cancel(run_ids[1], request_for("alice")))  # bob's run, not alice's
    ref = wait_for(lambda: runs.on_models(request_for("alice"))["choices"], timeout=60, what="registration")[0]
    facts, graph = runs.on_lineage(ref, request_for("alice"))
    assert f"change request #{cr}" in facts and "approved by rita" in facts and graph is not None
    with web.env.ws.store.session() as s:
        launches = s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "run.launch"))
        assert launches == 2
