"""Latency of each backend.forge verb against the real Gitea of scripts/gitea.sh, beside the same raw REST call made
with a bare httpx client, and the time from an API call to its webhook's arrival at a local receiver.

    eval "$(scripts/gitea.sh start)"
    PYTHONPATH=$PWD .venv/bin/python bench/forge_gitea.py [--iterations 20]

Each iteration pushes a fresh branch and walks one pull request through open -> status -> approve -> merge, so the
numbers include Gitea's own work (mergeability checks, the merge itself); p50 and p95 in milliseconds."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository first on the path

import httpx  # noqa: E402

from bench.common import median, percentile, print_table, stopwatch, wait_for  # noqa: E402
from tests.gitea_fixtures import Delivery, gitea_available, make_sandbox  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    if not gitea_available():
        sys.exit('Gitea is not running: eval "$(scripts/gitea.sh start)" first')

    with tempfile.TemporaryDirectory() as tmp:
        box = make_sandbox(Path(tmp))
        try:
            run(box, args.iterations)
        finally:
            box.close()


def _client(box: Any, who: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{box.url}/api/v1/repos/{box.repo}",
        headers={"Authorization": f"token {box.users[who].token}"},
        timeout=30,
        trust_env=False,
    )


def run(box: Any, iterations: int) -> None:
    author, reviewer = box.forge("author"), box.forge("reviewer")
    raw, raw_reviewer = _client(box, "author"), _client(box, "reviewer")
    lfops: dict[str, list[float]] = defaultdict(list)
    bare: dict[str, list[float]] = defaultdict(list)
    arrival: list[float] = []
    for i in range(iterations):
        # lfops' forge verbs
        branch = f"bench-lfops-{i}"
        with stopwatch(lfops["git push (new branch)"]):
            sha = box.push_branch(branch, f"i: {i}\n")
        with stopwatch(lfops["open_pull_request"]):
            n = author.open_pull_request(branch, "main", "t", "b").number
        with stopwatch(lfops["get_pull_request"]):
            author.get_pull_request(n)
        with stopwatch(lfops["find_pull_request"]):
            author.find_pull_request(branch, "main")
        with stopwatch(lfops["update_pull_request"]):
            author.update_pull_request(n, body="b2")
        with stopwatch(lfops["comment"]):
            author.comment(n, "validation: ok")
        sent = time.monotonic()
        with stopwatch(lfops["set_commit_status"]):
            author.set_commit_status(sha, "success")
        with stopwatch(lfops["list_commit_statuses"]):
            author.list_commit_statuses(sha)
        with stopwatch(lfops["submit_review (approve)"]):
            reviewer.submit_review(n, "approved", commit_id=sha)
        with stopwatch(lfops["list_reviews"]):
            author.list_reviews(n)
        with stopwatch(lfops["merge (then read back)"]):
            author.merge(n, head_sha=sha)
        delivery = box.sink.wait_for(lambda d, s=sha: _is_status(d, s))
        arrival.append(delivery.at - sent)

        # the same calls, raw
        branch = f"bench-raw-{i}"
        with stopwatch(bare["git push (new branch)"]):
            sha = box.push_branch(branch, f"i: {i} raw\n")
        with stopwatch(bare["open_pull_request"]):
            n = raw.post("/pulls", json={"head": branch, "base": "main", "title": "t", "body": "b"}).json()["number"]
        with stopwatch(bare["get_pull_request"]):
            raw.get(f"/pulls/{n}").json()
        with stopwatch(bare["find_pull_request"]):
            raw.get(f"/pulls/main/{branch}").json()
        with stopwatch(bare["update_pull_request"]):
            raw.patch(f"/pulls/{n}", json={"body": "b2"}).json()
        with stopwatch(bare["comment"]):
            raw.post(f"/issues/{n}/comments", json={"body": "ok"})
        with stopwatch(bare["set_commit_status"]):
            raw.post(f"/statuses/{sha}", json={"state": "success", "context": "lfops/validate", "description": ""})
        with stopwatch(bare["list_commit_statuses"]):
            raw.get(f"/commits/{sha}/statuses").json()
        with stopwatch(bare["submit_review (approve)"]):
            raw_reviewer.post(f"/pulls/{n}/reviews", json={"event": "APPROVED", "body": "", "commit_id": sha}).json()
        with stopwatch(bare["list_reviews"]):
            raw.get(f"/pulls/{n}/reviews").json()
        with stopwatch(bare["merge (then read back)"]):
            _raw_merge(raw, n, sha)
    raw.close()
    raw_reviewer.close()

    print_table(
        ["call", "lfops p50", "lfops p95", "raw REST p50", "raw REST p95"],
        [[name, *(f"{ms:.1f}" for ms in (*p50_p95(values), *p50_p95(bare[name])))] for name, values in lfops.items()],
        title=f"Gitea {box.url} ({iterations} pull requests each side; milliseconds)",
    )
    p50, p95 = p50_p95(arrival)
    print(f"\nwebhook (status) arrival after the API call: p50 {p50:.0f} ms, p95 {p95:.0f} ms")


def p50_p95(seconds: list[float]) -> tuple[float, float]:
    """Median and 95th percentile, in milliseconds."""
    return median(seconds) * 1000, percentile(seconds, 95) * 1000


def _is_status(delivery: Delivery, sha: str) -> bool:
    if delivery.headers.get("X-Gitea-Event-Type") != "status":
        return False
    return json.loads(delivery.body).get("sha") == sha


def _raw_merge(raw: httpx.Client, number: int, sha: str) -> Any:
    """Gitea's merge, retried while it still checks mergeability (as GiteaForge.merge does)."""

    def answered() -> httpx.Response | None:
        response = raw.post(f"/pulls/{number}/merge", json={"Do": "merge", "head_commit_id": sha})
        busy = response.status_code == 405 and "try again later" in response.text.lower()
        return None if busy else response

    response = wait_for(answered, timeout=20, interval=0.2, what=f"Gitea to merge pull request #{number}")
    response.raise_for_status()
    return raw.get(f"/pulls/{number}").json()


if __name__ == "__main__":
    main()
