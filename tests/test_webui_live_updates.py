"""The Runs tab's live updates, driven in this process: a tick waits while nothing moves and renders nothing; when a
run moves it renders what the page shows at that moment (its filters, its run), not what it showed when it began."""

from __future__ import annotations

import asyncio
import os

import gradio as gr
import pytest

from tests.runs_fixtures import log_line, run_row
from tests.webui_fixtures import build_in_process
from webui import llamaboard as lb
from webui import runs_tab as runs_module

SKIP = gr.skip()


@pytest.fixture
def app(env, monkeypatch):
    cwd = os.getcwd()
    monkeypatch.setattr(runs_module, "IDLE_WAIT_S", 0.3)
    monkeypatch.setattr(runs_module, "ACTIVE_WAIT_S", 0.3)
    try:
        yield build_in_process(env).app
    finally:
        os.chdir(cwd)


def page(name: str, session: str) -> gr.Request:
    return gr.Request(username=name, session_hash=session)


def test_a_tick_renders_nothing_until_a_run_moves_then_the_page_as_it_is(app, env):
    tab = app.runs
    changes = env.ws.runs.changes
    changes.observe()  # the monitor's first look
    alice, rita = page("alice", "page-a"), page("rita", "page-r")
    seen, rows = tab.on_open("all", "", "", 1, alice)
    seen_r, _rows = tab.on_open("all", "", "", 1, rita)
    assert rows == [] and asyncio.run(tab.on_tick(seen, 0, alice)) == SKIP  # nothing runs: the tick waited, no pulse
    assert asyncio.run(tab.on_tick(-1, 0, alice)) == SKIP  # a page not loaded yet

    run_id, out = run_row(env, status="running")
    changes.observe()
    assert asyncio.run(tab.on_tick(seen, 0, alice)) == 1  # a new run: the page's pulse moves
    tab.on_list("all", "no-such-config", "", rita)  # rita filtered her list meanwhile
    revision, rows, *panel = tab.on_pulse(seen, alice)
    assert revision == changes.revision and [r[0] for r in rows] == [run_id] and [r[1] for r in rows] == ["running"]
    assert panel == [SKIP] * 8  # alice shows no run
    _revision, rows_r, *_ = tab.on_pulse(seen_r, rita)
    assert rows_r == []  # rendered with rita's filters of now
    assert asyncio.run(tab.on_tick(revision, 1, alice)) == SKIP  # seen: nothing more to show

    shown = tab.on_show(run_id, [], alice)
    assert f"Run #{run_id} — running" in shown[0] and shown[5]["visible"] is True  # hers, unfinished: Cancel
    assert asyncio.run(tab.on_tick(revision, 1, alice)) == 2  # shows an unfinished run: the elapsed time moves
    assert tab.on_pulse(revision, alice)[:3] == (SKIP, SKIP, SKIP)  # only the progress bar is rendered again
    (out / "trainer_log.jsonl").write_text(log_line(1, 4, "0:00:01", "0:00:03", loss=2.0))
    from backend.runs.ingest import ingest_log

    ingest_log(env.ws.store, run_id, out)
    changes.observe()
    _rev, rows, info, progress, curves_pick, plot, log, cancel, lineage, model = tab.on_pulse(revision, alice)
    assert "step 1 / 4 (25%)" in progress and "about 0:00:03 left" in progress
    assert curves_pick["value"] == ["loss"] and plot["caption"] == "loss 2 at step 1"
    assert cancel["visible"] is True and lineage["visible"] is False and model == ""


def test_llamaboards_footer_does_not_tick_without_an_accelerator(app):
    """Its one output, the accelerator's memory, stays hidden on a machine without one: no request every 5 s from
    every open page. The Runs tab's own timer stays on (its tick waits for a change)."""
    from llamafactory.extras.misc import get_current_memory

    if get_current_memory()[1] != -1:
        pytest.skip("this machine has an accelerator: the footer shows its memory")
    timers = {t: t.active for t in app.blocks.blocks.values() if isinstance(t, gr.Timer)}
    assert timers == {app.runs.timer: True, lb.quiet_footer(app.blocks): False}
