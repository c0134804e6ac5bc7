"""Latency of each backend.forge verb against the real Gitea of scripts/gitea.sh, beside the same raw REST call made
with a bare httpx client, and the time from an API call to its webhook's arrival at a local receiver.

    eval "$(scripts/gitea.sh start)"
    PYTHONPATH=$PWD .venv/bin/python bench/forge_gitea.py [--iterations 20]

Each iteration pushes a fresh branch and walks one pull request through open -> status -> approve -> merge, so the
numbers include Gitea's own work (mergeability checks, the merge itself); p50 and p95 in milliseconds."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.gitea_fixtures import Delivery, gitea_available, make_sandbox  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


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


@contextmanager
def timer(table: dict[str, list[float]], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    table[name].append((time.perf_counter() - t0) * 1000)


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
        with timer(lfops, "git push (new branch)"):
            sha = box.push_branch(branch, f"i: {i}\n")
        with timer(lfops, "open_pull_request"):
            n = author.open_pull_request(branch, "main", "t", "b").number
        with timer(lfops, "get_pull_request"):
            author.get_pull_request(n)
        with timer(lfops, "find_pull_request"):
            author.find_pull_request(branch, "main")
        with timer(lfops, "update_pull_request"):
            author.update_pull_request(n, body="b2")
        with timer(lfops, "comment"):
            author.comment(n, "validation: ok")
        sent = time.monotonic()
        with timer(lfops, "set_commit_status"):
            author.set_commit_status(sha, "success")
        with timer(lfops, "list_commit_statuses"):
            author.list_commit_statuses(sha)
        with timer(lfops, "submit_review (approve)"):
            reviewer.submit_review(n, "approved", commit_id=sha)
        with timer(lfops, "list_reviews"):
            author.list_reviews(n)
        with timer(lfops, "merge (then read back)"):
            author.merge(n, head_sha=sha)
        delivery = box.sink.wait_for(lambda d, s=sha: _is_status(d, s))
        arrival.append((delivery.at - sent) * 1000)

        # the same calls, raw
        branch = f"bench-raw-{i}"
        with timer(bare, "git push (new branch)"):
            sha = box.push_branch(branch, f"i: {i} raw\n")
        with timer(bare, "open_pull_request"):
            n = raw.post("/pulls", json={"head": branch, "base": "main", "title": "t", "body": "b"}).json()["number"]
        with timer(bare, "get_pull_request"):
            raw.get(f"/pulls/{n}").json()
        with timer(bare, "find_pull_request"):
            raw.get(f"/pulls/main/{branch}").json()
        with timer(bare, "update_pull_request"):
            raw.patch(f"/pulls/{n}", json={"body": "b2"}).json()
        with timer(bare, "comment"):
            raw.post(f"/issues/{n}/comments", json={"body": "ok"})
        with timer(bare, "set_commit_status"):
            raw.post(f"/statuses/{sha}", json={"state": "success", "context": "lfops/validate", "description": ""})
        with timer(bare, "list_commit_statuses"):
            raw.get(f"/commits/{sha}/statuses").json()
        with timer(bare, "submit_review (approve)"):
            raw_reviewer.post(f"/pulls/{n}/reviews", json={"event": "APPROVED", "body": "", "commit_id": sha}).json()
        with timer(bare, "list_reviews"):
            raw.get(f"/pulls/{n}/reviews").json()
        with timer(bare, "merge (then read back)"):
            _raw_merge(raw, n, sha)
    raw.close()
    raw_reviewer.close()

    print(f"Gitea {box.url} ({iterations} pull requests each side; milliseconds)\n")
    print("| call | lfops p50 | lfops p95 | raw REST p50 | raw REST p95 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, values in lfops.items():
        other = bare[name]
        print(
            f"| {name} | {statistics.median(values):.1f} | {_pct(values, 0.95):.1f} "
            f"| {statistics.median(other):.1f} | {_pct(other, 0.95):.1f} |"
        )
    print(
        f"\nwebhook (status) arrival after the API call: p50 {statistics.median(arrival):.0f} ms, "
        f"p95 {_pct(arrival, 0.95):.0f} ms"
    )


def _is_status(delivery: Delivery, sha: str) -> bool:
    if delivery.headers.get("X-Gitea-Event-Type") != "status":
        return False
    return json.loads(delivery.body).get("sha") == sha


def _raw_merge(raw: httpx.Client, number: int, sha: str) -> Any:
    """Gitea's merge, retried while it still checks mergeability (as GiteaForge.merge does)."""
    for _ in range(100):
        response = raw.post(f"/pulls/{number}/merge", json={"Do": "merge", "head_commit_id": sha})
        if response.status_code != 405 or "try again later" not in response.text.lower():
            break
        time.sleep(0.2)
    response.raise_for_status()
    return raw.get(f"/pulls/{number}").json()


if __name__ == "__main__":
    main()
