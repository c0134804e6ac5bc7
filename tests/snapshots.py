"""Whole-state snapshots, to prove a refused operation left the repository, the remote and the database as they were."""

from __future__ import annotations

import subprocess
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
