"""The Runs & lineage tab: runs, their status and metrics, and where a model came from.

It shows what the backend offers: `Workspace.runs` (backend/runs.py) for the runs list and `backend.lineage` for
provenance. Each panel is built only when its backend part exists, so the tab grows with the backend.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import gradio as gr

if TYPE_CHECKING:
    from webui.app import AppContext


def backend_part(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class RunsTab:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def build(self) -> None:
        with gr.Tab("Runs & lineage", id="runs", elem_id="lfops-tab-runs"):
            missing = [m for m in ("backend.runs", "backend.lineage") if not backend_part(m)]
            if missing:
                gr.Markdown(
                    "Runs launched from approved configs, their live metrics and each model's lineage (commit, "
                    "approvers, dataset version, hyperparameters) appear here.\n\n"
                    f"Not available in this installation yet: {', '.join(missing)}.",
                    elem_id="lfops-runs-notice",
                )
