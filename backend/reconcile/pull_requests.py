"""The forge side of the reconcile: missed webhook deliveries caught up (backend.forge_sync re-reads every open
pull request, and publishes the pull request of a request under review that has none: a save that stopped after its
push, or a forge that was down). Nothing without a forge."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backend.invariants import Finding

if TYPE_CHECKING:
    from backend.workspace import Workspace


def check(ws: Workspace, repair: bool = False) -> list[Finding]:
    sync = ws.forge_sync
    return sync.reconcile(repair) if sync is not None else []
