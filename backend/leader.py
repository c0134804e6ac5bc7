"""Leader election among the app's replicas: one process runs the duties that must run once (the run monitor, the
periodic reconcile); the others stand by and take over within about `interval` seconds of the leader's death.

The lock is the database's when it is PostgreSQL: a session-level advisory lock held on a dedicated connection (its
own engine, no pool), with a heartbeat (`SELECT 1` every `interval`). PostgreSQL releases the lock the moment that
connection ends: the leader exits or is killed (the kernel closes its socket), or its host vanishes (TCP keepalives
and `tcp_user_timeout` end the connection within about 10 s). A leader whose heartbeat fails stops its duties at once;
the metrics ingest is a compare-and-set on the run's log offset, so even a pass that overlaps a handover stores
nothing twice. On SQLite (one host by nature) the lock is a flock on a file in the workspace, held by the process.

Who leads is also written to the `leases` table (holder, acquired, renewed) for /readyz and the other replicas to
show; the row is information, never the lock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from backend.errors import LfopsError
from backend.store import Store
from backend.store.models import Lease, utcnow

log = logging.getLogger(__name__)

RUN_MONITOR = "run-monitor"
INTERVAL_S = 1.0
# The leases row is rewritten this often by its holder (information only: a stale row means a dead holder).
RENEW_EVERY_S = 5.0
# libpq: end the dedicated connection when the database host stops answering (the lock is freed with it).
_PG_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "connect_timeout": 5,
}


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def advisory_key(name: str) -> int:
    """A signed 64-bit key for `pg_try_advisory_lock`, the same in every replica."""
    return int.from_bytes(hashlib.sha256(f"lfops leader {name}".encode()).digest()[:8], "big", signed=True)


class Lock(Protocol):
    def try_acquire(self) -> bool: ...

    def still_held(self) -> bool: ...

    def release(self) -> None: ...


class PostgresLock:
    """A session-level advisory lock on a connection of its own (its death frees the lock)."""

    def __init__(self, url: str, name: str) -> None:
        self.key = advisory_key(name)
        self.engine = create_engine(url, poolclass=NullPool, connect_args=_PG_KEEPALIVE)
        self._conn: Connection | None = None

    def try_acquire(self) -> bool:
        try:
            if self._conn is None:
                self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            return bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
        except SQLAlchemyError as exc:
            log.warning("leader election: database unreachable: %s", str(exc).splitlines()[0])
            self._drop()
            return False

    def still_held(self) -> bool:
        """The heartbeat: the connection (and so the lock) is alive."""
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            self._drop()
            return False

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            except SQLAlchemyError:
                pass  # the connection is gone, and the lock with it
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except SQLAlchemyError:
                pass
        self._conn = None


class FileLock:
    """A flock held by this process on `path` (SQLite: every replica is on this host)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def try_acquire(self) -> bool:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a")  # noqa: SIM115 - held open for as long as this process leads
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        self._fh = fh
        return True

    def still_held(self) -> bool:
        return self._fh is not None

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file frees the flock
            self._fh = None


def lock_for(store: Store, lock_dir: Path, name: str) -> Lock:
    if store.engine.dialect.name == "postgresql":
        return PostgresLock(store.url, name)
    return FileLock(lock_dir / f"leader-{name}.lock")


@dataclass(frozen=True)
class LeaderState:
    name: str
    me: str
    leading: bool
    since: datetime | None  # when this process became leader
    changes: int  # times this process gained or lost the lead
    holder: str  # who the leases row names ("" when none)
    renewed_at: datetime | None


class Leadership:
    """Elects this process or not, every `interval` seconds; calls `on_elected` when it becomes leader and `on_lost`
    when it stops being one (its heartbeat failed, or `stop`). The callbacks run on the election thread."""

    def __init__(
        self,
        store: Store,
        lock_dir: Path,
        name: str = RUN_MONITOR,
        interval: float = INTERVAL_S,
        me: str | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.interval = interval
        self.me = me or this_process()
        self.lock = lock_for(store, lock_dir, name)
        self.on_elected: Callable[[], None] = lambda: None
        self.on_lost: Callable[[], None] = lambda: None
        self.leading = False
        self.since: datetime | None = None
        self.changes = 0
        self._renewed = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Leadership:
        self._thread = threading.Thread(target=self._loop, name=f"lfops-leader-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Step down (duties stopped, lock freed: a standby takes over at its next try) and end the thread."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self.leading:
            self._lose("stopped")
        self.lock.release()

    def state(self) -> LeaderState:
        holder, renewed = "", None
        try:
            with self.store.session() as s:
                row = s.scalar(select(Lease).where(Lease.name == self.name))
                if row is not None:
                    holder, renewed = row.holder, row.renewed_at
        except LfopsError:
            pass  # the database is away: say what this process knows
        return LeaderState(self.name, self.me, self.leading, self.since, self.changes, holder, renewed)

    def step(self) -> None:
        """One election round (the thread calls it every `interval`)."""
        if self.leading:
            if not self.lock.still_held():
                self._lose("the lock's connection failed")
                return
            if time.monotonic() - self._renewed >= RENEW_EVERY_S:
                self._write_lease(acquired=False)
        elif self.lock.try_acquire():
            self.leading, self.since = True, utcnow()
            self.changes += 1
            log.info("leader election: %s leads %s", self.me, self.name)
            self._write_lease(acquired=True)
            try:
                self.on_elected()
            except Exception:  # noqa: BLE001 - step down, so that another replica (or the next round) tries
                log.exception("leader election: starting the duties of %s failed", self.name)
                self._lose("its duties failed to start")
                self.lock.release()

    def _lose(self, why: str) -> None:
        log.warning("leader election: %s no longer leads %s (%s)", self.me, self.name, why)
        self.leading, self.since = False, None
        self.changes += 1
        try:
            self.on_lost()
        except Exception:  # noqa: BLE001
            log.exception("leader election: stopping the duties of %s failed", self.name)

    def _write_lease(self, acquired: bool) -> None:
        self._renewed = time.monotonic()
        try:
            with self.store.session() as s:
                row = s.get(Lease, self.name)
                now = utcnow()
                if row is None:
                    s.add(Lease(name=self.name, holder=self.me, acquired_at=now, renewed_at=now))
                else:
                    if acquired or row.holder != self.me:
                        row.holder, row.acquired_at = self.me, now
                    row.renewed_at = now
        except (LfopsError, SQLAlchemyError) as exc:
            log.warning("leader election: could not write the lease row: %s", exc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - the election outlives one bad round
                log.exception("leader election round failed")
            self._stop.wait(self.interval)
