"""The RunMonitor: a daemon thread in the app process (the WebUI, `lfops runs wait`) that advances runs every second,
and repairs the runs' invariants when it starts and then every `reconcile_every` seconds (only while some run could
need it: an unfinished one, or a succeeded one without its model version)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from backend.invariants import Finding

log = logging.getLogger(__name__)

RECONCILE_EVERY_S = 60.0


class Advances(Protocol):
    def advance(self) -> list[int]: ...


class Observes(Protocol):
    def observe(self) -> list[int]: ...


class Reconciles(Protocol):
    def needed(self) -> bool: ...

    def check(self, repair: bool = False, retry_failed_registrations: bool = True) -> list[Finding]: ...


class RunMonitor:
    """Calls `runs.advance()` every `interval` seconds until stopped, and `reconciler.check(repair=True)` at start and
    every `reconcile_every` seconds; after each pass `observer.observe()` (backend.runs.changes: what moved, for the
    pages waiting on it); one failing pass does not end it."""

    def __init__(
        self,
        runs: Advances,
        interval: float = 1.0,
        reconciler: Reconciles | None = None,
        reconcile_every: float = RECONCILE_EVERY_S,
        observer: Observes | None = None,
    ) -> None:
        self.runs = runs
        self.interval = interval
        self.reconciler = reconciler
        self.reconcile_every = reconcile_every
        self.observer = observer
        self.reconciled = 0  # passes done, for whoever wants to know the start-up pass happened
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lfops-run-monitor", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def reconcile(self) -> list[Finding]:
        """One repair pass when anything could need it; failed registrations are left to `lfops doctor`."""
        if self.reconciler is None or not self.reconciler.needed():
            return []
        findings = self.reconciler.check(repair=True, retry_failed_registrations=False)
        for finding in findings:
            log.warning("reconcile: %s", finding)
        return findings

    def _loop(self) -> None:
        next_reconcile = time.monotonic()  # at start
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_reconcile:
                    next_reconcile = time.monotonic() + self.reconcile_every
                    self.reconcile()
                    self.reconciled += 1
                self.runs.advance()
                if self.observer is not None:
                    self.observer.observe()
            except Exception:  # noqa: BLE001 - the monitor must outlive one bad pass (e.g. the database restarting)
                log.exception("run monitor pass failed")
            self._stop.wait(self.interval)
