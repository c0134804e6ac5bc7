"""Three of issue 9's small things in a real browser (Debian's Chromium through Playwright) against `lfops webui` as
README starts it: a box for a number nobody has chosen is empty, not 0; a pasted `?run=N` link opens the Runs tab on
run N, and reload and Back keep it; LlamaBoard's "non-instruct model" notice reaches only the user whose model it is,
at the bottom of the page, where it covers neither the sign-out link nor Save and Launch.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import first_start_passwords, need_service, run_lfops
from tests.runs_fixtures import SMALL
from tests.webui_fixtures import ARTIFACTS, CHROMIUM, choose_custom_model, chromium, sign_in, start_webui

pytestmark = pytest.mark.slow
playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
WAIT = 60_000
NOTICE = "non-instruct model"  # LlamaBoard's check_template warning (ALERTS["warn_no_instruct"])


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        need_service("Chromium (/usr/bin/chromium)", False)
    workspace = tmp_path_factory.mktemp("places") / "ws"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = start_webui(workspace, ARTIFACTS / "server-places.log")
    try:
        yield server, workspace, first_start_passwords(workspace)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def cli(workspace: Path, users: dict, user: str, *args: str) -> str:
    done = run_lfops(*args, workspace=workspace, user=user, password=users[user])
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def run_id(app) -> int:
    """A real run: the example config made small, saved by alice, approved and merged by rita, launched by alice."""
    _server, workspace, users = app
    shown = subprocess.run(
        ["git", "-C", str(workspace / "origin.git"), "show", "main:configs/example.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = workspace.parent / "linked.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(shown), **SMALL}, sort_keys=False))
    saved = cli(workspace, users, "alice", "save", str(path), "--name", "linked", "-m", "a run to link to")
    cr = re.search(r"change request #(\d+)", saved).group(1)
    cli(workspace, users, "rita", "review", "approve", cr, "-c", "ok")
    cli(workspace, users, "rita", "review", "merge", cr)
    return int(re.search(r"run #(\d+)", cli(workspace, users, "alice", "launch", cr)).group(1))


def test_a_number_box_nobody_filled_is_empty_not_zero(app, browser):
    server, _workspace, users = app
    page = sign_in(browser, server.url, "rita", users["rita"])
    page.get_by_role("tab", name="Review").click()
    expect(page.locator("#lfops-cr-id input")).to_be_visible(timeout=WAIT)
    expect(page.locator("#lfops-cr-id input")).to_have_value("")  # Gradio's own default made it 0
    page.get_by_role("tab", name="Runs & lineage").click()
    expect(page.locator("#lfops-run-id input")).to_be_visible(timeout=WAIT)
    expect(page.locator("#lfops-run-id input")).to_have_value("")
    expect(page.locator("#lfops-run-id input")).to_have_attribute("placeholder", "—")
    page.locator("#lfops-run-show").click()  # Show with nothing chosen asks for a run, not for run #0
    expect(page.locator("#lfops-run-info")).to_contain_text("Choose a run from the list", timeout=WAIT)
    assert "run=" not in page.url


def test_a_pasted_run_link_opens_that_run_and_reload_and_back_keep_it(app, browser, run_id):
    server, _workspace, users = app
    page = sign_in(browser, server.url, "rita", users["rita"], goto=f"?run={run_id}")
    runs_tab = page.get_by_role("tab", name="Runs & lineage")

    def shows_the_run() -> None:
        expect(runs_tab).to_have_attribute("aria-selected", "true", timeout=WAIT)
        expect(page.locator("#lfops-run-id input")).to_have_value(str(run_id), timeout=WAIT)
        info = page.locator("#lfops-run-info")
        expect(info).to_contain_text(f"Run #{run_id}", timeout=WAIT)
        expect(info).to_contain_text("configs/linked.yaml")
        expect(info).to_contain_text("submitted by alice")

    shows_the_run()
    page.reload()
    shows_the_run()
    page.get_by_role("tab", name="Review").click()
    expect(page).to_have_url(re.compile(r"tab=review"), timeout=WAIT)
    assert "run=" not in page.url
    page.go_back()
    expect(page).to_have_url(re.compile(rf"[?&]run={run_id}(&|$)"), timeout=WAIT)
    shows_the_run()


def _covered(page, selectors: list[str]) -> dict:
    """In one step (the notice closes itself after 10 s): is the notice on screen, where, and which of `selectors`
    does something else cover at their centre (scrolled to the middle of the window, as the browser scrolls to a
    button; the first one is checked where the page opens, unscrolled)."""
    return page.evaluate(
        """([selectors, notice]) => {
          const toast = [...document.querySelectorAll('.toast-body')].find(t => t.innerText.includes(notice));
          const box = toast ? toast.getBoundingClientRect() : null;
          const covered = [];
          selectors.forEach((sel, i) => {
            const el = document.querySelector(sel);
            if (i > 0) el.scrollIntoView({block: 'center'}); else window.scrollTo(0, 0);
            const r = el.getBoundingClientRect();
            const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
            if (!el.contains(hit)) covered.push(sel + ' under ' + (hit ? hit.className : 'nothing'));
          });
          window.scrollTo(0, 0);
          const count = document.querySelectorAll('.toast-body').length;
          return {shown: !!toast && box.height > 0, top: box && box.top, height: window.innerHeight, covered, count};
        }""",
        [selectors, NOTICE],
    )


def test_the_non_instruct_notice_is_its_users_own_and_covers_no_button(app, browser):
    server, workspace, users = app
    alice = sign_in(browser, server.url, "alice", users["alice"])
    choose_custom_model(alice, str(workspace / "models" / "tiny-llama"))  # a model without a chat template
    expect(alice.locator(".toast-body", has_text=NOTICE).first).to_be_visible(timeout=WAIT)

    # -- rita opens the app after alice chose her model: LlamaBoard starts from rita's own last model (none)
    rita = sign_in(browser, server.url, "rita", users["rita"])
    output_dir = rita.locator("#lfops-tab-train").get_by_role("listbox", name="Output dir")
    expect(output_dir).to_have_value(re.compile(r"train_"), timeout=WAIT)  # LlamaBoard has loaded her form
    rita.wait_for_function("window.lfopsDraftReady === true", timeout=WAIT)  # the page's load chain has ended
    assert rita.get_by_label("Model name").input_value() != "Custom"
    rita.wait_for_timeout(1500)  # a notice from a model-name event would have landed by now
    assert rita.locator(".toast-body", has_text=NOTICE).count() == 0

    # -- alice reloads: her own model comes back with its notice, at the bottom, over none of the buttons
    alice.reload()
    expect(alice.locator(".toast-body", has_text=NOTICE).first).to_be_visible(timeout=WAIT)
    place = _covered(alice, ["#lfops-signout", "#lfops-save-btn", "#lfops-launch-btn"])
    alice.locator("#lfops-launch-btn").scroll_into_view_if_needed()
    alice.screenshot(path=str(ARTIFACTS / "14-notice-at-the-bottom.png"))
    assert place["shown"], place  # checked while the notice was on screen
    assert place["top"] > place["height"] / 2, place  # in the lower half of the window
    assert place["covered"] == [], place
    assert alice.locator(".toast-body", has_text="may not").count() == 0  # the hidden Admin tab's lists refused her
