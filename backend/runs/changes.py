"""What moved among the runs, as revision numbers, so that a page can wait for the next change instead of polling.

The RunMonitor calls `observe()` after each tracking pass: one query of the unfinished runs (status and how much of
their trainer_log.jsonl is stored) and of runs newer than the last look. Whatever process made the change (this app,
the CLI, another replica) is seen within a pass. When nothing runs, nothing moves and nobody waiting is woken.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, or_, select

from backend.runners.base import RunState
from backend.store import Store
from backend.store.models import Run

_UNFINISHED = tuple(s.value for s in RunState if not s.finished)
Listener = Callable[[int], None]


@dataclass(frozen=True)
class Moved:
    """What moved since a revision: the list of runs (a run new, changing status or logging: its row shows its time),
    and the one run asked about."""

    revision: int
    runs: bool
    run: bool

    @property
    def anything(self) -> bool:
        return self.runs or self.run


class RunChanges:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cond = threading.Condition()
        self._revision = 0
        self._list_changed = 0
        self._run_changed: dict[int, int] = {}
        self._seen: dict[int, tuple[str, int]] | None = None  # the unfinished runs at the last look
        self._max_id = 0
        self._listeners: list[Listener] = []
        self._observing = threading.Lock()  # one look at a time: the picture is this object's own

    @property
    def revision(self) -> int:
        return self._revision

    def moved(self, since: int, run_id: int | None = None) -> Moved:
        """What moved after revision `since` (a page's last look), for the list and for run `run_id`."""
        with self._cond:
            run = run_id is not None and self._run_changed.get(run_id, 0) > since
            return Moved(self._revision, self._list_changed > since, run)

    def unfinished(self, run_id: int) -> bool:
        """Whether the run was unfinished at the last look (no database read: for a page deciding how long to wait)."""
        return run_id in (self._seen or {})

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(revision)` after each change (from the monitor's thread: it must return at once)."""
        with self._cond:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._cond:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def wait(self, since: int, timeout: float) -> int:
        """Block until the revision passes `since` or `timeout` seconds pass; returns the revision."""
        with self._cond:
            self._cond.wait_for(lambda: self._revision > since, timeout)
            return self._revision

    def observe(self) -> list[int]:
        """Look at the unfinished and the new runs; record what moved since the last look (a status, a logged step);
        returns those run ids.
        The first look only takes the picture."""
        with self._observing:
            return self._observe()

    def _observe(self) -> list[int]:
        with self.store.session() as s:
            if self._seen is None:
                self._max_id = s.scalar(select(func.max(Run.id))) or 0
                rows = s.execute(select(Run.id, Run.status, Run.metrics_offset).where(Run.status.in_(_UNFINISHED)))
                self._seen = {run_id: (status, offset) for run_id, status, offset in rows}
                return []
            rows = s.execute(
                select(Run.id, Run.status, Run.metrics_offset).where(
                    or_(Run.status.in_(_UNFINISHED), Run.id.in_(list(self._seen)), Run.id > self._max_id)
                )
            ).all()
        now = {run_id: (status, offset) for run_id, status, offset in rows}
        moved = []
        for run_id, (status, offset) in now.items():
            before = self._seen.get(run_id)
            if before is None and run_id <= self._max_id and status not in _UNFINISHED:
                continue  # finished before the last look: nothing new
            if before != (status, offset):
                moved.append(run_id)
        self._seen = {k: v for k, v in now.items() if v[0] in _UNFINISHED}
        self._max_id = max([self._max_id, *now])
        if not moved:
            return []
        with self._cond:
            self._revision += 1
            self._list_changed = self._revision
            for run_id in moved:
                self._run_changed[run_id] = self._revision
            revision, listeners = self._revision, list(self._listeners)
            self._cond.notify_all()
        for listener in listeners:
            listener(revision)
        return sorted(moved)
