"""The WebUI's Open from repo, Update change request #N and the Review tab's revision view, driven in this process
over a real workspace (Git remote, SQLite, LlamaBoard's form)."""

from __future__ import annotations

import json
import os

import gradio as gr
import pytest

from tests.snapshots import snapshot
from tests.webui_fixtures import build_in_process, plain, request_for
from tests.workspace_fixtures import make_env
from webui import llamaboard as lb


@pytest.fixture(scope="module")
def web(template_workspace, tmp_path_factory):
    cwd = os.getcwd()
    env = make_env(template_workspace, tmp_path_factory.mktemp("rounds") / "ws")
    try:
        yield build_in_process(env)
    finally:
        os.chdir(cwd)
        env.ws.store.dispose()


def opened_form(web, user: str, key: str, **changes) -> tuple[dict, dict]:
    """Open `key` as `user` would (the form as LlamaBoard starts), then change fields by LlamaBoard id."""
    train = web.app.train
    data = lb.form_values(web.board, {"top.lang": "en"})
    data[train.open_choice] = key
    out = train.on_open(data, request_for(user))
    assert train.opened in out, plain(out[train.open_result])
    opened = json.loads(out[train.opened])
    form = lb.form_values(web.board, {**opened["form"], **changes})
    return form, out


def save_form(web, user: str, form: dict, opened: dict | None, name: str, message: str, target: str = "") -> str:
    train = web.app.train
    form = {**form, train.name: name, train.message: message, train.opened: opened, train.target: target}
    text, _yaml = train.on_save(form, request_for(user))
    return plain(text)


def cr_of(text: str) -> int:
    import re

    found = re.search(r"change request #(\d+)", text)
    assert found, text
    return int(found.group(1))


def test_a_one_value_change_from_an_opened_config_shows_one_changed_row(web):
    train, review = web.app.train, web.app.review
    choices, _targets, _shown = train.on_openable(None, request_for("alice"))
    assert ("main: configs/example.yaml", "main:configs/example.yaml") in choices["choices"]
    form, out = opened_form(web, "alice", "main:configs/example.yaml", **{"train.learning_rate": "2e-4"})
    assert "Opened `configs/example.yaml`" in plain(out[train.open_result])
    assert out[web.board.elem("train.lora_rank")] == 8 and out[web.board.elem("train.learning_rate")] == "0.001"
    text = save_form(web, "alice", form, out[train.opened], "example-lr", "LR 2e-4")
    cr = cr_of(text)
    shown = review.on_show(cr, False, False, request_for("rita"))
    header, title, params, diff_title, diff = shown[:5]
    assert "opened from `configs/example.yaml at" in header
    assert [row[0] for row in params] == ["learning_rate"], params  # ONE changed row
    assert params[0][1:] == ["0.001", "0.0002", "changed"]
    assert "1 changed" in title and "configs/example.yaml at" in diff_title
    assert "learning_rate: 0.0002" in diff and "lora_rank" not in diff
    defaults = review.on_show(cr, False, True, request_for("rita"))
    assert "LLaMA-Factory default" in defaults[1] and len(defaults[2]) > 5  # the defaults, on request


def test_update_change_request_from_its_own_head_after_changes_were_requested(web):
    train, review = web.app.train, web.app.review
    form, out = opened_form(web, "alice", "main:configs/example.yaml", **{"train.lora_rank": 16})
    cr = cr_of(save_form(web, "alice", form, out[train.opened], "example-rank", "rank 16"))
    assert "sent back" in plain(review.on_request_changes(cr, "and 3 epochs", request_for("rita")))

    _choices, targets, _shown = train.on_openable(None, request_for("alice"))
    assert (f"update change request #{cr} (configs/example-rank.yaml)", str(cr)) in targets["choices"]
    form, out = opened_form(web, "alice", f"cr:{cr}", **{"train.num_train_epochs": "3"})
    assert out[train.target]["value"] == str(cr)  # her own request under review: Save revises it
    text = save_form(web, "alice", form, out[train.opened], "", "3 epochs as asked", target=str(cr))
    assert f"Updated: change request #{cr}" in text
    header, title, params, _dt, _diff, since, since_diff, _validation, reviews, *buttons = review.on_show(
        cr, False, False, request_for("rita")
    )
    assert "— open" in header and "changes requested" in reviews  # the history stays on the one request
    assert {row[0] for row in params} == {"lora_rank", "num_train_epochs"}  # against the opened base
    assert "Changed since the last review" in since and "num_train_epochs" in plain(since)
    assert "num_train_epochs: 3.0" in since_diff
    approve, changes, merge, close = buttons
    assert approve["visible"] and changes["visible"] and not merge["visible"]


def test_only_the_author_may_update_and_the_refusal_changes_nothing(web):
    train = web.app.train
    form, out = opened_form(web, "alice", "main:configs/example.yaml", **{"train.lora_rank": 4})
    cr = cr_of(save_form(web, "alice", form, out[train.opened], "example-r4", "rank 4"))
    before = snapshot(web.env)
    text = save_form(web, "rita", form, out[train.opened], "", "mine now", target=str(cr))
    assert "Not saved" in text and f"only alice, its author, can update change request #{cr}" in text
    assert snapshot(web.env) == before


def test_merged_requests_offer_no_approve_or_merge_and_the_list_shows_labels(web):
    train, review = web.app.train, web.app.review
    form, out = opened_form(web, "alice", "main:configs/example.yaml", **{"train.lora_rank": 32})
    cr = cr_of(save_form(web, "alice", form, out[train.opened], "example-r32", "rank 32"))
    review.on_request_changes(cr, "hmm", request_for("rita"))
    rows = review.on_list("all", "", request_for("rita"))
    assert [r[1] for r in rows if r[0] == cr] == ["changes requested"]  # the label, not `changes_requested`
    review.on_approve(cr, "fine", request_for("rita"))
    assert f"#{cr} merged" in review.on_merge(cr, "", request_for("rita"))
    *_, approve, changes, merge, close = review.on_show(cr, False, False, request_for("rita"))
    assert not any(b["visible"] for b in (approve, changes, merge, close))


def test_a_focused_list_is_sent_again_only_when_its_choices_changed(web):
    """Gradio filters new choices by the chosen option's label: Launch's list, refreshed on focus after a first
    launch, showed only that first request. A list is now sent only when it changed, and then with nothing chosen."""
    train, review = web.app.train, web.app.review
    sources, targets, shown = train.on_openable(None, request_for("alice"))
    assert sources["value"] is None
    assert ("main: configs/example.yaml", "main:configs/example.yaml") in sources["choices"]
    assert "value" not in targets  # "Save as" stays on "a new change request"
    assert train.on_openable(shown, request_for("alice"))[:2] == (gr.update(), gr.update())  # nothing new

    launchable, _button, _reason, listed = train.on_offer(None, None, request_for("alice"))
    merged = []
    for name in ("focus-one", "focus-two"):
        form, out = opened_form(web, "alice", "main:configs/example.yaml", **{"train.learning_rate": "3e-4"})
        cr = cr_of(save_form(web, "alice", form, out[train.opened], name, name))
        review.on_approve(cr, "ok", request_for("rita"))
        review.on_merge(cr, "", request_for("rita"))
        merged.append(cr)
        if name == "focus-one":
            launchable, _button, _reason, listed = train.on_offer(None, listed, request_for("alice"))
            assert [c[1] for c in launchable["choices"]].count(cr) == 1
            assert train.on_offer(cr, listed, request_for("alice"))[0] == gr.update()  # chosen, nothing new: kept
    launchable, *_rest = train.on_offer(merged[0], listed, request_for("alice"))  # #1 chosen, #2 merged since
    assert {*merged} <= {c[1] for c in launchable["choices"]} and launchable["value"] is None  # all of it listed

    sources, targets, _shown = train.on_openable(shown, request_for("alice"))
    assert {"main:configs/focus-one.yaml", "main:configs/focus-two.yaml"} <= {c[1] for c in sources["choices"]}
    assert sources["value"] is None and targets == gr.update()  # merged: none of hers is under review any more
