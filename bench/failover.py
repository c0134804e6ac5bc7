"""Benchmark: leader failover between two app replicas (`lfops webui` on two ports, one workspace, one PostgreSQL).

Each round launches a real tiny training run (metrics logged every optimiser step), waits until the leader stores its
first metric rows, measures the steady gap between stored rows for a few seconds, then kills the leader with SIGKILL
and measures, from the kill:
  - lead: until the other replica's /readyz says it leads (PostgreSQL frees the advisory lock when the killed process'
    connection ends; the standby tries every second);
  - tracking: until the first metric row the new leader stores for the run (lead + its first monitor pass + the
    trainer's next logged step);
and checks that the run ends succeeded with every logged metric stored exactly once. A fresh replica then joins as
the standby for the next round. The baseline, side by side: the steady gap between stored rows under one leader.

    source /work/wt/services.env    # LFOPS_TEST_PG_URL: a PostgreSQL server the bench may create a database on
    .venv/bin/python bench/failover.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository first on the path

from sqlalchemy import create_engine, func, select, text  # noqa: E402

from bench.common import median, print_table, wait_for  # noqa: E402
from tests.replica_fixtures import LONG, leader_of, logged_metrics, start_replica  # noqa: E402
from tests.runs_fixtures import approved_merge, kill_leftover_runs  # noqa: E402
from tests.workspace_fixtures import make_env  # noqa: E402

POLL_S = 0.02
# Longer than the test's run: room for the steady-gap window before the kill.
BENCH_RUN = LONG | {"max_samples": 96}


def _latest_row(ws, run_id: int) -> int:
    from backend.store.models import Metric

    with ws.store.session() as s:
        return s.scalar(select(func.max(Metric.id)).where(Metric.run_id == run_id)) or 0


def _steady_gaps(ws, run_id: int, changes: int = 5, timeout_s: float = 60.0) -> list[float]:
    """Seconds between the moments new rows were seen stored (`changes` of them, at most `timeout_s`), one leader."""
    seen, last, gaps = _latest_row(ws, run_id), None, []
    until = time.monotonic() + timeout_s
    while len(gaps) < changes and time.monotonic() < until:
        now_row = _latest_row(ws, run_id)
        if now_row != seen:
            now = time.monotonic()
            if last is not None:
                gaps.append(now - last)
            seen, last = now_row, now
        time.sleep(POLL_S)
    return gaps


def one_round(env, cr: int, replicas: list, tmp: Path, n: int) -> dict:
    ws, alice = env.ws, env.actor("alice")
    leader = wait_for(lambda: leader_of(replicas), 120, 0.1, "a leader")
    standby = next(r for r in replicas if r is not leader and r.server.proc.poll() is None)
    run = ws.runs.launch(alice, cr)
    wait_for(lambda: _latest_row(ws, run.id), 300, POLL_S, "the first metric rows")
    gaps = _steady_gaps(ws, run.id)
    at_kill = _latest_row(ws, run.id)
    killed = time.monotonic()
    leader.kill()
    wait_for(lambda: standby.leader()["role"] == "leader", 120, POLL_S, "the standby to lead")
    lead_s = time.monotonic() - killed
    wait_for(lambda: _latest_row(ws, run.id) > at_kill, 300, POLL_S, "a row stored by the new leader")
    track_s = time.monotonic() - killed
    replicas.remove(leader)
    replicas.append(start_replica(ws.settings.workspace, ws.settings.database_url, f"r{n}", tmp))  # the new standby
    final = wait_for(
        lambda: (v := ws.runs.get(alice, run.id)).status not in ("queued", "pending", "running") and v, 600, 0.5
    )
    from backend.store.models import Metric

    with ws.store.session() as s:
        rows = list(s.execute(select(Metric.step, Metric.key).where(Metric.run_id == run.id)))
    out = Path(ws.runs.runner.output_dir(run.external_id))
    duplicates = sum(1 for count in Counter(map(tuple, rows)).values() if count > 1)
    lost = len(logged_metrics(out) - {tuple(r) for r in rows})
    return {
        "lead": lead_s,
        "track": track_s,
        "gap": median(gaps),
        "status": final.status,
        "duplicates": duplicates,
        "lost": lost,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    admin_url = os.environ.get("LFOPS_TEST_PG_URL")
    if not admin_url:
        print("set LFOPS_TEST_PG_URL (source /work/wt/services.env)", file=sys.stderr)
        return 2
    name = f"lfops_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    replicas: list = []
    with tempfile.TemporaryDirectory(prefix="lfops-failover-") as tmp_dir:
        tmp = Path(tmp_dir)
        from bench.common import demo_workspace

        template_ws, passwords = demo_workspace(tmp / "template")
        env = make_env((template_ws.settings.workspace, passwords), tmp / "ws", url)
        try:
            cr, _ = approved_merge(env, "failover-bench", **BENCH_RUN)
            for label in ("a", "b"):
                replicas.append(start_replica(env.ws.settings.workspace, url, label, tmp))
                wait_for(lambda: leader_of(replicas), 120, 0.1, "a leader")
            results = []
            for n in range(args.rounds):
                result = one_round(env, cr, replicas, tmp, n)
                print(f"round {n + 1}: {result}", file=sys.stderr, flush=True)
                results.append(result)
        finally:
            for replica in replicas:
                replica.server.stop()
            kill_leftover_runs(env.ws)
            env.ws.store.dispose()
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    ok = all(r["status"] == "succeeded" and not r["duplicates"] and not r["lost"] for r in results)
    lead, track, gap = (median(r[k] for r in results) for k in ("lead", "track", "gap"))
    print_table(
        ["", "median (s)", "min (s)", "max (s)", "x steady gap"],
        [
            [
                "kill -> standby leads",
                f"{lead:.2f}",
                f"{min(r['lead'] for r in results):.2f}",
                f"{max(r['lead'] for r in results):.2f}",
                f"{lead / gap:.1f}",
            ],
            [
                "kill -> first row stored by the new leader",
                f"{track:.2f}",
                f"{min(r['track'] for r in results):.2f}",
                f"{max(r['track'] for r in results):.2f}",
                f"{track / gap:.1f}",
            ],
            ["baseline: steady gap between stored rows (one leader)", f"{gap:.2f}", "", "", "1.0"],
        ],
        title=(
            f"Leader failover, {len(results)} kills (SIGKILL) of the leading `lfops webui` during a training run, "
            f"PostgreSQL; runs succeeded with no metric row lost or duplicated: {'yes' if ok else 'NO'}"
        ),
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
