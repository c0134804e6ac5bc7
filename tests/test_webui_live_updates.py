"""The Runs tab's live updates, driven in this process: a page's long poll (`GET lfops/runs/wait`, the app as `lfops
webui` serves it) waits while nothing moves, is refused to a page not signed in, and answers when a run moves; the
wake it leads to renders what the page shows at that moment (its filters, its run), not what it showed before."""

from __future__ import annotations

import os
import threading
import time

import gradio as gr
import pytest
from fastapi.testclient import TestClient

from tests.runs_fixtures import log_line, run_row
from tests.webui_fixtures import build_in_process
from webui import live
from webui import llamaboard as lb

SKIP = gr.skip()


@pytest.fixture
def app(env, monkeypatch):
    cwd = os.getcwd()
    monkeypatch.setattr(live, "IDLE_WAIT_S", 0.3)
    monkeypatch.setattr(live, "ACTIVE_WAIT_S", 0.3)
    try:
        yield build_in_process(env)
    finally:
        os.chdir(cwd)


def page(name: str, session: str) -> gr.Request:
    return gr.Request(username=name, session_hash=session)


def signed_in(client: TestClient, env, name: str) -> TestClient:
    answer = client.post("/login", data={"username": name, "password": env.passwords[name]})
    assert answer.status_code == 200, answer.text
    return client


def test_a_wait_answers_only_when_runs_move_and_only_to_a_signed_in_page(app, env):
    from webui.app import asgi_app

    changes = env.ws.runs.changes
    changes.observe()  # the monitor's first look
    with TestClient(asgi_app(app.ctx, app.app)) as client:
        refused = client.get("/lfops/runs/wait?since=-1")  # not signed in
        assert refused.status_code == 401 and "revision" not in refused.json()
        signed_in(client, env, "alice")
        now = client.get("/lfops/runs/wait?since=-1").json()  # behind: answered at once
        assert now == {"revision": changes.revision, "active": False}
        started = time.monotonic()
        assert client.get(f"/lfops/runs/wait?since={now['revision']}").json() == now  # nothing moved: ran out
        assert time.monotonic() - started >= 0.3

        live.IDLE_WAIT_S = 30.0  # a run moving ends the wait long before that
        answers: list[dict] = []
        waiting = threading.Thread(
            target=lambda: answers.append(client.get(f"/lfops/runs/wait?since={now['revision']}").json())
        )
        waiting.start()
        time.sleep(0.5)
        run_id, _out = run_row(env, status="running")
        changes.observe()
        waiting.join(10)
        assert answers == [{"revision": changes.revision, "active": False}] and changes.revision > now["revision"]
        shown = client.get(f"/lfops/runs/wait?since={changes.revision}&run={run_id}").json()
        assert shown["active"] is True  # the page shows an unfinished run: it wakes to move the elapsed time


def test_a_wake_renders_nothing_until_a_run_moves_then_the_page_as_it_is(app, env):
    tab = app.app.runs
    changes = env.ws.runs.changes
    changes.observe()  # the monitor's first look
    alice, rita = page("alice", "page-a"), page("rita", "page-r")
    seen, rows = tab.on_open("all", "", "", 1, alice)
    seen_r, _rows = tab.on_open("all", "", "", 1, rita)
    assert rows == [] and tab.on_pulse(seen, alice) == (SKIP,) * 10  # nothing moved: nothing rendered
    assert tab.on_pulse(-1, alice) == (SKIP,) * 10  # a page not loaded yet

    run_id, out = run_row(env, status="running")
    changes.observe()
    tab.on_list("all", "no-such-config", "", rita)  # rita filtered her list meanwhile
    revision, rows, *panel = tab.on_pulse(seen, alice)
    assert revision == changes.revision and [r[0] for r in rows] == [run_id] and [r[1] for r in rows] == ["running"]
    assert panel == [SKIP] * 8  # alice shows no run
    _revision, rows_r, *_ = tab.on_pulse(seen_r, rita)
    assert rows_r == []  # rendered with rita's filters of now
    assert tab.on_pulse(revision, alice) == (SKIP,) * 10  # seen: nothing more to show

    shown = tab.on_show(run_id, [], alice)
    assert f"Run #{run_id} — running" in shown[0] and shown[5]["visible"] is True  # hers, unfinished: Cancel
    elapsed = tab.on_pulse(revision, alice)  # shows an unfinished run: the elapsed time moves
    assert elapsed[:3] == (SKIP, SKIP, SKIP) and "running" in elapsed[3]  # only the progress bar is rendered again
    (out / "trainer_log.jsonl").write_text(log_line(1, 4, "0:00:01", "0:00:03", loss=2.0))
    from backend.runs.ingest import ingest_log

    ingest_log(env.ws.store, run_id, out)
    changes.observe()
    _rev, rows, info, progress, curves_pick, plot, log, cancel, lineage, model = tab.on_pulse(revision, alice)
    assert "step 1 / 4 (25%)" in progress and "about 0:00:03 left" in progress
    assert curves_pick["value"] == ["loss"] and plot["caption"] == "loss 2 at step 1"
    assert cancel["visible"] is True and lineage["visible"] is False and model == ""


def test_no_timer_ticks_without_an_accelerator(app):
    """LlamaBoard's footer's one output, the accelerator's memory, stays hidden on a machine without one: no request
    every 5 s from every open page. The Runs tab has no timer (its page long-polls over plain HTTP)."""
    from llamafactory.extras.misc import get_current_memory

    if get_current_memory()[1] != -1:
        pytest.skip("this machine has an accelerator: the footer shows its memory")
    blocks = app.app.blocks
    timers = {t: t.active for t in blocks.blocks.values() if isinstance(t, gr.Timer)}
    assert timers == {lb.quiet_footer(blocks): False}
