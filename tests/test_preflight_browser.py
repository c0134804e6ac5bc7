"""The launch preflight in a real browser (Debian's Chromium through Playwright) against `lfops webui` started as
README starts it, with one GPU cluster profile configured: an analyst saves LlamaBoard's defaults (compute type bf16)
and reads the preflight note under the Save result; a reviewer merges it (CLI); the analyst's Launch on this machine,
which has no GPU, is refused on the page with the reason and the fix, and no run is recorded. Screenshots go to
test-artifacts/webui/."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import first_start_passwords, need_service, run_lfops
from tests.webui_fixtures import ARTIFACTS, CHROMIUM, choose_custom_model, chromium, start_webui

pytestmark = pytest.mark.slow
playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
PROFILES = {"gpu8": {"gpus_per_node": 8, "gpu_model": "A100", "gpu_memory_gib": 80, "gpu_compute_capability": "8.0"}}
REFUSAL = (
    "launch refused on this machine (local runner): bf16 needs a GPU with bf16 support (compute capability 8.0+); "
    "this machine has no GPU; fix: set compute type fp32 (bf16: false), or launch on profile gpu8"
)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        need_service("Chromium (/usr/bin/chromium)", False)
    workspace = tmp_path_factory.mktemp("preflight-browser") / "ws"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = start_webui(
        workspace, ARTIFACTS / "preflight-server.log", env={"LFOPS_CLUSTER_PROFILES": json.dumps(PROFILES)}
    )
    try:
        yield server, workspace, first_start_passwords(workspace)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def sign_in(browser, url: str, user: str, password: str):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#lfops-whoami")).to_contain_text(f"Signed in as {user}", timeout=60_000)
    return page


def shot(page, name: str) -> None:
    for close in page.locator(".toast-close").all():  # LlamaBoard's notices cover the page
        if close.is_visible():
            close.click()
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def runs_recorded(workspace: Path) -> int:
    with sqlite3.connect(workspace / "lfops.db") as db:
        return db.execute("SELECT count(*) FROM runs").fetchone()[0]


def test_save_note_and_launch_refusal_are_shown(app, browser):
    server, workspace, users = app
    page = sign_in(browser, server.url, "alice", users["alice"])
    train = page.locator("#lfops-tab-train")
    choose_custom_model(page, str(workspace / "models" / "tiny-llama"))
    train.get_by_label("Dataset", exact=True).click()
    page.get_by_role("option", name="demo_arith").click()
    page.keyboard.press("Escape")
    expect(train.get_by_label("Compute type")).to_have_value("bf16")  # LlamaBoard's default, left as it is
    page.locator("#lfops-config-name textarea").fill("board-defaults")
    page.locator("#lfops-config-message textarea").fill("LlamaBoard's defaults on the demo data")
    page.locator("#lfops-save-btn").click()
    result = page.locator("#lfops-save-result")
    expect(result).to_contain_text("Saved: change request #", timeout=30_000)
    expect(result).to_contain_text("not runnable: bf16 needs a GPU with bf16 support")
    expect(result).to_contain_text("or launch on profile gpu8")
    expect(result).to_contain_text("preflight: runs on profile gpu8")
    result.scroll_into_view_if_needed()
    shot(page, "preflight-01-save-note")
    cr = re.search(r"change request #(\d+)", result.inner_text()).group(1)

    for action in (["approve", cr, "-c", "fine"], ["merge", cr]):
        done = run_lfops("review", *action, workspace=workspace, user="rita", password=users["rita"])
        assert done.returncode == 0, done.stderr

    page.reload()
    expect(page.locator("#lfops-whoami")).to_contain_text("Signed in as alice", timeout=60_000)
    choice = page.locator("#lfops-launch-choice")
    choice.scroll_into_view_if_needed()
    choice.locator("input").click()
    page.get_by_role("option", name=f"#{cr} configs/board-defaults.yaml").click()
    expect(page.locator("#lfops-launch-btn")).to_be_enabled(timeout=20_000)
    page.locator("#lfops-launch-btn").click()
    refusal = page.locator("#lfops-launch-result")
    expect(refusal).to_contain_text("Not launched", timeout=30_000)
    expect(refusal).to_contain_text(REFUSAL)
    refusal.scroll_into_view_if_needed()
    shot(page, "preflight-02-launch-refused")
    assert runs_recorded(workspace) == 0
