"""The SQL metadata store: an engine, sessions, and Alembic migrations shipped with the package (run on purpose)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from backend import redaction
from backend.errors import StoreUnavailable
from backend.filelock import file_lock
from backend.store import models

__all__ = ["Store", "models", "redact_url"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def redact_url(url: str) -> str:
    """The database URL without its password, for messages and logs (backend.redaction: however malformed)."""
    return redaction.redact_url(url)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API connection
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


# Any fixed number: PostgreSQL keys advisory locks per database, so it only has to differ from other advisory
# locks taken in lfops' own database.
_UPGRADE_LOCK_KEY = 0x1F0B5_5C4E


def _alembic_config() -> Any:
    """A fresh Alembic config per use: an upgrade hands it its connection, so it is never shared."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


@lru_cache(maxsize=1)
def _migrations() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config())


def required_revision() -> str:
    """The schema revision this lfops needs: the newest migration shipped with it."""
    return ",".join(sorted(_migrations().get_heads()))


def _is_known(revision: str) -> bool:
    """Whether every head in `revision` is a migration this lfops ships (else a newer lfops wrote it)."""
    from alembic.util import CommandError

    try:
        return all(_migrations().get_revision(r) is not None for r in revision.split(","))
    except CommandError:
        return False


class Store:
    """Owns the engine and hands out sessions. Opening one neither connects nor migrates: the first session checks
    that the schema is the one this lfops needs, and only `upgrade()` (`lfops db upgrade`, `lfops init`, the WebUI
    start) changes it."""

    def __init__(self, url: str) -> None:
        self.url = url
        if redaction.password_is_ambiguous(url):  # SQLAlchemy would take the password's tail for the host
            raise StoreUnavailable(f"database URL {redact_url(url)} is not usable: {redaction.AMBIGUOUS_AT}")
        kwargs: dict = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 10, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
            if url.startswith("postgresql"):
                kwargs["connect_args"] = {"connect_timeout": 5}
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            reason = redaction.redact(str(exc), url)
            raise StoreUnavailable(f"database URL {redact_url(url)} is not usable: {reason}") from None
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._schema_ok = False
        self._schema_lock = threading.Lock()

    def check(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except OperationalError as exc:
            raise StoreUnavailable(f"database {redact_url(self.url)} is unreachable: {self._reason(exc)}") from None

    def schema_revision(self) -> str:
        """The schema revision the database is at ("" for a database lfops never upgraded)."""
        from alembic.runtime.migration import MigrationContext

        try:
            with self.engine.connect() as conn:
                return ",".join(sorted(MigrationContext.configure(conn).get_current_heads()))
        except OperationalError as exc:
            raise StoreUnavailable(f"database {redact_url(self.url)} is unreachable: {self._reason(exc)}") from None

    def require_current_schema(self) -> None:
        """Raise StoreUnavailable, saying what to run, unless the schema is exactly the one this lfops needs."""
        with self._schema_lock:
            if self._schema_ok:
                return
            current, needed = self.schema_revision(), required_revision()
            if current != needed:
                if current and not _is_known(current):
                    raise StoreUnavailable(
                        f"database schema is at {current}, which this lfops does not know (it needs {needed}): "
                        "the database was upgraded by a newer lfops; upgrade lfops"
                    )
                raise StoreUnavailable(
                    f"database schema is at {current or 'none (empty database)'}, lfops needs {needed}: "
                    "run `lfops db upgrade`"
                )
            self._schema_ok = True

    def upgrade(self) -> tuple[str, str]:
        """Bring the schema to the newest migration; returns (revision before, revision after).

        Safe when several processes upgrade at once: on PostgreSQL the migration runs in one transaction that first
        takes an advisory lock (a second upgrader waits, then finds nothing to do); on SQLite a lock file next to the
        database serialises upgraders on this host (the only place a SQLite file can be shared).
        """
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        self.check()
        with self._upgrade_lock(), self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
            before = ",".join(sorted(MigrationContext.configure(conn).get_current_heads()))
            cfg = _alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        after = self.schema_revision()
        with self._schema_lock:
            self._schema_ok = after == required_revision()
        return before, after

    @contextmanager
    def _upgrade_lock(self) -> Iterator[None]:
        """A cross-process lock for SQLite upgrades (a file beside the database); nothing for other databases."""
        database = make_url(self.url).database if self.url.startswith("sqlite") else None
        if not database or database == ":memory:":
            yield
            return
        lock_path = Path(database).with_name(Path(database).name + ".upgrade-lock")
        with file_lock(lock_path):
            yield

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back on any error."""
        self.require_current_schema()
        try:
            with self._sessions() as session, session.begin():
                yield session
        except OperationalError as exc:
            raise StoreUnavailable(f"database {redact_url(self.url)} is unreachable: {self._reason(exc)}") from None

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads that need no transaction: each statement on its own (autocommit), so no BEGIN and
        COMMIT round trips; writing through it is an error of the caller. On PostgreSQL its statements are planned
        for their own values: psycopg does not prepare them (a prepared statement gets the server's generic plan from
        its sixth run on, which for a skewed key joins through whole tables; backend.runs.queries.custom_plans)."""
        self.require_current_schema()
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                raw = conn.connection.dbapi_connection
                threshold = getattr(raw, "prepare_threshold", None)
                if threshold is not None:
                    raw.prepare_threshold = None  # type: ignore[union-attr]  # psycopg: never prepare
                try:
                    with Session(bind=conn) as session:
                        yield session
                finally:
                    if threshold is not None:
                        raw.prepare_threshold = threshold  # type: ignore[union-attr]
        except OperationalError as exc:
            raise StoreUnavailable(f"database {redact_url(self.url)} is unreachable: {self._reason(exc)}") from None

    def _reason(self, exc: BaseException) -> str:
        """The driver's first line, which may quote the URL or parts of it, redacted."""
        return redaction.redact(_first_line(exc), self.url)

    def dispose(self) -> None:
        self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    msg = str(getattr(exc, "orig", None) or exc).strip()
    return msg.splitlines()[0] if msg else type(exc).__name__
