"""Git is the truth; the app repairs itself. Each module checks one family of invariants and, asked to, repairs it:

- change_requests: every branch but main has its change request, every open change request its branch, and every
  change request's status is what Git says (a merge on main marks it merged, from the merge commit's trailers);
- pull_requests (with a forge): every open pull request re-read (state, head, reviews, merge), and every change
  request under review has its pull request;
- runs: no run is queued/running without a process or Job behind it, a trainer that started (its marker) is tracked
  to its end, and every succeeded run has its model version.

`reconcile(ws, repair)` runs them all: at start-up, periodically, and on demand (`lfops doctor [--repair]`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backend.invariants import Finding

if TYPE_CHECKING:
    from backend.workspace import Workspace

__all__ = ["Finding", "reconcile"]


FAMILIES = ("pull_requests", "change_requests", "runs")


def reconcile(ws: Workspace, repair: bool = False, families: tuple[str, ...] = FAMILIES) -> list[Finding]:
    """Every check of `families` in turn; with `repair`, each finding is repaired where it can be and says so."""
    from backend.reconcile import change_requests, pull_requests, runs

    checks = {"pull_requests": pull_requests.check, "change_requests": change_requests.check, "runs": runs.check}
    findings: list[Finding] = []
    for family in families:
        findings.extend(checks[family](ws, repair))
    return findings
