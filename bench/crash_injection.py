"""Benchmark: crash every multi-step operation at every step boundary and at random moments, reconcile, count.

Every module in bench/crash_scenarios/ (save, merge, close, and whatever else lives there) is a scenario: it kills
its operation `--kills` times (half at each step boundary in turn, half by SIGKILL at a random moment), and after
each kill checks the invariants (bench/crash_scenarios/_harness.py), runs the reconcile, and checks them again.
One table row per scenario: kills, invariant violations right after the kills, and after the reconciles (goal: 0).

    .venv/bin/python bench/crash_injection.py [--kills 80] [--seed 1] [--only save,merge] [--pg-url URL]

--pg-url (or $LFOPS_BENCH_PG_URL) is a PostgreSQL admin URL: each scenario then runs on a fresh database there.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.crash_scenarios as scenarios  # noqa: E402
from bench.crash_scenarios import _harness  # noqa: E402


def scenario_modules(only: set[str] | None = None) -> list:
    found = []
    for info in sorted(pkgutil.iter_modules(scenarios.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.crash_scenarios.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run") and (not only or module.NAME in only):
            found.append(module)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=80, help="kills per scenario")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--pg-url", default=os.environ.get("LFOPS_BENCH_PG_URL"))
    args = parser.parse_args()
    if args.pg_url:
        os.environ[_harness.PG_URL_ENV] = args.pg_url
    database = "PostgreSQL" if args.pg_url else "SQLite"
    only = set(args.only.split(",")) if args.only else None
    print(f"crash injection on {database}, {args.kills} kills per scenario, seed {args.seed}\n")
    print(f"| {'scenario':10} | {'kills':>5} | {'violations before':>17} | {'violations after':>16} | notes")
    print(f"|{'-' * 12}|{'-' * 7}|{'-' * 19}|{'-' * 18}|------")
    totals = [0, 0, 0]
    failed = False
    for module in scenario_modules(only):
        started = time.monotonic()
        row = module.run(args.kills, args.seed)
        notes = f"{row.get('notes', '')} ({time.monotonic() - started:.0f} s)".strip()
        print(
            f"| {module.NAME:10} | {row['kills']:>5} | {row['violations_before']:>17} | "
            f"{row['violations_after']:>16} | {notes}",
            flush=True,
        )
        totals = [totals[0] + row["kills"], totals[1] + row["violations_before"], totals[2] + row["violations_after"]]
        failed |= row["violations_after"] > 0
    print(f"| {'total':10} | {totals[0]:>5} | {totals[1]:>17} | {totals[2]:>16} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
