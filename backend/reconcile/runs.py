"""The run side of the reconcile: see backend.runs.repair for the invariants and how each is repaired."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backend.invariants import Finding

if TYPE_CHECKING:
    from backend.workspace import Workspace


def check(ws: Workspace, repair: bool = False) -> list[Finding]:
    """Every broken run invariant of the workspace; with `repair`, repaired (failed registrations tried again)."""
    return ws.runs.reconcile(repair)
