"""lfops with a real Gitea as its forge (scripts/gitea.sh): Save to pull request through lfops beside the same work
done directly, and the time from a review on the forge to lfops' state updated by its webhook.

    eval "$(scripts/gitea.sh start)"
    PYTHONPATH=$PWD .venv/bin/python bench/forge_save.py [--iterations 9]

Save, side by side and interleaved (ms, median and p95 of the iterations):
- lfops: `ChangeRequests.save` with LFOPS_FORGE=gitea: validate, commit, push the branch, open the pull request with
  its body (hyperparameter table, validation, hashes, link), post `lfops/validate`, record the rows;
- direct: the same file written in a working clone, `git commit`, `git push` of a new branch, then the raw REST calls
  `POST /pulls` and `POST /statuses/{sha}` with httpx (no validation, no table, no database).

Webhook: the reviewer approves on the forge; Gitea delivers `pull_request_review_approved` to lfops' real
`POST /api/v1/forge/webhook` (a uvicorn server of `create_app` on 127.0.0.1); the clock stops when lfops' change
request reads `approved`. Reported beside the endpoint's own time (verify, re-read the pull request and reviews, write).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository first on the path

import httpx  # noqa: E402

from bench.common import demo_workspace, free_port, git, median, percentile, print_table, stopwatch, wait_for  # noqa: E402
from tests.gitea_fixtures import GITEA_TOKEN, GiteaSandbox, gitea_available, make_sandbox  # noqa: E402

PROTECTION = {
    "rule_name": "main",
    "required_approvals": 1,
    "enable_status_check": True,
    "status_check_contexts": ["lfops/validate"],
    "dismiss_stale_approvals": True,
}
HOOK_EVENTS = ["pull_request", "pull_request_sync", "pull_request_review_approved", "pull_request_review_rejected"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=9)
    args = parser.parse_args()
    if not gitea_available():
        sys.exit('Gitea is not running: eval "$(scripts/gitea.sh start)" first')
    with tempfile.TemporaryDirectory() as tmp:
        box = make_sandbox(Path(tmp))
        try:
            run(box, Path(tmp), args.iterations)
        finally:
            box.close()


def _auth_env(token: str) -> dict[str, str]:
    return {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: token {token}",
    }


def _forge_workspace(box: GiteaSandbox, tmp: Path) -> tuple[Any, dict[str, str]]:
    from backend.workspace import Workspace

    ws, passwords = demo_workspace(tmp / "ws")
    repo = f"/repos/{box.repo}"
    box.admin.delete(f"{repo}/branch_protections/main").raise_for_status()
    origin = ws.settings.workspace / "origin.git"
    remote = f"{box.url}/{box.repo}.git"
    subprocess.run(
        ["git", "-C", str(origin), "push", "-q", "--force", remote, "main:main"],
        check=True,
        capture_output=True,
        env=_auth_env(GITEA_TOKEN),
    )
    box.admin.post(f"{repo}/branch_protections", json=PROTECTION).raise_for_status()
    box.git("fetch", "-q", "origin")
    box.git("checkout", "-q", "-B", "main", "origin/main")
    users = box.users
    settings = ws.settings.model_copy(
        update={
            "repo_url": remote,
            "forge": "gitea",
            "forge_url": box.url,
            "forge_repo": box.repo,
            "forge_token": users["author"].token,
            "forge_webhook_secret": box.webhook_secret,
            "forge_user_map": {users["author"].login: "alice", users["reviewer"].login: "rita"},
        }
    )
    git(settings.mirror_dir, "remote", "set-url", "origin", remote)
    forge_ws = Workspace(settings)
    forge_ws.repo.fetch()
    return forge_ws, passwords


def _serve(ws: Any) -> tuple[str, Any]:
    """lfops' API on a free loopback port, in this process (so the endpoint's own time can be measured)."""
    import uvicorn

    from backend.api import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ws), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    wait_for(lambda: server.started, timeout=60, what="the lfops API")
    return f"http://127.0.0.1:{port}", server


def run(box: GiteaSandbox, tmp: Path, iterations: int) -> None:
    ws, passwords = _forge_workspace(box, tmp)
    alice, rita_forge = ws.login("alice", passwords["alice"]), box.forge("reviewer")
    example = ws.repo.read(ws.repo.sync_main(), "configs/example.yaml")
    raw = httpx.Client(
        base_url=f"{box.url}/api/v1/repos/{box.repo}",
        headers={"Authorization": f"token {box.users['author'].token}"},
        timeout=30,
        trust_env=False,
    )
    url, server = _serve(ws)
    box.admin.post(
        f"/repos/{box.repo}/hooks",
        json={
            "type": "gitea",
            "active": True,
            "events": HOOK_EVENTS,
            "config": {"url": f"{url}/api/v1/forge/webhook", "content_type": "json", "secret": box.webhook_secret},
        },
    ).raise_for_status()
    handler: list[float] = []
    receive = ws.forge_sync.receive

    def timed_receive(headers: Any, body: bytes) -> str:
        with stopwatch(handler):
            return receive(headers, body)

    ws.forge_sync.receive = timed_receive  # type: ignore[method-assign]

    lfops_ms: list[float] = []
    direct_ms: list[float] = []
    webhook_ms: list[float] = []
    for i in range(iterations):
        config = example.replace(b"lora_rank: 8", f"lora_rank: {100 + i}".encode())
        with stopwatch(lfops_ms):
            saved = ws.changes.save(alice, config, f"bench{i}", f"bench {i}")
        with stopwatch(direct_ms):
            branch = f"direct/bench{i}"
            box.git("checkout", "-q", "-B", branch, "origin/main")
            (box.clone / "configs" / f"direct{i}.yaml").write_bytes(config)
            box.git("add", "configs")
            box.git("commit", "-q", "-m", f"direct {i}")
            box.git("push", "-q", "origin", f"{branch}:{branch}")
            sha = box.git("rev-parse", "HEAD")
            number = raw.post("/pulls", json={"head": branch, "base": "main", "title": f"direct {i}", "body": "b"})
            number.raise_for_status()
            raw.post(f"/statuses/{sha}", json={"state": "success", "context": "lfops/validate"}).raise_for_status()
        number = ws.forge_sync.pull_request(saved.change_request).number
        rita_forge.submit_review(number, "approved", "ok", commit_id=saved.commit)
        approved_at = time.perf_counter()
        wait_for(
            lambda cr=saved.change_request: ws.changes.get(alice, cr).status == "approved",
            timeout=60,
            interval=0.005,
            what="lfops' change request approved by the webhook",
        )
        webhook_ms.append((time.perf_counter() - approved_at) * 1000)
    server.should_exit = True
    lfops_ms, direct_ms, handler_ms = ([x * 1000 for x in xs] for xs in (lfops_ms, direct_ms, handler))  # stopwatch: s

    print_table(
        [f"path (n={iterations})", "p50 ms", "p95 ms", "vs direct"],
        [
            [
                "direct: git commit + push, POST /pulls, POST /statuses",
                f"{median(direct_ms):.0f}",
                f"{percentile(direct_ms, 95):.0f}",
                "1.00x",
            ],
            [
                "lfops save (validate, push, open with table, status, rows)",
                f"{median(lfops_ms):.0f}",
                f"{percentile(lfops_ms, 95):.0f}",
                f"{median(lfops_ms) / median(direct_ms):.2f}x",
            ],
        ],
        title="Save to pull request on Gitea",
    )
    print_table(
        ["measure", "n", "p50 ms", "p95 ms"],
        [
            [
                "approval on the forge -> lfops' change request approved (webhook)",
                len(webhook_ms),
                f"{median(webhook_ms):.0f}",
                f"{percentile(webhook_ms, 95):.0f}",
            ],
            [
                "the webhook endpoint alone, per delivery (verify, re-read, write)",
                len(handler_ms),
                f"{median(handler_ms):.0f}",
                f"{percentile(handler_ms, 95):.0f}",
            ],
        ],
        title="Webhook to lfops state",
    )


if __name__ == "__main__":
    main()
