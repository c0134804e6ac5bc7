"""A pass that repeats while an app runs: `run_once` every `interval` seconds on a daemon thread, until `stop`.

The periodic reconcile and the drift checks are both this; a failing pass (a database or origin away for a moment) is
logged and the next one tries again, so the app outlives it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class PeriodicPass:
    """Subclasses define `run_once`; `name` names the thread and the log line of a failed pass."""

    name = "lfops-periodic"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)

    def run_once(self) -> Any:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the app outlives one failed pass
                log.exception("%s: pass failed", self.name)
