"""Revisable change requests, Open from repo, places that survive a reload and the small fixes, in a real browser
(Debian's Chromium through Playwright) against `lfops webui` as README starts it; an analyst and a reviewer work at
the same time, each in their own browser context. Screenshots go to test-artifacts/webui/ (README's come from here).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import first_start_passwords, need_service, run_lfops
from tests.webui_fixtures import ARTIFACTS, CHROMIUM, chromium, sign_in, start_webui

pytestmark = pytest.mark.slow
playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
WAIT = 60_000


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        need_service("Chromium (/usr/bin/chromium)", False)
    workspace = tmp_path_factory.mktemp("browser-review") / "ws"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = start_webui(workspace, ARTIFACTS / "server-review.log")
    try:
        users = first_start_passwords(workspace)
        assert set(users) == {"alice", "rita", "admin"}, server.output()
        yield server, workspace, users
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def choose(page, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option).first.click()


def options_of(page, dropdown: str) -> list[str]:
    page.locator(f"{dropdown} input").click()
    texts = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return texts


def cli(workspace: Path, users: dict, user: str, *args: str) -> str:
    done = run_lfops(*args, workspace=workspace, user=user, password=users[user])
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_open_change_one_value_review_one_row_revise_and_merge(app, browser):
    server, workspace, users = app
    url = server.url
    alice = sign_in(browser, url, "alice", users["alice"])
    rita = sign_in(browser, url, "rita", users["rita"])  # both signed in at once, each in their own context

    # -- Open from repo: the form is filled from main's example config; one value changed
    train = alice.locator("#lfops-tab-train")
    choose(alice, "#lfops-open-choice", "main: configs/example.yaml")
    alice.locator("#lfops-open-btn").click()
    expect(alice.locator("#lfops-open-result")).to_contain_text("Opened configs/example.yaml", timeout=WAIT)
    expect(alice.get_by_label("Model path")).to_have_value(str(workspace / "models" / "tiny-llama"), timeout=WAIT)
    expect(train.get_by_label("Learning rate")).to_have_value("0.001")
    train.get_by_label("Learning rate").fill("2e-4")
    alice.locator("#lfops-config-name textarea").fill("example-lr")
    alice.locator("#lfops-config-message textarea").fill("Learning rate 2e-4")
    alice.locator("#lfops-open").scroll_into_view_if_needed()
    shot(alice, "10-open-from-repo")
    alice.locator("#lfops-save-btn").click()
    result = alice.locator("#lfops-save-result")
    expect(result).to_contain_text("Saved: change request #", timeout=WAIT)
    cr = int(re.search(r"change request #(\d+)", result.inner_text()).group(1))

    # -- the reviewer pastes a deep link: the Review tab with the request open; ONE changed row
    rita.goto(f"{url}?tab=review&cr={cr}")
    header = rita.locator("#lfops-cr-header")
    expect(header).to_contain_text(f"#{cr}", timeout=WAIT)
    expect(header).to_contain_text("opened from configs/example.yaml")
    params = rita.locator("#lfops-cr-params")
    expect(params).to_contain_text("learning_rate")
    expect(rita.locator("#lfops-cr-params-title")).to_contain_text("1 changed")  # ONE changed row
    assert params.inner_text().count("changed") == params.inner_text().count("learning_rate"), params.inner_text()
    expect(rita.locator("#lfops-cr-diff .lfops-diff-add", has_text="learning_rate: 0.0002")).to_be_visible()
    rita.locator("#lfops-tab-review").scroll_into_view_if_needed()
    shot(rita, "11-review-one-changed-row")
    rita.locator("#lfops-review-comment textarea").fill("Also 3 epochs, please.")
    rita.locator("#lfops-request-changes-btn").click()
    expect(rita.locator("#lfops-review-result")).to_contain_text(f"#{cr} sent back", timeout=WAIT)
    expect(rita.locator("#lfops-cr-table")).to_contain_text("changes requested")  # a label, not changes_requested

    # -- a comment typed on one request is gone when another opens
    rita.locator("#lfops-review-comment textarea").fill("meant for the first one")
    rita.locator("#lfops-cr-id input").fill(str(cr))
    rita.locator("#lfops-cr-open").click()
    expect(rita.locator("#lfops-review-comment textarea")).to_have_value("", timeout=WAIT)

    # -- the analyst's unsaved form survives a reload (hers, in her browser)
    train.get_by_label("Learning rate").fill("3e-4")
    alice.wait_for_timeout(500)
    alice.reload()
    expect(alice.locator("#lfops-whoami")).to_contain_text("Signed in as alice", timeout=WAIT)
    expect(train.get_by_label("Learning rate")).to_have_value("3e-4", timeout=WAIT)

    # -- she revises the same request: opened from its head, Save as "update change request #N"
    choose(alice, "#lfops-open-choice", f"#{cr} configs/example-lr.yaml")
    alice.locator("#lfops-open-btn").click()
    expect(alice.locator("#lfops-open-result")).to_contain_text(f"change request #{cr}", timeout=WAIT)
    target = f"update change request #{cr} (configs/example-lr.yaml)"
    expect(alice.locator("#lfops-save-target input")).to_have_value(target)
    expect(train.get_by_label("Learning rate")).to_have_value("0.0002")
    train.get_by_label("Epochs").fill("3")
    alice.locator("#lfops-config-message textarea").fill("3 epochs as asked")
    alice.locator("#lfops-save-btn").click()
    expect(result).to_contain_text(f"Updated: change request #{cr}", timeout=WAIT)
    shot(alice, "12-update-change-request")

    # -- the reviewer reloads (the place stays), sees what changed since her review, approves and merges
    rita.reload()
    expect(header).to_contain_text(f"#{cr}", timeout=WAIT)
    expect(header).to_contain_text("— open")
    since = rita.locator("#lfops-cr-since")
    expect(since).to_contain_text("Changed since the last review")
    expect(since).to_contain_text("num_train_epochs")
    expect(rita.locator("#lfops-cr-since-diff .lfops-diff-add", has_text="num_train_epochs: 3.0")).to_be_visible()
    expect(rita.locator("#lfops-cr-reviews")).to_contain_text("changes requested")
    rita.locator("#lfops-cr-since").scroll_into_view_if_needed()
    shot(rita, "13-changed-since-last-review")
    expect(rita.locator("#lfops-merge-btn")).to_be_hidden()  # not approved yet
    rita.locator("#lfops-approve-btn").click()
    expect(rita.locator("#lfops-review-result")).to_contain_text(f"#{cr} approved", timeout=WAIT)
    expect(rita.locator("#lfops-merge-btn")).to_be_visible(timeout=WAIT)
    rita.locator("#lfops-merge-btn").click()
    expect(rita.locator("#lfops-review-result")).to_contain_text(f"#{cr} merged", timeout=WAIT)
    expect(header).to_contain_text("merged as", timeout=WAIT)
    for button in ("#lfops-approve-btn", "#lfops-request-changes-btn", "#lfops-merge-btn", "#lfops-close-btn"):
        expect(rita.locator(button)).to_be_hidden()  # nothing to decide on a merged request
    assert "num_train_epochs: 3.0" in cli(workspace, users, "rita", "review", "show", str(cr))

    # -- Back returns to the previous place
    rita.get_by_role("tab", name="Runs & lineage").click()
    expect(rita).to_have_url(re.compile(r"tab=runs"), timeout=WAIT)
    rita.go_back()
    expect(rita).to_have_url(re.compile(rf"tab=review&cr={cr}$"), timeout=WAIT)
    expect(header).to_contain_text(f"#{cr}", timeout=WAIT)


def test_launch_lists_every_merged_request_and_errors_name_the_field(app, browser):
    server, workspace, users = app
    shown = subprocess.run(
        ["git", "-C", str(workspace / "origin.git"), "show", "main:configs/example.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    merged = []
    for name, rank in (("r4", 4), ("r2", 2)):
        path = workspace.parent / f"{name}.yaml"
        path.write_text(shown.replace("lora_rank: 8", f"lora_rank: {rank}"))
        out = cli(workspace, users, "alice", "save", str(path), "--name", name, "-m", f"rank {rank}")
        number = re.search(r"change request #(\d+)", out).group(1)
        cli(workspace, users, "rita", "review", "approve", number)
        cli(workspace, users, "rita", "review", "merge", number)
        merged.append(number)
    alice = sign_in(browser, server.url, "alice", users["alice"])
    expect(alice.locator("#lfops-launch-result")).not_to_contain_text("Nothing to launch", timeout=WAIT)
    listed = options_of(alice, "#lfops-launch-choice")  # every merged one is offered
    for number in merged:
        assert any(t.startswith(f"#{number} ") for t in listed), listed
    train = alice.locator("#lfops-tab-train")
    train.get_by_role("textbox", name="Learning rate").fill("fast")  # not the Launch list's options
    alice.locator("#lfops-config-name textarea").fill("bad-lr")
    alice.locator("#lfops-config-message textarea").fill("typo")
    alice.locator("#lfops-save-btn").click()
    result = alice.locator("#lfops-save-result")
    expect(result).to_contain_text("Learning rate: must be a number", timeout=WAIT)
    assert "train.learning_rate" not in result.inner_text()
