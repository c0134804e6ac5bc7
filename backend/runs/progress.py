"""A run's progress as LLaMA-Factory reports it in `trainer_log.jsonl` (step, total steps, percentage, elapsed and
remaining time), kept as metric rows under the names below, and the one way the CLI and the WebUI write it out.

Progress rows are metrics like the loss (one row per logged step and key, in the metrics index), so a run's progress
is the latest row of each key and needs no table or column of its own; they are bookkeeping, not curves to plot
(`CURVE_EXCLUDED`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from backend.runners.base import RunState

TOTAL_STEPS = "total_steps"
PERCENTAGE = "percentage"
ELAPSED = "elapsed_s"
REMAINING = "remaining_s"
PROGRESS_KEYS = (TOTAL_STEPS, PERCENTAGE, ELAPSED, REMAINING)
# trainer_log.jsonl's durations are `str(timedelta)` ("0:01:02", "1 day, 2:03:04"); stored in seconds under these names.
DURATION_FIELDS = {"elapsed_time": ELAPSED, "remaining_time": REMAINING}
# Metric keys that are not curves: progress, and the epoch (the x axis of another kind).
CURVE_EXCLUDED = frozenset({*PROGRESS_KEYS, "epoch"})

_TIMEDELTA = re.compile(r"^(?:(\d+) days?, )?(\d+):(\d\d):(\d\d(?:\.\d+)?)$")


def duration_seconds(text: object) -> float | None:
    """`str(timedelta)` as LLaMA-Factory writes it, in seconds; None for anything else."""
    match = _TIMEDELTA.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def fmt_duration(seconds: float | None) -> str:
    """Seconds as H:MM:SS, the way LLaMA-Factory shows them; "" when unknown."""
    if seconds is None:
        return ""
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands: its status and, once it logs, its step of the total, and elapsed and remaining time.

    `elapsed_s` is the run's wall time since it started (to its end once finished); `remaining_s` is LLaMA-Factory's
    estimate at the last logged step (0 once the run is over)."""

    run_id: int
    status: str
    step: int | None
    total_steps: int | None
    percentage: float | None
    elapsed_s: float | None
    remaining_s: float | None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def state(self) -> RunState:
        return RunState(self.status)

    @property
    def label(self) -> str:
        return self.state.label

    @property
    def finished(self) -> bool:
        return self.state.finished

    @property
    def fraction(self) -> float | None:
        """0..1 done, from the steps (LLaMA-Factory's percentage when the total is unknown); None before any step."""
        if self.state == RunState.SUCCEEDED:
            return 1.0
        if self.step is not None and self.total_steps:
            return min(1.0, max(0.0, self.step / self.total_steps))
        if self.percentage is not None:
            return min(1.0, max(0.0, self.percentage / 100))
        return None

    def steps_text(self) -> str:
        """ "step 5 / 8 (62%)", or "" before the first logged step."""
        if self.step is None:
            return ""
        total = f" / {self.total_steps}" if self.total_steps else ""
        fraction = self.fraction
        return f"step {self.step}{total}" + (f" ({fraction:.0%})" if fraction is not None else "")

    def times_text(self) -> str:
        parts = []
        if self.elapsed_s is not None:
            parts.append(f"{fmt_duration(self.elapsed_s)} elapsed")
        if self.remaining_s is not None and not self.finished:
            parts.append(f"about {fmt_duration(self.remaining_s)} left")
        return ", ".join(parts)

    def summary(self) -> str:
        """One line: "running · step 5 / 8 (62%) · 0:00:12 elapsed, about 0:00:07 left"."""
        return " · ".join(part for part in (self.label, self.steps_text(), self.times_text()) if part)

    def bar(self, width: int = 24) -> str:
        """A text progress bar, "[#########---------------]"; dots while nothing is known."""
        fraction = self.fraction
        if fraction is None:
            return "[" + "." * width + "]"
        done = round(fraction * width)
        return "[" + "#" * done + "-" * (width - done) + "]"
