"""Live pages without polling: a page's timer tick waits here, on the server's event loop, until the runs move
(backend.runs.changes) or a time runs out; and what each page shows, so that a tick renders the page as it is now.

A tick is a long poll: while nothing moves it holds no thread and does no work, and it ends after `IDLE_WAIT_S`, so
an idle page costs one small request every `IDLE_WAIT_S` seconds; when a run moves, every waiting page wakes at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

from backend.runs import RunChanges

# An idle page's tick returns after this long (and the next one waits again).
IDLE_WAIT_S = 20.0
# While the page shows an unfinished run, its elapsed time moves even when nothing is logged.
ACTIVE_WAIT_S = 5.0
# Pages remembered (oldest forgotten first): a few numbers and strings each.
MAX_PAGES = 2000


class ChangeWaiter:
    """Awaitable `RunChanges`: the monitor's thread wakes the coroutines waiting on the server's event loop."""

    def __init__(self, changes: RunChanges) -> None:
        self.changes = changes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: set[asyncio.Future[None]] = set()
        changes.subscribe(self._moved)

    async def wait(self, since: int, timeout: float) -> int:
        """Until the revision passes `since` or `timeout` seconds pass; returns the revision."""
        if self.changes.revision > since:
            return self.changes.revision
        self._loop = asyncio.get_running_loop()
        woken = self._loop.create_future()
        self._waiting.add(woken)
        try:
            await asyncio.wait_for(woken, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiting.discard(woken)
        return self.changes.revision

    def close(self) -> None:
        self.changes.unsubscribe(self._moved)

    def _moved(self, _revision: int) -> None:  # on the monitor's thread: hand over to the loop and return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        for woken in list(self._waiting):
            if not woken.done():
                woken.set_result(None)


@dataclass(frozen=True)
class PageView:
    """What one page of the Runs tab shows: the list's filters and page, the run and the metrics it plots."""

    status: str = "all"
    config: str = ""
    submitter: str = ""
    page: float | None = 1
    params: str = ""  # hyperparameter filters as typed (backend.runs.params)
    order: str = "newest"
    run_id: int | None = None
    metrics: tuple[str, ...] = ()


@dataclass
class PageViews:
    """PageView by Gradio session (one per page load), updated by the handlers that change what a page shows."""

    _views: OrderedDict[str, PageView] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, session: str | None) -> PageView | None:
        with self._lock:
            return self._views.get(session) if session else None

    def update(self, session: str | None, **changes: Any) -> None:
        if not session:
            return
        with self._lock:
            self._views[session] = replace(self._views.pop(session, PageView()), **changes)
            while len(self._views) > MAX_PAGES:
                self._views.popitem(last=False)
