"""Kill `merge` (build, push main, record, delete the branch) at every step boundary and at random moments; each
kill merges its own freshly approved change request; reconcile after each kill."""

from __future__ import annotations

from backend.review import MERGE_STEPS
from bench.crash_scenarios import _harness as h

NAME = "merge"


def run(kills: int, seed: int) -> dict:
    with h.scratch_target() as target:
        return run_on(target, kills, seed)


def run_on(
    target: h.Target, kills: int, seed: int, random_kills: bool = True, workers: h.Workers | None = None
) -> dict:
    alice, rita = target.actor("alice"), target.actor("rita")

    def job(i: int) -> dict:
        saved = target.ws.changes.save(alice, target.example_yaml(2000 + i), f"m{seed}k{i}", f"to merge {i}")
        target.ws.changes.approve(rita, saved.change_request)
        return {"op": "merge", "user": "rita", "id": saved.change_request}

    return h.drive(target, MERGE_STEPS, job, kills, seed, random_kills, workers)
