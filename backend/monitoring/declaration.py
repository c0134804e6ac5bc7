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


@dataclass(frozen=True)
class Streak:
    """The drifting windows right before this one (same model version, back to the last clean window)."""

    length: int = 0
    declared: bool = False  # a drift was declared in it already

    @classmethod
    def of(cls, previous: Sequence[DriftReport], model_version_id: int) -> Streak:
        """From reports newest first (all of the streak must be in them)."""
        length, declared = 0, False
        for report in previous:
            if report.model_version_id != model_version_id or not report.drifting:
                break
            length += 1
            declared = declared or report.declared
        return cls(length, declared)


def decide(drifting: bool, streak: Streak, rules: WindowRules) -> str:
    """The state of a new window: OK, DRIFTING or DECLARED."""
    if not drifting:
        return OK
    if streak.length + 1 >= rules.consecutive and not streak.declared:
        return DECLARED
    return DRIFTING
