"""Helpers for the WebUI tests: the app built in this process, and `lfops webui` started as README starts it."""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.context import LocalContext

from tests.helpers import LFOPS, ROOT, free_port, lfops_env, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts" / "webui"


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never `playwright install`); closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def choose_custom_model(page: Any, model_path: str) -> None:
    """Pick LlamaBoard's "Custom" model and type its path, as an analyst does.

    Choosing a model name makes LlamaBoard rewrite the path box (`get_model_info`); typed before that event lands, the
    path is wiped. A named model first shows a known path, so its disappearance proves the "Custom" event has landed.
    """
    from playwright.sync_api import expect

    name, path = page.get_by_label("Model name"), page.get_by_label("Model path")
    for choice, shown in (("Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B"), ("Custom", None)):
        name.click()
        name.fill(choice)
        page.get_by_role("option", name=choice, exact=True).click()
        if shown:
            expect(path).to_have_value(shown, timeout=20_000)
        else:
            expect(path).not_to_have_value("Qwen/Qwen2.5-0.5B", timeout=20_000)
    path.fill(model_path)
    expect(path).to_have_value(model_path)


def sign_in(browser: Any, url: str, user: str, password: str, goto: str = "") -> Any:
    """A page of its own (a fresh browser context) where `user` has signed in with the password form; then `goto`
    (a query such as "?run=3") is opened as a pasted link would be."""
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#lfops-whoami")).to_contain_text(f"Signed in as {user}", timeout=60_000)
    if goto:
        page.goto(url + goto)
        expect(page.locator("#lfops-whoami")).to_contain_text(f"Signed in as {user}", timeout=60_000)
    return page


def plain(markdown: str) -> str:
    """The text a user reads in a Markdown message (backslash escapes and HTML entities resolved)."""
    return html.unescape(re.sub(r"\\(.)", r"\1", markdown))


def request_for(name: str | None) -> gr.Request:
    """What Gradio hands an event handler for a signed-in user (the user name is all the app reads from it)."""
    return gr.Request(username=name)


@contextmanager
def signed_in(name: str | None):
    """Run LlamaBoard's own handlers as Gradio runs them for `name` (they read the user from Gradio's context)."""
    token = LocalContext.request.set(request_for(name))
    try:
        yield
    finally:
        LocalContext.request.reset(token)


@dataclass
class InProcess:
    """The WebUI built in this process over a test workspace, to drive its handlers directly."""

    env: object  # tests.conftest.Env
    app: object  # webui.app.WebApp
    ctx: object  # webui.context.AppContext

    @property
    def board(self):
        return self.app.board


def build_in_process(env) -> InProcess:
    """Build the app as `lfops webui` does, with the current directory already in the workspace's llamaboard/."""
    from webui.app import build_app
    from webui.auth import Authenticator
    from webui.context import AppContext
    from webui.workdir import Workdir

    workdir = Workdir(env.ws)
    workdir.prepare()
    os.chdir(workdir.root)
    ctx = AppContext(env.ws, Authenticator(env.ws), workdir)
    return InProcess(env, build_app(ctx), ctx)


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start_webui(workspace: Path, log: Path, *args: str, env: dict | None = None, timeout: float = 240) -> Server:
    """`lfops webui --port P` with LFOPS_WORKSPACE, as README runs it; returns once the first page is served."""
    port = free_port()
    fh = open(log, "w")  # the server writes to it until stop()
    proc = subprocess.Popen(
        [LFOPS, "webui", "--port", str(port), *args],
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=lfops_env(workspace, **(env or {})),
        cwd=str(workspace.parent),
        start_new_session=True,  # its own process group: stop() ends the runs it started too
    )
    server = Server(proc, f"http://127.0.0.1:{port}/", log)

    def served() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"lfops webui exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(server.url, timeout=2) as resp:  # noqa: S310 - our own local server
                return resp.status == 200
        except urllib.error.HTTPError as exc:
            return exc.code == 401  # served, to someone who has not signed in (proxy-header mode)
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_for(served, timeout, interval=0.25, what="lfops webui to serve its first page")
    except AssertionError as exc:
        server.stop()
        raise AssertionError(f"{exc}:\n{server.output()[-3000:]}") from None
    return server
