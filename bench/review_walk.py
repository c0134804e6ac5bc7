"""Clicks and wall time for the walk "change one value of a config, save, approve, merge, launch, see the finished
curve" in Chromium against `lfops webui`: opened from the repository (Open from repo) against the same walk the old
way (a new config filled in LlamaBoard's form from its defaults: model, path, dataset, compute type, and the example's
values that differ from those defaults, so that both train the same steps; then the value). The
reviewer's part (a link to the request, approve, merge) is the same in both. At the end the new way clicks the run's
row once when it appears in the list and watches it finish (live updates); the old way had none: the user types the
run's number and presses Show every 3 s until it has finished.

    .venv/bin/python bench/review_walk.py [--repeats 3]

Both walks run in the same server, interleaved; the table shows the median wall time, the time until the run was
launched (after that both wait for the same training, whose length follows the machine's load), the clicks and the
fields typed or chosen (a user's actions), and the ratios against the old way. Training is the tiny model on the CPU.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from bench.common import print_table  # noqa: E402
from tests.helpers import first_start_passwords  # noqa: E402
from tests.webui_fixtures import CHROMIUM, CHROMIUM_ARGS, start_webui  # noqa: E402

WAIT = 180_000
SAME_WORK = ("cutoff_len: 128", "max_samples: 64", "per_device_train_batch_size: 8", "num_train_epochs: 2.0")
SAME_WORK += ("gradient_accumulation_steps: 1", "logging_steps: 1")
POLL_MS = 3000  # the old way: how often the user presses Show while the run trains


class Counted:
    """A page whose user actions are counted: clicks, and fields typed or options chosen."""

    def __init__(self, page) -> None:
        self.page = page
        self.clicks = 0
        self.inputs = 0

    def click(self, locator, force: bool = False) -> None:
        self.clicks += 1
        locator.click(force=force)

    def fill(self, locator, text: str) -> None:
        self.inputs += 1
        locator.fill(text)

    def choose(self, selector: str, option: str) -> None:
        self.click(self.page.locator(f"{selector} input"))
        self.inputs += 1
        self.click(self.page.get_by_role("option", name=option).first)


def sign_in(browser, url: str, user: str, password: str):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#lfops-whoami")).to_contain_text(f"Signed in as {user}", timeout=WAIT)
    return page


def walk(analyst, reviewer, workspace: Path, name: str, lr: str, opened: bool) -> tuple[float, float, int, int]:
    a, r = Counted(analyst), Counted(reviewer)
    page = analyst
    train = page.locator("#lfops-tab-train")
    started = time.perf_counter()
    if opened:
        a.choose("#lfops-open-choice", "main: configs/example.yaml")
        a.click(page.locator("#lfops-open-btn"))
        expect(page.locator("#lfops-open-result")).to_contain_text("Opened", timeout=WAIT)
    else:  # the old way: LlamaBoard's form from its defaults
        model_name = page.get_by_label("Model name")
        a.click(model_name)
        a.fill(model_name, "Custom")
        a.click(page.get_by_role("option", name="Custom", exact=True))
        page.wait_for_timeout(1500)  # LlamaBoard's own model-name change fills in its guess of the path first
        a.fill(page.get_by_label("Model path"), str(workspace / "models" / "tiny-llama"))
        a.click(train.get_by_label("Dataset", exact=True))
        a.click(page.get_by_role("option", name="demo_arith"))
        page.keyboard.press("Escape")
        a.click(train.get_by_label("Compute type"))
        a.click(page.get_by_role("option", name="fp32"))
        # ... and the values of configs/example.yaml that differ from LlamaBoard's defaults (the same training work)
        a.fill(train.get_by_label("Max samples"), "64")
        a.fill(train.get_by_label("Total number of training epochs"), "2")  # Epochs (its label and info)
        for label, value in (("Cutoff length", "128"), ("Batch size", "8"), ("Gradient accumulation", "1")):
            a.fill(train.get_by_label(f"number input for {label}"), value)
        a.click(train.get_by_text("Extra configurations"))
        a.fill(train.get_by_label("number input for Logging steps"), "1")
    a.fill(train.get_by_label("Learning rate"), lr)
    a.fill(page.locator("#lfops-config-name textarea"), name)
    a.fill(page.locator("#lfops-config-message textarea"), f"learning rate {lr}")
    result = page.locator("#lfops-save-result")
    a.click(page.locator("#lfops-save-btn"))
    # This walk's answer names its file: the last walk's answer stays on the page until then (while the save runs,
    # its text even changes: Gradio's "processing" timer is added to it).
    expect(result).to_contain_text(f"file configs/{name}.yaml", timeout=WAIT)
    expect(result).to_contain_text("Saved: change request #")
    saved = page.locator("#lfops-saved").inner_text()
    for same in SAME_WORK:  # both ways train the same steps, so their wall times compare
        assert same in saved, (same, saved)
    cr = int(re.search(r"change request #(\d+)", result.inner_text()).group(1))
    # the reviewer opens the request from the link in chat (the same in both walks: what differs is the analyst's)
    r.inputs += 1  # pasting the link
    reviewer.goto(f"{reviewer.url.split('?')[0]}?tab=review&cr={cr}")
    expect(reviewer.locator("#lfops-cr-header")).to_contain_text(f"#{cr}", timeout=WAIT)
    r.click(reviewer.locator("#lfops-approve-btn"))
    expect(reviewer.locator("#lfops-review-result")).to_contain_text(f"#{cr} approved", timeout=WAIT)
    r.click(reviewer.locator("#lfops-merge-btn"))
    expect(reviewer.locator("#lfops-review-result")).to_contain_text(f"#{cr} merged", timeout=WAIT)
    # the analyst launches it and watches the curve
    a.choose("#lfops-launch-choice", f"#{cr} ")
    launched = page.locator("#lfops-launch-result")
    a.click(page.locator("#lfops-launch-btn"))
    expect(launched).to_contain_text(f"configs/{name}.yaml", timeout=WAIT)  # this walk's answer, as for the save
    run = int(re.search(r"Run #(\d+)", launched.inner_text()).group(1))
    until_launched = time.perf_counter() - started  # from here on both wait for the same training (load-bound)
    a.click(page.get_by_role("tab", name="Runs & lineage"))
    info = page.locator("#lfops-run-info")
    if opened:  # now: the run appears in the list by itself; one click on its row, then the page follows it
        row = page.locator("#lfops-runs-table tbody tr").first  # newest first
        expect(row.locator("td").first).to_have_text(re.compile(rf"^\s*{run}\s*$"), timeout=WAIT)
        a.click(row.locator("td").nth(2), force=True)  # the cell's text (a span) takes the click: the same row
        expect(info).to_contain_text(f"Run #{run} ", timeout=WAIT)
        expect(info).to_contain_text(re.compile(r"succeeded|failed"), timeout=900_000)
    else:  # before: no live updates, the user types the run's number and presses Show until it has finished
        a.fill(page.locator("#lfops-run-id input"), str(run))
        while True:
            a.click(page.locator("#lfops-run-show"))
            expect(info).to_contain_text(f"Run #{run} ", timeout=WAIT)
            if re.search(r"succeeded|failed", info.inner_text()):
                break
            page.wait_for_timeout(POLL_MS)
    assert "succeeded" in info.inner_text(), info.inner_text()
    expect(page.locator("#lfops-run-plot")).to_be_visible()
    page.get_by_role("tab", name="LlamaBoard").click()
    expect(page.locator("#lfops-save-btn")).to_be_visible(timeout=WAIT)  # back where the next walk starts
    return time.perf_counter() - started, until_launched, a.clicks + r.clicks, a.inputs + r.inputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[bool, list[tuple[float, float, int, int]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="lfops-walk-") as tmp:
        workspace = Path(tmp) / "ws"
        server = start_webui(workspace, Path(tmp) / "server.log")
        try:
            users = first_start_passwords(workspace)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                reviewer = sign_in(browser, server.url, "rita", users["rita"])
                analyst = None
                for i in range(args.repeats):
                    for opened in (False, True):  # interleaved
                        lr = f"{2 + i}e-4" if opened else f"{5 + i}e-4"
                        name = f"walk-{'open' if opened else 'new'}-{i}"
                        # A fresh page each walk (signing in is not timed): the last walk's form, its draft kept in
                        # the browser and its selections would otherwise be this walk's start.
                        if analyst is not None:
                            analyst.context.close()
                        analyst = sign_in(browser, server.url, "alice", users["alice"])
                        try:
                            results[opened].append(walk(analyst, reviewer, workspace, name, lr, opened))
                        except Exception:  # where each page was, for whoever reads the traceback
                            for who, pg in (("analyst", analyst), ("reviewer", reviewer)):
                                shot = Path(tempfile.gettempdir()) / f"lfops-walk-failed-{who}.png"
                                pg.screenshot(path=str(shot), full_page=True)
                                print(f"{who}: {pg.url} (screenshot {shot})", file=sys.stderr)
                            raise
                browser.close()
        finally:
            server.stop()
    old = [statistics.median(walk[k] for walk in results[False]) for k in (0, 1)]
    rows = []
    for opened, label in ((False, "new config from LlamaBoard's defaults (before)"), (True, "Open from repo")):
        wall, launched, clicks, inputs = (statistics.median(walk[k] for walk in results[opened]) for k in range(4))
        rows.append(
            (
                label,
                f"{wall:.1f} s",
                f"{launched:.1f} s",
                f"{clicks:.0f}",
                f"{inputs:.0f}",
                f"{wall / old[0]:.2f}x",
                f"{launched / old[1]:.2f}x",
            )
        )
    print_table(
        ["walk", "wall time", "until launched", "clicks", "fields typed or chosen", "wall vs old", "launched vs old"],
        rows,
        title=f"{args.repeats} walks each, interleaved (median; load average {os.getloadavg()[0]:.1f})",
    )


if __name__ == "__main__":
    main()
