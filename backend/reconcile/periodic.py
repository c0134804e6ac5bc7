"""The reconcile while an app runs (the WebUI): once at start-up, then every `interval` seconds on a daemon thread.

A pass is cheap (one fetch, one `git log` of main's merges, one query of the change requests) and repairs as
`lfops doctor --repair` does; findings go to the log. Runs are not its business: the run monitor reconciles them on
its first pass and then whenever a run is unfinished or unregistered (backend.runs.monitor), so they are not checked
twice. A failing pass (origin or the database away for a moment) is
logged and the next one tries again.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from backend.invariants import Finding
from backend.periodic import PeriodicPass
from backend.reconcile import reconcile

if TYPE_CHECKING:
    from backend.workspace import Workspace

log = logging.getLogger(__name__)

INTERVAL = 60.0


class PeriodicReconcile(PeriodicPass):
    name = "lfops-reconcile"

    def __init__(self, ws: Workspace, interval: float = INTERVAL) -> None:
        super().__init__(interval)
        self.ws = ws
        self._forge_due = 0.0  # the forge pass runs every LFOPS_FORGE_RECONCILE_SECONDS (webhooks do the rest)

    def run_once(self) -> list[Finding]:
        families: tuple[str, ...] = ("change_requests",)
        if time.monotonic() >= self._forge_due:
            self._forge_due = time.monotonic() + self.ws.settings.forge_reconcile_seconds
            families = ("pull_requests", *families)
        findings = reconcile(self.ws, repair=True, families=families)
        for finding in findings:
            (log.info if finding.repaired else log.warning)("reconcile: %s", finding)
        self.check_retrain()
        return findings

    def check_retrain(self) -> None:
        """The dataset trigger of backend.retrain (a new version of a deployed model's data on main), and the launches
        on merge whose hook did not run."""
        try:
            self.ws.retrain.launch_missed()
            report = self.ws.retrain.check()
        except Exception:  # noqa: BLE001 - the next pass tries again
            log.exception("retrain check failed")
            return
        for problem in report.problems:
            log.warning("retrain: %s", problem)
