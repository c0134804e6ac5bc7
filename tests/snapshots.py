"""Whole-state snapshots, to prove a refused operation left the repository, the remote and the database as they were."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from sqlalchemy import MetaData, select


def git_state(repo: Path) -> str:
    """Every ref and what it points to."""
    return subprocess.run(
        ["git", "-C", str(repo), "for-each-ref", "--format=%(refname) %(objectname)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def db_state(store) -> dict[str, list[tuple]]:
    meta = MetaData()
    meta.reflect(store.engine)
    with store.engine.connect() as conn:
        return {name: sorted(map(tuple, conn.execute(select(table))), key=repr) for name, table in meta.tables.items()}


def snapshot(env) -> tuple:
    return git_state(env.origin), db_state(env.ws.store)


def quiet_snapshot(env, quiet_s: float = 1.0, timeout_s: float = 30.0) -> tuple:
    """A snapshot once nothing has changed for `quiet_s`: other processes (a gateway writing its sampled requests)
    finish what they started before the test's refused call is made."""
    deadline = time.monotonic() + timeout_s
    last = snapshot(env)
    while True:
        time.sleep(quiet_s)
        now = snapshot(env)
        if now == last:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"the workspace kept changing for {timeout_s:g} s")
        last = now
