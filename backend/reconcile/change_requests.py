"""The change-request side of the reconcile: see backend.change_request_repair for the invariants, and for how and
why each is repaired (it lives below backend.review, which completes an interrupted save or merge with it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backend.change_request_repair import STALE_AFTER, Reconciler
from backend.invariants import Finding

if TYPE_CHECKING:
    from backend.workspace import Workspace


def check(ws: Workspace, repair: bool, stale_after: float = STALE_AFTER) -> list[Finding]:
    """Every change-request invariant; with `repair`, each finding repaired where the rule says so."""
    return Reconciler(ws.store, ws.repo).check(repair, stale_after)
