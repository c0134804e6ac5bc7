"""Two real app processes (`lfops webui` on two ports) on one workspace and one PostgreSQL database: one leads the
run monitor, the other stands by. A real tiny training run is launched; its leader is killed with SIGKILL while it
trains; the other replica takes over and follows the run to the end, storing every metric row exactly once. A
session signed in on one replica holds on the other, and after its replica died."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from backend.store.models import Metric
from tests.helpers import wait_for
from tests.replica_fixtures import LONG, leader_of, logged_metrics, sign_in, start_replica, whoami
from tests.runs_fixtures import approved_merge, kill_leftover_runs
from tests.workspace_fixtures import make_env


@pytest.fixture
def pg_env(pg_database, template_workspace, tmp_path):
    env = make_env(template_workspace, tmp_path / "ws", pg_database)
    yield env, pg_database
    kill_leftover_runs(env.ws)
    env.ws.store.dispose()


def _rows(ws, run_id: int) -> list[tuple[int, str]]:
    with ws.store.session() as s:
        return [(step, key) for step, key in s.execute(select(Metric.step, Metric.key).where(Metric.run_id == run_id))]


def test_killing_the_leader_mid_run_hands_tracking_to_the_other_replica(pg_env, tmp_path):
    env, url = pg_env
    ws, workspace = env.ws, env.ws.settings.workspace
    cr, _commit = approved_merge(env, "failover", **LONG)
    replicas = [start_replica(workspace, url, "a", tmp_path)]
    try:
        wait_for(lambda: leader_of(replicas), 60, 0.2, "replica a to lead")
        replicas.append(start_replica(workspace, url, "b", tmp_path))
        a, b = replicas
        assert (a.leader()["role"], b.leader()["role"]) == ("leader", "standby")
        assert b.leader()["holder"].endswith(f":{a.pid}")
        cookies = sign_in(a, "rita", env.passwords["rita"])
        assert whoami(b, cookies) == "rita"  # a session made by one replica holds on the other

        alice = env.actor("alice")
        run = ws.runs.launch(alice, cr)  # from a third process: the leader tracks it
        wait_for(lambda: _rows(ws, run.id), 240, 0.1, "the leader to store the first metric rows")
        assert ws.runs.get(alice, run.id).status == "running"
        out = Path(ws.runs.runner.output_dir(run.external_id))
        steps_at_kill = {step for step, _ in logged_metrics(out)}  # read before the kill: the hand-over takes a while
        a.kill()

        assert wait_for(lambda: leader_of([b]), 60, 0.1, "replica b to take the lead") is b
        assert b.leader()["holder"].endswith(f":{b.pid}")
        final = wait_for(
            lambda: (v := ws.runs.get(alice, run.id)).status not in ("queued", "pending", "running") and v,
            600,
            0.5,
            "the run to finish, tracked by replica b",
        )
        assert final.status == "succeeded", final.reason
        assert {step for step, _ in logged_metrics(out)} > steps_at_kill  # it trained on after the kill

        rows = _rows(ws, run.id)
        duplicates = [pair for pair, n in Counter(rows).items() if n > 1]
        assert duplicates == []
        assert logged_metrics(out) <= set(rows)  # no logged metric lost
        assert ws.registry.for_run(run.id) is not None  # and registered, once
        assert whoami(b, cookies) == "rita"  # the session outlived the replica that made it
    finally:
        for replica in replicas:
            replica.server.stop()
