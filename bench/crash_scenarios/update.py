"""Kill `update` (build, push, record) at every step boundary and at random moments; reconcile after each kill."""

from __future__ import annotations

from backend.review import UPDATE_STEPS
from bench.crash_scenarios import _harness as h

NAME = "update"


def run(kills: int, seed: int) -> dict:
    with h.scratch_target() as target:
        return run_on(target, kills, seed)


def run_on(
    target: h.Target, kills: int, seed: int, random_kills: bool = True, workers: h.Workers | None = None
) -> dict:
    alice, rita = target.actor("alice"), target.actor("rita")

    def job(i: int) -> dict:
        saved = target.ws.changes.save(alice, target.example_yaml(5000 + i), f"u{seed}k{i}", f"to revise {i}")
        target.ws.changes.request_changes(rita, saved.change_request, "another seed, please")
        yaml = target.example_yaml(6000 + i).decode()
        return {"op": "update", "user": "alice", "id": saved.change_request, "message": f"revised {i}", "yaml": yaml}

    return h.drive(target, UPDATE_STEPS, job, kills, seed, random_kills, workers)
