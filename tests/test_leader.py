"""Leader election (backend.leader) on SQLite (a file lock) and PostgreSQL (an advisory lock on a connection of its
own): one leader at a time, the standby takes over when the leader steps down or its connection dies, and the lease
row, /readyz and /metrics say who leads."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from backend.leader import Leadership, PostgresLock
from backend.ops import Metrics, leader_detail


def _pair(ws, tmp_path: Path) -> tuple[Leadership, Leadership, list[str]]:
    events: list[str] = []
    pair = []
    for me in ("replica-a", "replica-b"):
        lead = Leadership(ws.store, tmp_path / "locks", me=me)
        lead.on_elected = lambda me=me: events.append(f"{me} elected")
        lead.on_lost = lambda me=me: events.append(f"{me} lost")
        pair.append(lead)
    return pair[0], pair[1], events


def test_one_leader_at_a_time_and_the_standby_takes_over(any_db_env, tmp_path):
    a, b, events = _pair(any_db_env.ws, tmp_path)
    try:
        a.step()
        b.step()
        b.step()
        assert (a.leading, b.leading) == (True, False) and events == ["replica-a elected"]
        assert leader_detail(b)["holder"] == "replica-a" and leader_detail(b)["role"] == "standby"
        assert leader_detail(a)["role"] == "leader"
        a.step()  # the heartbeat holds
        assert a.leading

        a.stop()  # steps down: duties stopped, lock freed
        b.step()
        assert (a.leading, b.leading) == (False, True)
        assert events == ["replica-a elected", "replica-a lost", "replica-b elected"]
        assert leader_detail(a)["holder"] == "replica-b"

        metrics = Metrics(any_db_env.ws.store)
        metrics.watch_leadership(b)
        text_ = metrics.exposition()[0].decode()
        assert 'lfops_leader{lease="run-monitor"} 1.0' in text_
        assert 'lfops_leader_changes_total{lease="run-monitor"} 1.0' in text_
    finally:
        a.stop()
        b.stop()


def test_a_dead_connection_ends_the_lead_on_postgresql(pg_database, template_workspace, tmp_path):
    """The leader's connection is terminated by the server (as when its process dies): the heartbeat notices, the
    duties stop, and the standby gets the lock at its next round."""
    from tests.workspace_fixtures import make_env

    env = make_env(template_workspace, tmp_path / "ws", pg_database)
    a, b, events = _pair(env.ws, tmp_path)
    admin = create_engine(pg_database, isolation_level="AUTOCOMMIT")
    try:
        a.step()
        assert a.leading and isinstance(a.lock, PostgresLock)
        b.step()
        assert not b.leading
        with admin.connect() as conn:  # end replica-a's lock connection from the server's side
            ended = conn.execute(
                text(
                    # with a time-out it waits until the backend has gone, and its lock with it
                    "SELECT pg_terminate_backend(pid, 10000) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            ).all()
        assert ended == [(True,)]
        b.step()  # the lock went with the connection
        a.step()  # the heartbeat fails: replica-a stops its duties
        assert (a.leading, b.leading) == (False, True)
        assert events == ["replica-a elected", "replica-b elected", "replica-a lost"]
        a.step()
        assert not a.leading  # and stays standby while replica-b leads
    finally:
        a.stop()
        b.stop()
        admin.dispose()
        env.ws.store.dispose()
