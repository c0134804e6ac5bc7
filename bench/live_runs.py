"""Live runs in the WebUI: how soon a page shows a run's change without any user action, and what open pages cost the
server while nothing runs.

    .venv/bin/python bench/live_runs.py [--runs 2] [--pages 10] [--window 20] [--windows 3] [--part idle]

`lfops webui` is started on a fresh workspace, as README starts it. Latency: a signed-in Chromium page keeps the Runs
tab open while `lfops launch` starts real training runs of the tiny model (16 steps, a log line each). The backend's
moments are read where they happen, polled every 10 ms by this process: the run's row in the database (a new run),
each step's line appearing in trainer_log.jsonl, and the wrapper's exit_code file (finished). The page's moments are
recorded in the page by a MutationObserver on the runs table and the progress bar (the same clock: one machine). The
page clicks the new run's row once (as a user would, to watch it). Each progress sample is tied to the run the panel's
heading names at that moment, so a previous run's state, on the page for a moment after the click, never counts for
the new run; steps logged before the panel first showed the new run are not counted.

Idle cost: the server's CPU time (its whole process tree) over windows of `--window` seconds with no page open, then
with `--pages` signed-in pages on the Runs tab, no run active; the median of `--windows` windows each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import LFOPS, median, percentile, print_table  # noqa: E402
from bench.webui_start import tree_usage  # noqa: E402
from tests.helpers import first_start_passwords  # noqa: E402
from tests.webui_fixtures import CHROMIUM, CHROMIUM_ARGS, start_webui  # noqa: E402

STEPS = 16
OBSERVER = """() => {
  window.__lfops = [];
  const last = {};
  new MutationObserver(() => {
    const info = document.getElementById('lfops-run-info');
    const shown = info ? info.innerText : '';  // which run the panel shows: its heading, "Run #N — ..."
    for (const id of ['lfops-runs-table', 'lfops-run-progress']) {
      const el = document.getElementById(id);
      const text = el ? el.innerText : '';
      const key = id === 'lfops-run-progress' ? shown + ' | ' + text : text;
      if (key !== last[id]) { last[id] = key; window.__lfops.push([Date.now() / 1000, id, text, shown]); }
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def lfops(workspace: Path, user: str, password: str, *args: str) -> str:
    env = {**os.environ, "LFOPS_WORKSPACE": str(workspace), "LFOPS_PASSWORD": password}
    done = subprocess.run([LFOPS, "--user", user, *args], capture_output=True, text=True, env=env, timeout=600)
    if done.returncode:
        raise RuntimeError(done.stdout + done.stderr)
    return done.stdout


def merged_config(workspace: Path, users: dict[str, str]) -> str:
    """The example config (16 steps, a log line each) saved, approved and merged: its change request."""
    config = subprocess.run(
        ["git", "-C", str(workspace / "origin.git"), "show", "main:configs/example.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = workspace.parent / "bench.yaml"
    path.write_text(config.replace("lora_rank: 8", "lora_rank: 4"))
    saved = lfops(workspace, "alice", users["alice"], "save", str(path), "--name", "bench", "-m", "bench")
    cr = re.search(r"change request #(\d+)", saved).group(1)
    lfops(workspace, "rita", users["rita"], "review", "approve", cr, "-c", "ok")
    lfops(workspace, "rita", users["rita"], "review", "merge", cr)
    return cr


def sign_in(browser, url: str, user: str, password: str):
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#lfops-whoami")).to_contain_text("Signed in", timeout=120_000)
    page.get_by_role("tab", name="Runs & lineage").click()
    return page


class BackendMoments(threading.Thread):
    """When each step's line appears in trainer_log.jsonl and when the run's exit_code file appears (10 ms polls)."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(daemon=True)
        self.run_dir = run_dir
        self.steps: dict[int, float] = {}
        self.finished: float | None = None

    def run(self) -> None:
        log, offset = self.run_dir / "output" / "trainer_log.jsonl", 0
        while self.finished is None:
            now = time.time()
            try:
                with open(log, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except FileNotFoundError:
                data = b""
            end = data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                step = json.loads(line).get("current_steps")
                self.steps.setdefault(step, now)
            offset += end
            if (self.run_dir / "exit_code").exists():
                self.finished = now
            time.sleep(0.01)


def created_at(workspace: Path, run_id: int) -> float:
    with sqlite3.connect(workspace / "lfops.db") as db:
        text = db.execute("SELECT created_at FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def first_shown(events: list, element: str, pattern: str, after: float = 0.0) -> float | None:
    for at, where, text, _shown in events:
        if where == element and at >= after and re.search(pattern, text, re.M):
            return at
    return None


def of_run(events: list, run_id: int) -> list:
    """The progress bar's events while the run panel shows run `run_id` (its heading, "Run #N — ..."): a previous
    run's state, still on the page for a moment after the click, is not this run's."""
    heading = re.compile(rf"Run #{run_id}\b")
    return [e for e in events if e[1] == "lfops-run-progress" and heading.search(e[3])]


def first_at_step(events: list, step: int) -> float | None:
    """When the progress bar first showed step `step` or a later one (two steps logged within one pass of the run
    monitor show as the later one)."""
    for at, _where, text, _shown in events:
        match = re.search(rf"step (\d+) / {STEPS}\b", text)
        if match and int(match.group(1)) >= step or "succeeded" in text:
            return at
    return None


def bench_latency(browser, server, workspace: Path, users: dict[str, str], cr: str, runs: int) -> dict[str, list]:
    from playwright.sync_api import expect

    page = sign_in(browser, server.url, "alice", users["alice"])
    page.wait_for_timeout(2000)
    page.evaluate(OBSERVER)
    samples: dict[str, list[float]] = {"new run listed": [], "step logged": [], "finished": []}
    for _ in range(runs):
        run_id = int(re.search(r"run #(\d+)", lfops(workspace, "alice", users["alice"], "launch", cr)).group(1))
        moments = BackendMoments(workspace / "runs" / f"run-{run_id:06d}")
        moments.start()
        first = page.locator("#lfops-runs-table tbody tr").first  # newest first
        expect(first.locator("td").first).to_have_text(re.compile(rf"^\s*{run_id}\s*$"), timeout=60_000)
        first.locator("td").nth(2).click(force=True)
        expect(page.locator("#lfops-run-info")).to_contain_text(f"Run #{run_id} ", timeout=60_000)
        expect(page.locator("#lfops-run-progress")).to_contain_text("succeeded", timeout=900_000)
        moments.join(60)
        events = page.evaluate("window.__lfops")
        page.evaluate("window.__lfops = []")
        shown = first_shown(events, "lfops-runs-table", rf"^{run_id}\s")
        if shown is not None:
            samples["new run listed"].append(shown - created_at(workspace, run_id))
        own = of_run(events, run_id)
        if not own:
            continue
        panel_from = own[0][0]  # the panel shows this run from here on
        for step, logged in sorted(moments.steps.items()):
            if logged > panel_from:
                at = first_at_step(own, step)
                if at is not None:
                    samples["step logged"].append(at - logged)
        at = first_shown(own, "lfops-run-progress", "succeeded")
        if at is not None and moments.finished is not None:
            samples["finished"].append(at - moments.finished)
    page.context.close()
    return samples


def bench_idle(browser, server, users: dict[str, str], pages: int, window: float, windows: int) -> dict[int, list]:
    pid = server.proc.pid
    cpu: dict[int, list[float]] = {0: [], pages: []}

    def measure(key: int) -> None:
        for _ in range(windows):
            before = tree_usage(pid)[1]
            time.sleep(window)
            cpu[key].append((tree_usage(pid)[1] - before) / window * 100)

    time.sleep(5)
    measure(0)
    opened = [
        sign_in(browser, server.url, ("alice", "rita")[i % 2], users[("alice", "rita")[i % 2]]) for i in range(pages)
    ]
    time.sleep(10)  # page loads done
    measure(pages)
    for page in opened:
        page.context.close()
    return cpu


def idle_table(browser, server, users: dict[str, str], args: argparse.Namespace) -> None:
    cpu = bench_idle(browser, server, users, args.pages, args.window, args.windows)
    base, opened = median(cpu[0]), median(cpu[args.pages])
    print_table(
        ["signed-in pages on the Runs tab, nothing running", "server CPU, % of one core", "vs no page"],
        [
            ("0 (baseline)", f"{base:.2f}", "-"),
            (str(args.pages), f"{opened:.2f}", f"+{opened - base:.2f} points"),
        ],
        title=f"Idle cost (median of {args.windows} windows of {args.window:g} s; "
        f"with pages, the highest window {percentile(cpu[args.pages], 100):.2f}; load average "
        f"{os.getloadavg()[0]:.1f})",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--part", choices=("both", "idle", "latency"), default="both")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="lfops-live-bench-"))
    workspace = tmp / "ws"
    server = start_webui(workspace, tmp / "server.log")
    latency: dict[str, list] = {}
    try:
        users = first_start_passwords(workspace)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            if args.part != "latency":
                idle_table(browser, server, users, args)
            if args.part != "idle":
                cr = merged_config(workspace, users)
                latency = bench_latency(browser, server, workspace, users, cr, args.runs)
            browser.close()
    finally:
        server.stop()
    if latency:
        print_table(
            ["change in the backend", "n", "p50 s", "max s", "goal"],
            [(k, len(v), f"{median(v):.2f}", f"{max(v):.2f}" if v else "-", "<= 2 s") for k, v in latency.items()],
            title=f"Time until the page shows it, no user action ({args.runs} training runs; load average "
            f"{os.getloadavg()[0]:.1f})",
        )


if __name__ == "__main__":
    main()
