"""What a live page and `lfops runs wait` read of a run: its progress as LLaMA-Factory logs it, what moved since a
revision (backend.runs.changes), the tail of its log, and whether Cancel is offered.

Runs here are rows with LLaMA-Factory's files written beside them as LLaMA-Factory writes them (the lines are the
format of callbacks.LogCallback.on_log in 0.9.5); the real training run is checked in test_runs_training.py and in the
browser (test_webui_live_runs.py).
"""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import threading

import pytest
from sqlalchemy import update

from backend.cli.runs import ProgressLine
from backend.errors import Conflict, NotFound, PermissionDenied
from backend.runners.base import RunState
from backend.runs import RunProgress, fmt_duration
from backend.runs.ingest import ingest_log
from backend.runs.progress import duration_seconds
from backend.store.models import Run, utcnow
from tests.helpers import LFOPS, lfops_env
from tests.runs_fixtures import approved_merge, log_line, run_row


def test_durations_read_as_llamafactory_writes_them():
    assert duration_seconds("0:00:07") == 7
    assert duration_seconds("1:02:03") == 3723
    assert duration_seconds("1 day, 0:00:01") == 86401
    assert duration_seconds("2 days, 3:00:00") == 2 * 86400 + 3 * 3600
    for text in ("", "soon", "7", None, 7, "0:7:00"):
        assert duration_seconds(text) is None, text
    assert fmt_duration(3723.4) == "1:02:03" and fmt_duration(None) == ""


def test_progress_is_kept_while_training_and_complete_at_the_end(env):
    alice = env.actor("alice")
    run_id, out = run_row(env)
    assert env.ws.runs.progress(alice, run_id).step is None  # nothing logged yet: running, no step
    log = out / "trainer_log.jsonl"
    log.write_text(log_line(1, 8, "0:00:02", "0:00:14", loss=2.5) + log_line(2, 8, "0:00:04", "0:00:12", loss=2.4))
    with log.open("a") as fh:
        fh.write(log_line(3, 8, "0:00:06", "0:00:10", loss=2.3)[:20])  # LLaMA-Factory is still writing this one
    assert ingest_log(env.ws.store, run_id, out) > 0
    progress = env.ws.runs.progress(alice, run_id)
    assert (progress.step, progress.total_steps, progress.percentage, progress.remaining_s) == (2, 8, 25.0, 12.0)
    assert progress.fraction == 0.25 and progress.elapsed_s is not None
    assert progress.summary().startswith("running · step 2 / 8 (25%) · 0:00:0")
    assert progress.summary().endswith("elapsed, about 0:00:12 left")
    assert progress.bar(8) == "[##------]"
    # the curves offered to plot are the metrics, not the progress bookkeeping
    assert env.ws.runs.metric_keys(alice, run_id) == ["loss", "lr"]

    with log.open("a") as fh:  # the rest of step 3, then the last step twice (the second time without the loss)
        fh.write(log_line(3, 8, "0:00:06", "0:00:10", loss=2.3)[20:])
        fh.write(log_line(8, 8, "0:00:16", "0:00:00", loss=2.0) + log_line(8, 8, "0:00:17", "0:00:00"))
    ingest_log(env.ws.store, run_id, out)
    assert env.ws.runs.progress(alice, run_id).step == 8
    assert env.ws.runs.metrics(alice, run_id, ("elapsed_s",))["elapsed_s"] == [(1, 2), (2, 4), (3, 6), (8, 16)]
    with env.ws.store.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(status="succeeded", finished_at=utcnow()))
    done = env.ws.runs.progress(alice, run_id)
    assert done.finished and done.remaining_s == 0 and done.fraction == 1.0
    assert done.summary().startswith("succeeded · step 8 / 8 (100%) · ") and "left" not in done.summary()


def test_progress_before_anything_is_known():
    queued = RunProgress(1, "queued", None, None, None, None, None)
    assert queued.summary() == "queued" and queued.bar(4) == "[....]" and queued.fraction is None
    waiting = RunProgress(1, "pending", None, None, None, 3.0, None)
    assert waiting.summary() == "waiting for resources · 0:00:03 elapsed"
    assert RunState("lost").label == "lost by its runner"


def test_what_moved_is_seen_once_and_only_when_something_moved(env):
    changes = env.ws.runs.changes
    heard: list[int] = []
    changes.subscribe(heard.append)
    assert changes.observe() == []  # the first look takes the picture
    assert changes.observe() == [] and changes.revision == 0 and heard == []  # nothing runs: nothing moves

    run_id, out = run_row(env, status="queued")  # a new run (launched by any process)
    assert changes.observe() == [run_id]
    first = changes.revision
    assert heard == [first] and changes.moved(0, run_id).runs and changes.moved(0, run_id).run
    assert not changes.moved(first, run_id).anything

    (out / "trainer_log.jsonl").write_text(log_line(1, 4, "0:00:01", "0:00:03", loss=1.0))
    ingest_log(env.ws.store, run_id, out)  # a step logged: the run moved (and its row in the list)
    assert changes.observe() == [run_id]
    moved = changes.moved(first, run_id)
    assert moved.run and moved.runs and not changes.moved(first, run_id + 1).run

    waiter: list[int] = []
    thread = threading.Thread(target=lambda: waiter.append(changes.wait(changes.revision, timeout=60)))
    thread.start()
    with env.ws.store.session() as s:  # it ends (here: as another process would record it)
        s.execute(update(Run).where(Run.id == run_id).values(status="failed", finished_at=utcnow()))
    assert changes.observe() == [run_id]
    thread.join(60)
    assert waiter == [changes.revision] and changes.moved(moved.revision, run_id).runs
    assert changes.observe() == [] and changes.observe() == []  # a finished run moves no more
    assert changes.wait(changes.revision, timeout=0.01) == changes.revision  # nothing to wake for
    changes.unsubscribe(heard.append)
    assert len(heard) == 3


def test_a_run_that_came_and_went_between_two_looks_is_still_news(env):
    changes = env.ws.runs.changes
    changes.observe()
    run_id, _out = run_row(env, status="succeeded")  # e.g. `lfops launch --wait` in another process, all done
    assert changes.observe() == [run_id] and changes.moved(0).runs


def test_log_tail_is_bounded_and_read_like_run_details(env):
    alice = env.actor("alice")
    run_id, out = run_row(env)
    log = out.parent / "train.log"
    lines = [f"line {i}" for i in range(5000)]
    bars = "\r".join(f"100%|{'#' * i}| {i}/8" for i in range(9))  # tqdm redraws one line with carriage returns
    log.write_text("\n".join(lines) + "\n" + bars + "\nlast line\n")
    tail = env.ws.runs.log_tail(alice, run_id, max_lines=3)
    assert tail == ["line 4999", "100%|########| 8/8", "last line"]
    small = env.ws.runs.log_tail(alice, run_id, max_lines=10_000, max_bytes=2048)
    assert 0 < len(small) < 250 and small[-1] == "last line" and small[0].startswith("line ")
    assert len(env.ws.runs.log_tail(alice, run_id, max_lines=10**9, max_bytes=10**12)) <= 5000
    with pytest.raises(PermissionDenied, match="sign in"):
        env.ws.runs.log_tail(None, run_id)
    with pytest.raises(NotFound):
        env.ws.runs.log_tail(alice, run_id + 1000)
    with pytest.raises(NotFound):
        env.ws.runs.log_tail(alice, 2**40)


def test_cancel_is_offered_to_whom_it_is_allowed_and_only_while_the_run_is_unfinished(env):
    alice, rita, admin = env.actor("alice"), env.actor("rita"), env.actor("admin")
    run_id, _out = run_row(env, status="running")
    view = env.ws.runs.get(alice, run_id)
    assert env.ws.runs.may_cancel(alice, view) and env.ws.runs.may_cancel(admin, view)
    assert not env.ws.runs.may_cancel(rita, view) and not env.ws.runs.may_cancel(None, view)
    with env.ws.store.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(status="succeeded", finished_at=utcnow()))
    view = env.ws.runs.get(alice, run_id)
    assert not env.ws.runs.may_cancel(alice, view) and not env.ws.runs.may_cancel(admin, view)
    with pytest.raises(Conflict, match=f"run #{run_id} is already succeeded"):
        env.ws.runs.cancel(alice, run_id)
    with pytest.raises(PermissionDenied, match=f"rita may not cancel run #{run_id} of alice"):
        env.ws.runs.cancel(rita, run_id)


# ---- the terminal: `lfops launch --wait`, `lfops runs wait` ---------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _states() -> list[RunProgress]:
    return [
        RunProgress(7, "queued", None, None, None, None, None),
        RunProgress(7, "running", None, None, None, 1.0, None),
        RunProgress(7, "running", None, None, None, 2.0, None),  # only the time moved
        RunProgress(7, "running", 1, 4, 25.0, 3.0, 9.0),
        RunProgress(7, "running", 4, 4, 100.0, 9.0, 0.0),
        RunProgress(7, "succeeded", 4, 4, 100.0, 10.0, 0.0),
    ]


def test_progress_on_a_terminal_is_one_line_redrawn_in_place(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = _Terminal()
    line = ProgressLine(out)
    for progress in _states():
        line(progress)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.count("\r") == 6
    last = text.rstrip("\n").rsplit("\r", 1)[-1]
    assert last.startswith("run #7 [########################] succeeded · step 4 / 4 (100%) · 0:00:10 elapsed")
    assert "run #7 [######------------------] running · step 1 / 4 (25%) · 0:00:03 elapsed, about 0:00:09 left" in text
    # a shorter line blanks what is left of the longer one before it
    queued, running = text.split("\r")[1:3]
    assert len(running) >= len(queued)


def test_progress_on_a_narrow_terminal_is_cut_to_fit(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    out = _Terminal()
    ProgressLine(out)(_states()[3])
    assert len(out.getvalue()) == 40 and out.getvalue().startswith("\rrun #7 [######")


def test_progress_elsewhere_is_a_line_per_step_or_status():
    out = io.StringIO()
    line = ProgressLine(out)
    for progress in _states():
        line(progress)
    lines = out.getvalue().splitlines()
    assert [ln.split(" ", 3)[3].split(" · ")[0] for ln in lines] == [
        "queued",
        "running",
        "running",
        "running",
        "succeeded",
    ]
    assert "\r" not in out.getvalue() and "step 1 / 4 (25%)" in lines[2]


@pytest.mark.slow
def test_launch_wait_shows_the_training_progress_in_a_terminal(env, tmp_path):
    """`lfops launch CR --wait` on a terminal (a pty): the progress line is redrawn as the tiny model trains."""
    cr, _commit = approved_merge(env, "cli-progress", per_device_train_batch_size=4)  # 8 steps
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [LFOPS, "launch", str(cr), "--wait", "--timeout", "300"],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=subprocess.STDOUT,
        env=lfops_env(env.ws.settings.workspace, "alice", env.passwords["alice"], COLUMNS="200"),
    )
    os.close(child)
    chunks = []
    try:
        while True:
            try:
                data = os.read(main, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        proc.wait(60)
        os.close(main)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, text
    drawn = [part for part in re.split(r"[\r\n]+", text) if part.startswith("run #") and "[" in part]
    steps = {int(m.group(1)) for part in drawn if (m := re.search(r"step (\d+) / 8", part))}
    # redrawn in place while it ran, up to the last step (on a loaded machine all 8 steps may land between two polls)
    assert len(drawn) >= 2 and 8 in steps, text
    assert any("running · step" in part and "left" in part for part in drawn), text
    assert re.search(r"\r\s*run #\d+ \[#+\] succeeded · step 8 / 8 \(100%\)", text), text
    assert "registered as cli-progress:v1" in text
