"""Benchmark: the WebUI against plain LlamaBoard, and the time from Save to a commit on the branch.

1. Cold start to the first page served (GET / answers 200), the CPU seconds spent until then (steady when other
   work shares the machine, unlike wall-clock) and the resident memory of the whole process tree at that moment:
   `lfops webui` versus `llamafactory-cli webui`, alternating, median of --starts runs each. For lfops also the
   page a signed-in user gets (sign-in POST, then GET / with the session cookie).
2. Save: the Save to repo handler (the same function the button calls) against `ChangeRequests.save` alone and
   against raw git in a working clone (switch -c, write, add, commit), interleaved, median of --saves each; then the
   Save button clicked in Chromium until the result shows and the branch is on origin (if Chromium is installed).

    .venv/bin/python bench/webui_start.py [--starts 3] [--saves 9]
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository first on the path

from bench.common import LFOPS, free_port, git, git_clone, median, print_table, stopwatch, wait_for  # noqa: E402
from tests.helpers import printed_passwords  # noqa: E402
from tests.webui_fixtures import CHROMIUM, CHROMIUM_ARGS  # noqa: E402 - the browser as the tests launch it

BIN = Path(sys.executable).parent


def tree_usage(pid: int) -> tuple[int, float]:
    """Resident bytes and CPU seconds (user + system, with finished children such as git) of a process tree.

    CPU seconds barely change when other work shares the machine, unlike wall-clock start times."""
    proc = psutil.Process(pid)
    rss, cpu = 0, 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            rss += p.memory_info().rss
            t = p.cpu_times()
            cpu += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return rss, cpu


def wait_served(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    def served() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our local server
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    wait_for(served, timeout, interval=0.05, what=f"the first page at {url}")


def signed_in_page(url: str, user: str, password: str) -> float:
    """Seconds for the sign-in POST plus the first full page for that session."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    t = time.perf_counter()
    body = urllib.parse.urlencode({"username": user, "password": password}).encode()
    opener.open(url + "login", data=body, timeout=30).read()
    page = opener.open(url, timeout=30).read()
    assert b"lfops-tab-train" in page or b"Save to repo" in page, "not the signed-in page"
    return time.perf_counter() - t


def start_once(which: str, env: dict, cwd: Path) -> tuple[float, tuple[int, float], subprocess.Popen, str]:
    """Start one server ("plain" LlamaBoard or "lfops") and wait for its first page: seconds, (RSS, CPU seconds)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    if which == "plain":  # LlamaBoard takes its address from the environment
        cmd = [str(BIN / "llamafactory-cli"), "webui"]
        env = {**env, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"}
    else:
        cmd = [LFOPS, "webui", "--port", str(port)]
    t = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    wait_served(url, proc)
    elapsed = time.perf_counter() - t
    return elapsed, tree_usage(proc.pid), proc, url


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 15)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, 9)
        proc.wait(10)


def bench_starts(workspace: Path, passwords: dict[str, str], starts: int, tmp: Path) -> dict:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "LFOPS_WORKSPACE": str(workspace)}
    plain_dir = tmp / "plain"
    plain_dir.mkdir()
    results: dict[str, dict[str, list[float]]] = {
        which: {"s": [], "rss": [], "cpu": []} for which in ("plain", "lfops")
    }
    signed: list[float] = []
    for i in range(starts):
        order = ("plain", "lfops") if i % 2 == 0 else ("lfops", "plain")
        for which in order:
            elapsed, (rss, cpu), proc, url = start_once(which, env, plain_dir if which == "plain" else tmp)
            try:
                if which == "lfops":
                    signed.append(elapsed + signed_in_page(url, "alice", passwords["alice"]))
            finally:
                stop(proc)
            results[which]["s"].append(elapsed)
            results[which]["rss"].append(rss / 2**20)
            results[which]["cpu"].append(cpu)
            print(f"  start {i + 1} {which:6} {elapsed:6.2f} s  {cpu:6.2f} CPU s  {rss / 2**20:7.0f} MiB", flush=True)
    return {"results": results, "signed": signed}


def bench_saves(workspace: Path, passwords: dict[str, str], saves: int, tmp: Path) -> dict:
    import gradio as gr

    from backend.config import TrainConfig
    from backend.settings import Settings
    from backend.workspace import Workspace
    from webui import llamaboard as lb
    from webui.app import build_app
    from webui.auth import Authenticator
    from webui.context import AppContext
    from webui.workdir import Workdir

    ws = Workspace(Settings.from_env(workspace))
    workdir = Workdir(ws)
    workdir.prepare()
    cwd = os.getcwd()
    os.chdir(workdir.root)
    app = build_app(AppContext(ws, Authenticator(ws), workdir))
    alice = ws.login("alice", passwords["alice"])
    request = gr.Request(username="alice")

    def form(name: str, lr: str) -> dict:
        data = lb.form_values(
            app.board,
            {
                "top.lang": "en",
                "top.model_name": "Custom",
                "top.model_path": str(ws.settings.models_dir / "tiny-llama"),
                "train.dataset": ["demo_arith"],
                "train.output_dir": "train_bench",
                "train.compute_type": "fp32",
                "train.learning_rate": lr,
            },
        )
        data[app.train.name], data[app.train.message] = name, f"bench {name}"
        return data

    clone = git_clone(ws.settings.repo_url, tmp / "clone", user="bench", email="bench@x")
    example = (clone / "configs" / "example.yaml").read_text()

    app.train.on_save(form("warmup", "1e-4"), request)  # imports and caches, as after the first click
    handler, backend, raw = [], [], []
    for i in range(saves):
        lr = f"{i + 2}e-5"
        with stopwatch(handler):
            text, _ = app.train.on_save(form(f"ui-{i}", lr), request)
        assert "Saved: change request" in text, text
        config = TrainConfig(lb.repo_args(app.board, form(f"be-{i}", lr), f"be-{i}", workdir.root).args)
        with stopwatch(backend):
            ws.changes.save(alice, config, f"be-{i}", f"bench be-{i}")
        with stopwatch(raw):
            git(clone, "switch", "-q", "-c", f"raw{i}", "main")
            (clone / "configs" / f"raw{i}.yaml").write_text(example.replace("seed: 42", f"seed: {i}"))
            git(clone, "add", f"configs/raw{i}.yaml")
            git(clone, "commit", "-q", "-m", f"raw {i}")
    branches = git(ws.settings.repo_url, "for-each-ref", "--format=%(refname)", "refs/heads/alice/").split()
    assert sum(b.startswith("refs/heads/alice/ui-") for b in branches) == saves
    os.chdir(cwd)
    ws.store.dispose()
    return {"handler": handler, "backend": backend, "raw": raw}


def bench_browser_saves(
    workspace: Path, passwords: dict[str, str], saves: int, tmp: Path
) -> tuple[list[float], list[float]]:
    """The Save button in Chromium: click until the result names the change request and origin has the branch."""
    if not Path(CHROMIUM).exists():
        return [], []
    from playwright.sync_api import expect, sync_playwright

    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "LFOPS_WORKSPACE": str(workspace)}
    _s, _usage, proc, url = start_once("lfops", env, tmp)
    origin = str(workspace / "origin.git")
    times: list[float] = []
    previews: list[float] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_label("username").fill("alice")
            page.get_by_label("password").fill(passwords["alice"])
            page.get_by_role("button", name="Login").click()
            expect(page.locator("#lfops-whoami")).to_contain_text("alice", timeout=60_000)
            train = page.locator("#lfops-tab-train")
            name_box = page.get_by_label("Model name")
            name_box.click()
            name_box.fill("Custom")
            page.get_by_role("option", name="Custom", exact=True).click()
            page.get_by_label("Model path").fill(str(workspace / "models" / "tiny-llama"))
            train.get_by_label("Dataset", exact=True).click()
            page.get_by_role("option", name="demo_arith").click()
            page.keyboard.press("Escape")
            page.locator("#lfops-config-message textarea").fill("bench")
            result = page.locator("#lfops-save-result")
            for i in range(saves + 1):  # baseline: LlamaBoard's Preview, the same form inputs, no save
                train.get_by_label("Learning rate").fill(f"{i + 3}e-6")
                t = time.perf_counter()
                train.get_by_role("button", name="Preview command").click()
                expect(train.get_by_text(f"--learning_rate {float(f'{i + 3}e-6')}")).to_be_visible(timeout=60_000)
                if i:
                    previews.append(time.perf_counter() - t)
            for i in range(saves + 1):  # the first click warms up
                train.get_by_label("Learning rate").fill(f"{i + 3}e-5")
                page.locator("#lfops-config-name textarea").fill(f"click-{i}")
                t = time.perf_counter()
                page.locator("#lfops-save-btn").click()
                expect(result).to_contain_text(f"alice/click-{i}", timeout=60_000)
                elapsed = time.perf_counter() - t
                out = subprocess.run(
                    ["git", "-C", origin, "rev-parse", "--verify", f"refs/heads/alice/click-{i}"],
                    capture_output=True,
                    text=True,
                )
                assert out.returncode == 0 and re.search(out.stdout.strip()[:12], result.inner_text())
                if i:
                    times.append(elapsed)
            browser.close()
    finally:
        stop(proc)
    return times, previews


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--saves", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lfops-bench-webui-") as tmp_name:
        tmp = Path(tmp_name)
        workspace = tmp / "ws"
        init = subprocess.run(
            [LFOPS, "--workspace", str(workspace), "init"], check=True, capture_output=True, text=True
        )
        passwords = printed_passwords(init.stdout)
        print(f"cold starts ({args.starts} each, alternating):", flush=True)
        starts = bench_starts(workspace, passwords, args.starts, tmp)
        print(f"saves ({args.saves} each, interleaved):", flush=True)
        saves = bench_saves(workspace, passwords, args.saves, tmp)
        clicks, previews = bench_browser_saves(workspace, passwords, max(3, args.saves // 2), tmp)

    r = starts["results"]
    p_s, o_s = median(r["plain"]["s"]), median(r["lfops"]["s"])
    p_m, o_m = median(r["plain"]["rss"]), median(r["lfops"]["rss"])
    p_c, o_c = median(r["plain"]["cpu"]), median(r["lfops"]["cpu"])
    signed = median(starts["signed"])
    print_table(
        ["", "llamafactory-cli webui", "lfops webui", "ratio"],
        [
            ["first page served (s)", f"{p_s:.2f}", f"{o_s:.2f}", f"{o_s / p_s:.2f}x"],
            ["CPU time to first page (s, user + system)", f"{p_c:.2f}", f"{o_c:.2f}", f"{o_c / p_c:.2f}x"],
            ["resident memory (MiB)", f"{p_m:.0f}", f"{o_m:.0f}", f"{o_m / p_m:.2f}x"],
            [
                "signed-in page (s, lfops: start + sign-in + page)",
                f"{p_s:.2f}",
                f"{signed:.2f}",
                f"{signed / p_s:.2f}x",
            ],
        ],
        title=f"Start to first page served and RSS of the process tree (median of {args.starts})",
    )
    raw_ms = median(saves["raw"]) * 1e3
    rows = [["raw git in a clone: switch -c, write, add, commit (no push)", f"{raw_ms:.1f}", "1.00x"]]
    for label, xs in (
        ("backend ChangeRequests.save (validate, commit, push, CR row)", saves["backend"]),
        ("WebUI Save handler (form -> LlamaBoard args -> save)", saves["handler"]),
        (f"LlamaBoard's Preview button in Chromium, same form (n={len(previews)}): Gradio round trip", previews),
        (f"Save button in Chromium until the result shows (n={len(clicks)})", clicks),
    ):
        if xs:
            rows.append([label, f"{median(xs) * 1e3:.1f}", f"{median(xs) * 1e3 / raw_ms:.1f}x"])
    print_table(
        ["path", "p50 ms", "ratio to raw git"],
        rows,
        title=f"Save to a commit on the branch (median of {args.saves}; ms)",
    )


if __name__ == "__main__":
    main()
