"""Live runs in a real browser (Debian's Chromium through Playwright) against `lfops webui` as README starts it: two
users keep the Runs tab open while a real training run of the tiny model is launched from the CLI. Without any click
the run appears in both lists; after one click on its row, status, progress bar, loss curve and log move by themselves
step by step to the end; only its submitter is offered Cancel, and only while it runs; the finished run links to its
model's lineage. Screenshots go to test-artifacts/webui/.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import LFOPS, first_start_passwords, need_service
from tests.webui_fixtures import ARTIFACTS, CHROMIUM, chromium, start_webui

pytestmark = pytest.mark.slow
playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
STEPS = 8  # 32 samples, batch 4, one epoch, a log line per step


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        need_service("Chromium (/usr/bin/chromium)", False)
    workspace = tmp_path_factory.mktemp("live") / "ws"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = start_webui(workspace, ARTIFACTS / "live-server.log")
    try:
        yield server, workspace, first_start_passwords(workspace)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def lfops(workspace: Path, user: str, password: str, *args: str, stdin: str | None = None) -> str:
    env = {**os.environ, "LFOPS_WORKSPACE": str(workspace), "LFOPS_PASSWORD": password}
    done = subprocess.run(
        [LFOPS, "--user", user, *args], input=stdin, text=True, capture_output=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def runs_tab(browser, url: str, user: str, password: str):
    page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#lfops-whoami")).to_contain_text(f"Signed in as {user}", timeout=60_000)
    page.get_by_role("tab", name="Runs & lineage").click()
    expect(page.locator("#lfops-runs-table")).to_be_visible()
    return page


def click_row(page, config: str) -> None:
    """A click on a cell of the run's row (the table intercepts pointer events above its cells: force, as a user's
    click lands)."""
    page.locator("#lfops-runs-table tbody tr", has_text=config).first.locator("td").nth(2).click(force=True)


def test_two_users_watch_a_training_run_live_without_clicking(app, browser):
    server, workspace, users = app
    alice, rita = users["alice"], users["rita"]
    config = subprocess.run(
        ["git", "-C", str(workspace / "origin.git"), "show", "main:configs/example.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    config = re.sub(r"max_samples: \d+", "max_samples: 32", config)
    config = re.sub(r"per_device_train_batch_size: \d+", "per_device_train_batch_size: 4", config)
    config = re.sub(r"num_train_epochs: [\d.]+", "num_train_epochs: 1.0", config)
    path = workspace.parent / "live.yaml"
    path.write_text(config)
    saved = lfops(workspace, "alice", alice, "save", str(path), "--name", "live", "-m", "live runs")
    cr = re.search(r"change request #(\d+)", saved).group(1)
    lfops(workspace, "rita", rita, "review", "approve", cr, "-c", "ok")
    lfops(workspace, "rita", rita, "review", "merge", cr)

    pages = {
        "alice": runs_tab(browser, server.url, "alice", alice),
        "rita": runs_tab(browser, server.url, "rita", rita),
    }
    for page in pages.values():
        assert "configs/live.yaml" not in page.locator("#lfops-runs-table").inner_text()

    launched = lfops(workspace, "alice", alice, "launch", cr)
    run_id = int(re.search(r"run #(\d+)", launched).group(1))
    # -- a new run appears in both lists without a click
    for page in pages.values():
        expect(page.locator("#lfops-runs-table")).to_contain_text("configs/live.yaml", timeout=30_000)

    # -- clicking its row selects it (one click each), then nothing more is clicked
    for page in pages.values():
        click_row(page, "configs/live.yaml")
        expect(page.locator("#lfops-run-id input")).to_have_value(str(run_id), timeout=30_000)
        expect(page.locator("#lfops-run-info")).to_contain_text(f"Run #{run_id}", timeout=30_000)
    a, r = pages["alice"], pages["rita"]
    expect(a.locator("#lfops-run-cancel")).to_be_visible(timeout=30_000)  # her own run, while it runs
    assert r.locator("#lfops-run-cancel").is_hidden()  # not rita's run: a reviewer may not cancel it

    # -- progress, curve and log move by themselves, step by step
    seen: dict[str, set[int]] = {"alice": set(), "rita": set()}
    logs_with_loss = set()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        for name, page in pages.items():
            text = page.locator("#lfops-run-progress").inner_text()
            match = re.search(rf"step (\d+) / {STEPS}", text)
            if match:
                seen[name].add(int(match.group(1)))
            if "'loss'" in page.locator("#lfops-run-log textarea").input_value():
                logs_with_loss.add(name)
        if "succeeded" in a.locator("#lfops-run-progress").inner_text():
            break
        if seen["alice"] and max(seen["alice"]) == 3 and not (ARTIFACTS / "10-live-run-training.png").exists():
            a.screenshot(path=str(ARTIFACTS / "10-live-run-training.png"), full_page=True)
        time.sleep(0.2)
    for name, steps in seen.items():
        # progress shown without a click while it ran (on a loaded machine the 8 steps may land between two passes)
        assert steps, (name, steps)
    assert logs_with_loss == {"alice", "rita"}

    # -- the end shows by itself on both pages: status, full bar, the list, no Cancel, the model's lineage
    for page in pages.values():
        expect(page.locator("#lfops-run-progress")).to_contain_text(
            f"succeeded · step {STEPS} / {STEPS} (100%)", timeout=60_000
        )
        row = page.locator("#lfops-runs-table tbody tr", has_text="configs/live.yaml").first
        expect(row).to_contain_text("succeeded", timeout=30_000)
        expect(page.locator("#lfops-run-info")).to_contain_text("registered as model version live:v1", timeout=60_000)
        expect(page.locator("#lfops-run-cancel")).to_be_hidden()
        curve = page.locator("#lfops-run-plot")  # the interactive plot, drawn from the stored loss
        expect(curve).to_contain_text(f"at step {STEPS}")
        expect(curve.locator("canvas, svg").first).to_be_visible()
    a.locator("#lfops-run-curves input").click()
    a.get_by_role("option", name="lr", exact=True).click()
    a.keyboard.press("Escape")
    expect(a.locator("#lfops-run-plot")).to_contain_text("lr ", timeout=30_000)
    a.screenshot(path=str(ARTIFACTS / "11-live-run-finished.png"), full_page=True)
    a.locator("#lfops-run-lineage").click()
    expect(a.locator("#lfops-lineage-info")).to_contain_text(f"change request #{cr}", timeout=30_000)
    expect(a.locator("#lfops-lineage-info")).to_contain_text("approved by rita")
