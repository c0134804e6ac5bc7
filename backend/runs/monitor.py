"""The RunMonitor: a daemon thread in the app process (the WebUI, `lfops runs wait`) that advances runs every second."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

log = logging.getLogger(__name__)


class Advances(Protocol):
    def advance(self) -> list[int]: ...


class RunMonitor:
    """Calls `runs.advance()` every `interval` seconds until stopped; one failing pass does not end it."""

    def __init__(self, runs: Advances, interval: float = 1.0) -> None:
        self.runs = runs
        self.interval = interval
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

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.runs.advance()
            except Exception:  # noqa: BLE001 - the monitor must outlive one bad pass (e.g. the database restarting)
                log.exception("run monitor pass failed")
            self._stop.wait(self.interval)
