"""When a window is checked and when a drift is declared: one place for the windowing rules.

- Windows do not overlap: each check takes the prompts sampled since the previous report's window ended (at most
  `max_prompts`, the newest), so two reports in a row are two independent looks.
- A window with fewer than `min_prompts` prompts is not checked: no report, no error (a deployment without traffic
  stays quiet); its prompts wait for the next check.
- A drift is declared on the `consecutive`-th drifting window in a row for the same model version, once per streak:
  a single noisy window never declares, and a drift that goes on is not declared again until a window is clean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backend.errors import LfopsError
from backend.monitoring.report import DECLARED, DRIFTING, OK, DriftReport


@dataclass(frozen=True)
class WindowRules:
    min_prompts: int = 30
    max_prompts: int = 1000
    consecutive: int = 2

    def checked(self) -> WindowRules:
        if self.min_prompts < 10:
            raise LfopsError(f"min_prompts: must be at least 10, got {self.min_prompts}", field="min_prompts")
        if self.max_prompts < self.min_prompts:
            raise LfopsError(
                f"max_prompts: must be at least min_prompts ({self.min_prompts}), got {self.max_prompts}",
                field="max_prompts",
            )
        if self.consecutive < 1:
            raise LfopsError(f"consecutive: must be at least 1, got {self.consecutive}", field="consecutive")
        return self


def enough(n_prompts: int, rules: WindowRules) -> bool:
    return n_prompts >= rules.min_prompts


def decide(drifting: bool, previous: Sequence[DriftReport], model_version_id: int, rules: WindowRules) -> str:
    """The state of a new window: OK, DRIFTING or DECLARED. `previous`: the deployment's reports, newest first."""
    if not drifting:
        return OK
    streak = [drifting]
    declared_in_streak = False
    for report in previous:
        if report.model_version_id != model_version_id or not report.drifting:
            break
        streak.append(True)
        declared_in_streak = declared_in_streak or report.declared
    if len(streak) >= rules.consecutive and not declared_in_streak:
        return DECLARED
    return DRIFTING
