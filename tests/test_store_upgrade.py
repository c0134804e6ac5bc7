"""Migrations run once, on purpose: `lfops db upgrade` (and init), never on open; concurrent upgraders are safe."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from backend.errors import StoreUnavailable
from backend.store import _UPGRADE_LOCK_KEY, Store, _alembic_config, required_revision
from tests.helpers import LFOPS, lfops_env, wait_for

TABLES = {"users", "change_requests", "reviews", "configs", "runs", "metrics", "model_versions", "audit_events"}


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request, tmp_path) -> str:
    """An empty database that no lfops has touched."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_database")
    return f"sqlite:///{tmp_path}/fresh.db"


def lfops(*args: str, url: str, ws: Path, **env: str) -> subprocess.Popen:
    full_env = lfops_env(ws, LFOPS_DATABASE_URL=url, **env)
    return subprocess.Popen([LFOPS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)


def test_opening_a_store_changes_nothing_and_a_session_says_what_to_run(fresh_url):
    store = Store(fresh_url)
    with pytest.raises(StoreUnavailable) as info, store.session():
        pass
    assert str(info.value) == (
        f"database schema is at none (empty database), lfops needs {required_revision()}: run `lfops db upgrade`"
    )
    assert not TABLES & set(inspect(store.engine).get_table_names())  # nothing was created by opening or checking
    assert store.upgrade() == ("", required_revision())
    assert TABLES <= set(inspect(store.engine).get_table_names())
    with store.session() as s:
        assert s.execute(text("SELECT count(*) FROM users")).scalar() == 0
    assert Store(fresh_url).upgrade() == (required_revision(), required_revision())  # a second upgrade is a no-op
    store.dispose()


def test_a_schema_behind_or_ahead_is_named(fresh_url):
    cfg = _alembic_config()
    engine = create_engine(fresh_url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")  # what an older lfops left
    store = Store(fresh_url)
    with pytest.raises(StoreUnavailable, match=f"^database schema is at 0001, lfops needs {required_revision()}: run"):
        store.require_current_schema()
    store.upgrade()
    store.require_current_schema()
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    with pytest.raises(
        StoreUnavailable, match="at 0099_from_the_future, which this lfops does not know.*upgrade lfops$"
    ):
        Store(fresh_url).require_current_schema()
    store.dispose()
    engine.dispose()


def test_a_cli_call_on_an_un_upgraded_database_says_run_db_upgrade(fresh_url, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    proc = lfops("--user", "alice", "review", "list", url=fresh_url, ws=ws, LFOPS_PASSWORD="x")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert err == (
        f"error: database schema is at none (empty database), lfops needs {required_revision()}: "
        "run `lfops db upgrade`\n"
    )
    proc = lfops("db", "upgrade", url=fresh_url, ws=ws)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.endswith(f"schema upgraded from none (empty) to {required_revision()}\n")
    proc = lfops("db", "upgrade", url=fresh_url, ws=ws)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.endswith(f"schema already at {required_revision()}\n"), err
    proc = lfops("--user", "alice", "review", "list", url=fresh_url, ws=ws, LFOPS_PASSWORD="x")
    _, err = proc.communicate(timeout=120)
    assert "wrong user name or password" in err  # past the schema check: the database is usable


def _waiting_on_upgrade_lock(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        ).scalar()
    engine.dispose()
    return waiting


def test_two_processes_upgrading_a_fresh_postgresql_database_at_once_both_succeed(pg_database, tmp_path):
    # Hold the upgrade lock while both start, so they are certainly inside `upgrade` at the same time; then let go.
    holder = create_engine(pg_database)
    conn = holder.connect()
    conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
    procs = [lfops("db", "upgrade", url=pg_database, ws=tmp_path / f"ws{i}") for i in range(2)]

    def both_waiting() -> bool:
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        return _waiting_on_upgrade_lock(pg_database) >= 2

    wait_for(both_waiting, timeout=120, what="the upgraders to wait on the lock")
    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _UPGRADE_LOCK_KEY})
    conn.close()
    holder.dispose()
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    outs = sorted(out.split(": schema ")[1] for out, _ in results)
    assert outs == [f"already at {required_revision()}\n", f"upgraded from none (empty) to {required_revision()}\n"]
    store = Store(pg_database)
    store.require_current_schema()
    assert TABLES <= set(inspect(store.engine).get_table_names())
    store.dispose()


def test_concurrent_upgrades_without_a_head_start(fresh_url, tmp_path):
    procs = [lfops("db", "upgrade", url=fresh_url, ws=tmp_path) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    assert sum("upgraded from none" in out for out, _ in results) == 1
    store = Store(fresh_url)
    store.require_current_schema()
    store.dispose()
