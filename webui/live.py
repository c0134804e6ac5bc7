"""Live pages without polling: each page's browser waits here (`GET lfops/runs/wait`, a plain HTTP long poll, no
Gradio event), on the server's event loop, until the runs move (backend.runs.changes) or a time runs out; then it
clicks the Runs tab's hidden wake button, whose Gradio event renders what moved on that page. Also what each page
shows, so that a wake renders the page as it is now.

While nothing moves a wait holds no thread and does no work, and it ends after `IDLE_WAIT_S`, so an idle page costs
one small request every `IDLE_WAIT_S` seconds; when a run moves, every waiting page wakes at once. The wait is not a
pending Gradio event on purpose: while a page has one, Gradio's stream to that page checks for messages every 50 ms.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from backend.runs import RunChanges

# An idle page's wait returns after this long (and the browser asks again); under the usual proxy read timeout (60 s).
IDLE_WAIT_S = 25.0
# While the page shows an unfinished run, its elapsed time moves even when nothing is logged.
ACTIVE_WAIT_S = 5.0
WAIT_PATH = "/lfops/runs/wait"
WAKE_ID = "lfops-runs-wake"  # the Runs tab's hidden button that the browser clicks when its wait says so
# Started once per page on load (a JS-only event: no server call): wait, wake the page when the runs moved (or, while
# it shows an unfinished run, when the wait ran out: the elapsed time moves), wait again. A hidden browser tab does
# not wait; it catches up when shown again.
FOLLOW_JS = f"""() => {{
  if (window.lfopsFollowing) return;
  window.lfopsFollowing = true;
  const pause = (ms) => new Promise((done) => setTimeout(done, ms));
  const shown = () => new Promise((done) => document.addEventListener("visibilitychange", done, {{once: true}}));
  (async () => {{
    let since = -1;
    for (;;) {{
      if (document.visibilityState !== "visible") {{ await shown(); continue; }}
      const run = parseInt(document.querySelector("#lfops-run-id input")?.value || "", 10);
      let answer;
      try {{
        const resp = await fetch("{WAIT_PATH.lstrip("/")}?since=" + since + (run > 0 ? "&run=" + run : ""),
                                 {{cache: "no-store"}});
        if (!resp.ok) {{ await pause(10000); continue; }}
        answer = await resp.json();
      }} catch (e) {{ await pause(5000); continue; }}
      if (answer.revision !== since || answer.active) document.getElementById("{WAKE_ID}")?.click();
      since = answer.revision;
    }}
  }})();
}}"""
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


def add_wait_route(app: FastAPI, waiter: ChangeWaiter, signed_in: Callable[[Request], bool]) -> None:
    """`GET lfops/runs/wait?since=R[&run=N]`: `{"revision": ..., "active": ...}` once the runs moved past revision
    R, or after a while (shorter while run N is unfinished). Only for a signed-in page (401 otherwise): it says no
    more than that something moved, which the page then asks about through its own (authorised) event."""
    changes = waiter.changes

    @app.get(WAIT_PATH, include_in_schema=False)
    async def wait(request: Request, since: int = -1, run: int | None = None) -> JSONResponse:
        if not await run_in_threadpool(signed_in, request):  # a session lookup may read the store
            return JSONResponse({"error": "sign in first"}, status_code=401)
        active = run is not None and changes.unfinished(run)
        revision = await waiter.wait(since, ACTIVE_WAIT_S if active else IDLE_WAIT_S)
        return JSONResponse(
            {"revision": revision, "active": run is not None and changes.unfinished(run)},
            headers={"Cache-Control": "no-store"},
        )
