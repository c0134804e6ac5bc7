"""What a reconcile pass reports: one finding per broken invariant between Git, processes or Jobs, and the database."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    """One broken invariant: what is wrong (`invariant`, `subject`), and what the repair did or would do."""

    invariant: str  # e.g. "branch-without-change-request", "run-active-without-process"
    subject: str  # e.g. "branch alice/rank16", "run #12"
    detail: str  # the facts that show it, one line
    repair: str  # what --repair does (or did) about it, one line
    repaired: bool = False

    def __str__(self) -> str:
        state = "repaired" if self.repaired else "found"
        return f"[{state}] {self.invariant}: {self.subject}: {self.detail} -> {self.repair}"
