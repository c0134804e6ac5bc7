"""Kill `save` (reserve, push, open) at every step boundary and at random moments; reconcile after each kill."""

from __future__ import annotations

from backend.review import SAVE_STEPS
from bench.crash_scenarios import _harness as h

NAME = "save"


def run(kills: int, seed: int) -> dict:
    with h.scratch_target() as target:
        return run_on(target, kills, seed)


def run_on(
    target: h.Target, kills: int, seed: int, random_kills: bool = True, workers: h.Workers | None = None
) -> dict:
    def job(i: int) -> dict:
        yaml = target.example_yaml(1000 + i).decode()
        return {"op": "save", "user": "alice", "name": f"s{seed}k{i}", "message": f"crash test {i}", "yaml": yaml}

    return h.drive(target, SAVE_STEPS, job, kills, seed, random_kills, workers)
