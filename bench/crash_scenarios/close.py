"""Kill `close` (record, delete the branch) at its step boundary and at random moments; reconcile after each kill."""

from __future__ import annotations

from backend.review import CLOSE_STEPS
from bench.crash_scenarios import _harness as h

NAME = "close"


def run(kills: int, seed: int) -> dict:
    with h.scratch_target() as target:
        return run_on(target, kills, seed)


def run_on(
    target: h.Target, kills: int, seed: int, random_kills: bool = True, workers: h.Workers | None = None
) -> dict:
    alice = target.actor("alice")

    def job(i: int) -> dict:
        saved = target.ws.changes.save(alice, target.example_yaml(3000 + i), f"c{seed}k{i}", f"to close {i}")
        return {"op": "close", "user": "alice", "id": saved.change_request}

    return h.drive(target, CLOSE_STEPS, job, kills, seed, random_kills, workers)
