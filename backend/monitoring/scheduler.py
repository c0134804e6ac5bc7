"""The drift checks while an app runs (the WebUI): every `interval` seconds on a daemon thread, like the periodic
reconcile. Each pass checks every deployment that is not stopped (backend.monitoring.service.check_all); one with
too few new prompts makes no report and no log line, so a deployment without traffic stays quiet. A failing pass
(the database away for a moment) is logged once and the next one tries again. On Kubernetes the same pass runs as
a CronJob (`lfops monitor check`, backend.monitoring.cronjob).
"""

from __future__ import annotations

import logging

from backend.monitoring.report import DriftReport
from backend.monitoring.service import Monitoring
from backend.periodic import PeriodicPass

log = logging.getLogger(__name__)

INTERVAL = 300.0


class PeriodicMonitor(PeriodicPass):
    name = "lfops-monitor"

    def __init__(self, monitoring: Monitoring, interval: float = INTERVAL) -> None:
        super().__init__(interval)
        self.monitoring = monitoring

    def run_once(self) -> list[DriftReport]:
        made = self.monitoring.check_all()
        for r in made:
            (log.warning if r.drifting or r.state == "reference_missing" else log.info)(
                "monitoring: %s %s over %d prompts: %s", r.deployment, r.state, r.n_prompts, r.reason or "ok"
            )
        return made
