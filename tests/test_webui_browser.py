"""The WebUI in a real browser (Debian's Chromium through Playwright) against `lfops webui` started as README starts
it, on a workspace that does not exist yet: the first start creates the embedded defaults and writes the users'
passwords to a file only its owner can read.

An analyst fills LlamaBoard's own widgets (demo model, demo dataset, learning rate, LoRA rank) and saves to the repo;
another analyst cannot approve it (no button, and the approve call forged with her session is refused by the
backend); a reviewer sees both changed values in the diff, approves and merges; an anonymous visitor gets only the
sign-in page. Screenshots of each step go to test-artifacts/webui/.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import LFOPS, need_service, printed_passwords
from tests.webui_fixtures import ARTIFACTS, CHROMIUM, choose_custom_model, chromium, start_webui
from webui.serve import PASSWORDS_FILE

pytestmark = pytest.mark.slow
playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
CAROL_PASSWORD = "carol-known-password"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        need_service("Chromium (/usr/bin/chromium)", False)
    root = tmp_path_factory.mktemp("browser")
    workspace = root / "ws"  # does not exist: `lfops webui` creates the embedded defaults
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = start_webui(workspace, ARTIFACTS / "server.log")
    try:
        # not a terminal: the generated passwords are in a file only its owner reads, never in the log
        passwords_file = workspace / PASSWORDS_FILE
        users = printed_passwords(passwords_file.read_text())
        assert set(users) == {"alice", "rita", "admin"}, server.output()
        assert passwords_file.stat().st_mode & 0o777 == 0o600
        assert not set(users.values()) & set(server.output().split())
        # a second analyst with a known password, added by the admin through the CLI while the server runs
        subprocess.run(
            [LFOPS, "--user", "admin", "user", "add", "carol", "--role", "analyst", "--password-stdin"],
            input=CAROL_PASSWORD + "\n",
            text=True,
            check=True,
            capture_output=True,
            env={**os.environ, "LFOPS_WORKSPACE": str(workspace), "LFOPS_PASSWORD": users["admin"]},
        )
        users["carol"] = CAROL_PASSWORD
        yield server, workspace, users
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
    for close in page.locator(".toast-close").all():  # LlamaBoard's "non-instruct model" notices cover the page
        if close.is_visible():
            close.click()
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def origin_git(workspace: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(workspace / "origin.git"), *args], check=True, capture_output=True, text=True
    ).stdout


def cr_status(workspace: Path, cr: int) -> str:
    import sqlite3

    with sqlite3.connect(workspace / "lfops.db") as db:
        return db.execute("SELECT status FROM change_requests WHERE id = ?", (cr,)).fetchone()[0]


def forged_call(page, url: str, api_name: str, data: list) -> str:
    """Call an event through Gradio's HTTP API with the page's session, as a script in that browser could."""
    started = page.request.post(f"{url}gradio_api/call/{api_name}", data={"data": data})
    assert started.status == 200, started.text()
    result = page.request.get(f"{url}gradio_api/call/{api_name}/{started.json()['event_id']}")
    return result.text()


def test_anonymous_visitor_sees_only_the_sign_in(app, browser):
    server, _workspace, _users = app
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(server.url)
    expect(page.get_by_role("button", name="Login")).to_be_visible(timeout=30_000)
    shot(page, "01-anonymous-sign-in")
    assert page.locator("#lfops-tab-train").count() == 0
    assert page.get_by_text("Save to repo").count() == 0
    for path in ("config", "gradio_api/info"):
        assert page.request.get(server.url + path).status == 401, path
    assert page.request.post(server.url + "gradio_api/call/review_list", data={"data": ["all", ""]}).status == 401
    page.get_by_label("username").fill("alice")
    page.get_by_label("password").fill("not-her-password")
    page.get_by_role("button", name="Login").click()
    expect(page.get_by_text("Incorrect Credentials")).to_be_visible(timeout=10_000)


def test_analyst_saves_reviewer_merges(app, browser):
    server, workspace, users = app
    url = server.url

    # -- the analyst fills LlamaBoard's own widgets and saves to the repository
    page = sign_in(browser, url, "alice", users["alice"])
    train = page.locator("#lfops-tab-train")
    choose_custom_model(page, str(workspace / "models" / "tiny-llama"))
    train.get_by_label("Dataset", exact=True).click()
    page.get_by_role("option", name="demo_arith").click()  # listed from LlamaBoard's data dir: main's data/
    page.keyboard.press("Escape")
    train.get_by_label("Learning rate").fill("2e-4")
    train.get_by_text("LoRA configurations").click()
    rank = train.get_by_label("number input for LoRA rank")
    rank.fill("16")
    rank.press("Enter")
    train.get_by_label("Compute type").click()
    page.get_by_role("option", name="fp32").click()
    train.get_by_role("button", name="Preview command").click()
    expect(train.get_by_text("--learning_rate 0.0002")).to_be_visible(timeout=20_000)
    expect(train.get_by_text("--lora_rank 16")).to_be_visible()
    page.locator("#lfops-config-name textarea").fill("lr-rank-16")
    page.locator("#lfops-config-message textarea").fill("Raise the learning rate to 2e-4 and the LoRA rank to 16")
    shot(page, "02-analyst-train-form")
    page.locator("#lfops-save-btn").click()
    result = page.locator("#lfops-save-result")
    expect(result).to_contain_text("Saved: change request #", timeout=30_000)
    shot(page, "03-analyst-saved")
    cr = int(re.search(r"change request #(\d+)", result.inner_text()).group(1))
    saved = origin_git(workspace, "show", "refs/heads/alice/lr-rank-16:configs/lr-rank-16.yaml")
    for line in ("learning_rate: 0.0002", "lora_rank: 16", "dataset: demo_arith", "dataset_dir: data"):
        assert line in saved.splitlines(), line
    assert f"model_name_or_path: {workspace / 'models' / 'tiny-llama'}" in saved

    # -- another analyst: no approve button, and the approve event called with her session is refused
    page = sign_in(browser, url, "carol", users["carol"])
    page.get_by_role("tab", name="Review").click()
    page.locator("#lfops-cr-id input").fill(str(cr))
    page.locator("#lfops-cr-open").click()
    expect(page.locator("#lfops-cr-header")).to_contain_text(f"#{cr}", timeout=20_000)
    expect(page.locator("#lfops-reviewer-note")).to_be_visible()
    assert page.locator("#lfops-approve-btn").is_hidden() and page.locator("#lfops-merge-btn").is_hidden()
    shot(page, "04-analyst-cannot-approve")
    answer = forged_call(page, url, "review_approve", [cr, "looks fine to me"])
    assert "carol (analyst) may not approve" in answer, answer
    assert "carol (analyst) may not merge" in forged_call(page, url, "review_merge", [cr, ""])
    assert cr_status(workspace, cr) == "open"

    # -- the reviewer sees both changed values, approves and merges
    page = sign_in(browser, url, "rita", users["rita"])
    page.get_by_role("tab", name="Review").click()
    expect(page.locator("#lfops-cr-table")).to_contain_text("lr-rank-16", timeout=20_000)
    page.locator("#lfops-cr-table").get_by_role("button", name="configs/lr-rank-16.yaml").click(force=True)
    expect(page.locator("#lfops-cr-header")).to_contain_text(f"#{cr}", timeout=20_000)
    diff = page.locator("#lfops-cr-diff")
    expect(diff.locator(".lfops-diff-add", has_text="learning_rate: 0.0002")).to_be_visible()
    expect(diff.locator(".lfops-diff-add", has_text="lora_rank: 16")).to_be_visible()
    params = page.locator("#lfops-cr-params")
    expect(params).to_contain_text("learning_rate")
    expect(params).to_contain_text("lora_rank")
    page.locator("#lfops-review-comment textarea").fill("Rank 16 with 2e-4 is what we discussed.")
    page.locator("#lfops-tab-review").scroll_into_view_if_needed()
    shot(page, "05-reviewer-diff")
    page.locator("#lfops-approve-btn").click()
    expect(page.locator("#lfops-review-result")).to_contain_text(f"#{cr} approved", timeout=30_000)
    page.locator("#lfops-merge-btn").click()
    expect(page.locator("#lfops-review-result")).to_contain_text(f"#{cr} merged", timeout=60_000)
    expect(page.locator("#lfops-cr-header")).to_contain_text("merged as", timeout=20_000)
    shot(page, "06-reviewer-merged")
    assert cr_status(workspace, cr) == "merged"
    message = origin_git(workspace, "log", "-1", "--format=%B", "main")
    assert f"Change-Request: {cr}" in message and "Approved-by: rita" in message
    assert "learning_rate: 0.0002" in origin_git(workspace, "show", "main:configs/lr-rank-16.yaml")

    # -- signing out ends the session: the page and the API ask for a sign-in again
    page.locator("#lfops-signout").click()
    expect(page.get_by_role("button", name="Login")).to_be_visible(timeout=20_000)
    assert page.request.get(url + "config").status == 401
