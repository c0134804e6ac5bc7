"""The WebUI: LlamaBoard's tabs as they are (with the app's own Engine), plus Save to repo / Launch on the Train tab,
and the Review and Runs & lineage tabs. Business rules live in backend/; this module only wires events to it."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from backend import audit
from backend.auth import ACTIONS, actor_by_name, require
from backend.errors import LfopsError
from backend.workspace import Workspace
from webui import llamaboard as lb
from webui.auth import PASSWORD, Authenticator
from webui.render import CSS, md_text
from webui.review_tab import ReviewTab
from webui.runs_tab import RunsTab
from webui.train_actions import TrainActions
from webui.workdir import Workdir

# What LlamaBoard's own actions need, in backend.auth's permission names.
GUARDED = {"chat.load": "read", "llamaboard.export": "run.launch"}


@dataclass
class AppContext:
    ws: Workspace
    auth: Authenticator
    workdir: Workdir
    gates: list[tuple[Any, str, bool]] = field(default_factory=list)
    loads: list[dict] = field(default_factory=list)

    def gate(self, component: Any, permission: str, invert: bool = False) -> None:
        """Show `component` only to users with `permission` (or only to those without it). The backend checks again."""
        self.gates.append((component, permission, invert))

    def on_tab_load(self, **event: Any) -> None:
        self.loads.append(event)

    def guard(self, user: str, action: str, detail: dict) -> str:
        """LlamaBoard's Chat and Export: authorised for the signed-in user and audited; a refusal is returned."""
        try:
            with self.ws.store.session() as s:
                actor = require(actor_by_name(s, user) if user else None, GUARDED[action])
                audit.record(s, actor, action, f"user:{actor.name}", **{k: str(v) for k, v in detail.items()})
        except LfopsError as exc:
            return f"refused: {exc}"
        return ""

    def on_load(self, request: gr.Request) -> list[Any]:
        """Every page load: fresh data/ for LlamaBoard, who is signed in, and what their role is offered."""
        try:
            self.workdir.refresh_data()  # main may have moved (a merge from the CLI): LlamaBoard lists its datasets
        except LfopsError as exc:
            gr.Warning(f"data/ of main could not be exported: {exc}")
        try:
            actor = self.auth.actor(request)
        except LfopsError as exc:
            actor = None
            gr.Warning(str(exc))
        if actor is None:
            who = "Not signed in: Save, Review and Launch need a user."
        else:
            can = [ACTIONS[p] for p in ("config.save", "review.decide", "review.merge", "run.launch") if actor.can(p)]
            who = f"Signed in as **{md_text(actor.name)}** ({actor.role}: may {', '.join(can)})"
        if self.auth.mode == PASSWORD and actor is not None:
            who += " · <a href='logout' id='lfops-signout'>Sign out</a>"
        updates: list[Any] = [who]
        for _component, permission, invert in self.gates:
            allowed = actor is not None and actor.can(permission)
            updates.append(gr.update(visible=allowed != invert))
        return updates


@dataclass
class WebApp:
    blocks: gr.Blocks
    board: lb.LlamaBoard
    train: TrainActions
    review: ReviewTab
    runs: RunsTab


def build_app(ctx: AppContext) -> WebApp:
    host = platform.node().split(".")[0]
    with gr.Blocks(title=f"lfops · LLaMA Factory ({host})", css=lb.LLAMABOARD_CSS + CSS) as demo:
        who = gr.Markdown(elem_id="lfops-whoami")
        train = TrainActions(ctx)
        review, runs = ReviewTab(ctx), RunsTab(ctx)
        with gr.Tabs(elem_id="lfops-tabs"):
            with gr.Tab("LlamaBoard", id="llamaboard", elem_id="lfops-tab-llamaboard"):
                board = lb.build(demo, ctx.guard, train.build)
            review.build()
            runs.build()
        lb.finish(demo, board)
        demo.load(ctx.on_load, outputs=[who, *(g[0] for g in ctx.gates)], concurrency_limit=None)
        for event in ctx.loads:
            demo.load(**event)
    return WebApp(demo, board, train, review, runs)
