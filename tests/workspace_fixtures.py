"""A real workspace (bare Git origin, SQLite or PostgreSQL, tiny model) per test, made fast by copying one
initialised template; and a fresh PostgreSQL database per test. Registered for every test by conftest.py."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from backend.settings import Settings
from backend.workspace import Workspace
from tests.helpers import git, need_service

DEMO_USERS = (("admin", "admin"), ("alice", "analyst"), ("rita", "reviewer"))


@dataclass
class Env:
    ws: Workspace
    passwords: dict[str, str]

    def actor(self, name: str):
        return self.ws.login(name, self.passwords[name])

    @property
    def origin(self) -> Path:
        return Path(self.ws.settings.repo_url)

    def origin_git(self, *args: str) -> str:
        return git(self.origin, *args)

    def example_yaml(self) -> bytes:
        return self.ws.repo.read(self.ws.repo.sync_main(), "configs/example.yaml")


@pytest.fixture(scope="session")
def template_workspace(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("template") / "ws"
    result = Workspace(Settings.from_env(root)).init()
    return root, {name: pw for name, (_role, pw) in result.credentials.items()}


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    admin_url = os.environ.get("LFOPS_TEST_PG_URL")
    need_service("PostgreSQL (LFOPS_TEST_PG_URL)", bool(admin_url))
    name = f"lfops_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield admin_url.rsplit("/", 1)[0] + "/" + name
    _drop_database(admin, name)
    admin.dispose()


def _drop_database(admin, name: str) -> None:
    # An autovacuum worker may be in the database at this moment; without pg_signal_backend, FORCE cannot end it.
    for attempt in range(10):
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except DBAPIError:
            if attempt == 9:
                raise
            time.sleep(0.5)


def make_env(template: tuple[Path, dict[str, str]], dest: Path, database_url: str | None = None) -> Env:
    """A copy of the template workspace at `dest` (the tiny model linked, not copied); on `database_url` a fresh
    database gets the schema and the template's users with the same passwords."""
    src, passwords = template
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns("models"))
    (dest / "models").symlink_to(src / "models")
    settings = Settings.from_env(dest)
    git(settings.mirror_dir, "remote", "set-url", "origin", settings.repo_url)
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
        ws = Workspace(settings)
        ws.store.upgrade()  # a fresh database: the schema is made on purpose, as `lfops db upgrade` does
        from backend.auth import add_user

        with ws.store.session() as s:  # same users and passwords as the template
            for name, role in DEMO_USERS:
                add_user(s, name, role, passwords[name])
        return Env(ws, passwords)
    return Env(Workspace(settings), passwords)


@pytest.fixture
def env(template_workspace, tmp_path) -> Iterator[Env]:
    e = make_env(template_workspace, tmp_path / "ws")
    yield e
    e.ws.store.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_env(request, template_workspace, tmp_path) -> Iterator[Env]:
    """The same workspace on SQLite and on a real PostgreSQL server."""
    url = request.getfixturevalue("pg_database") if request.param == "postgresql" else None
    e = make_env(template_workspace, tmp_path / "ws", url)
    yield e
    e.ws.store.dispose()
