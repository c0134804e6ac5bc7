"""Benchmark: `save()` (validate, commit, push to the local bare origin, change-request row) against raw git.

Raw git is what a person types: `git switch -c`, write the file, `git add`, `git commit` in a working clone.
Both run on a repository with 10 and with 10,000 earlier commits, side by side in this process; then 16 saves at
once, all of which must land.

    .venv/bin/python bench/save.py [--ops 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository first on the path

from bench.common import demo_workspace, git, git_clone, median, percentile, print_table, stopwatch  # noqa: E402


def add_history(origin: Path, n: int) -> None:
    """n earlier commits on main, each rewriting one of 100 config files, written by git fast-import."""
    if n <= 0:
        return
    head = git(origin, "rev-parse", "main").strip()
    lines = []
    for i in range(n):
        body = f"learning_rate: {1e-5 * (i + 1)}\nseed: {i}\n"
        msg = f"history {i}"
        lines += [
            "commit refs/heads/main",
            f"committer bench <bench@x> {1700000000 + i} +0000",
            f"data {len(msg)}",
            msg,
        ]
        if i == 0:
            lines.append(f"from {head}")
        lines += [f"M 100644 inline history/h{i % 100}.yaml", f"data {len(body)}", body.rstrip("\n")]
        lines.append("")
    git(origin, "fast-import", "--quiet", input="\n".join(lines) + "\n")


def percentiles(xs: list[float]) -> tuple[float, float]:
    return median(xs), percentile(xs, 95)


def bench_repo(history: int, ops: int, root: Path) -> dict:
    ws, passwords = demo_workspace(root / f"ws{history}")
    origin = Path(ws.settings.repo_url)
    add_history(origin, history)
    ws.repo.fetch()
    alice = ws.login("alice", passwords["alice"])
    base = ws.repo.read(ws.repo.sync_main(), "configs/example.yaml")

    clone = git_clone(origin, root / f"clone{history}", user="bench", email="bench@x")

    ws.changes.save(alice, base.replace(b"seed: 42", b"seed: 100000"), "warmup", "warm up")  # imports, caches
    raw, ours = [], []
    for i in range(ops):  # interleaved, so both see the same machine state
        with stopwatch(raw):
            git(clone, "switch", "-q", "-c", f"raw{i}", "main")
            (clone / "configs" / f"raw{i}.yaml").write_bytes(base.replace(b"seed: 42", f"seed: {i}".encode()))
            git(clone, "add", f"configs/raw{i}.yaml")
            git(clone, "commit", "-q", "-m", f"raw {i}")

        data = base.replace(b"seed: 42", f"seed: {i}".encode())
        with stopwatch(ours):
            ws.changes.save(alice, data, f"cfg{i}", f"save {i}")

    # 16 saves at once, from 16 threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def one(i: int) -> None:
        barrier.wait()
        try:
            ws.changes.save(alice, base.replace(b"seed: 42", f"seed: {5000 + i}".encode()), f"par{i}", "parallel")
        except BaseException as exc:  # noqa: BLE001 - counted below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    landed = len(
        [
            b
            for b in git(origin, "for-each-ref", "--format=%(refname)", "refs/heads/alice/").split()
            if b.startswith("refs/heads/alice/par")
        ]
    )
    ws.store.dispose()
    return {
        "history": history,
        "raw": percentiles(raw),
        "ours": percentiles(ours),
        "landed": landed,
        "errors": len(errors),
        "wall16": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lfops-bench-") as tmp:
        results = [bench_repo(h, args.ops, Path(tmp)) for h in (10, 10_000)]
    rows = []
    for r in results:
        (rp50, rp95), (op50, op95) = r["raw"], r["ours"]
        rows.append(
            [
                f"{r['history']:,}",
                *(f"{seconds * 1e3:.1f}" for seconds in (rp50, rp95, op50, op95)),
                f"{op50 / rp50:.2f}x",
                f"{r['landed']}/16 ({r['errors']} errors)",
                f"{r['wall16'] * 1e3:.0f} ms",
            ]
        )
    headers = ["earlier commits", "raw git p50", "raw git p95", "save() p50", "save() p95", "p50 ratio"]
    headers += ["16 concurrent saves landed", "16 concurrent wall"]
    print_table(headers, rows, align="r" * len(headers), title=f"save() vs raw git, {args.ops} operations each (ms)")


if __name__ == "__main__":
    main()
