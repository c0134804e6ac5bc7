"""The WebUI: LlamaBoard's tabs as they are (with the app's own Engine), plus Save to repo / Launch on the Train tab,
and the Review, Runs & lineage and Serving tabs. Business rules live in backend/; this module only lays the tabs out."""

from __future__ import annotations

import platform
from dataclasses import dataclass

import gradio as gr

from webui import llamaboard as lb
from webui.context import AppContext
from webui.render import CSS
from webui.review_tab import ReviewTab
from webui.runs_tab import RunsTab
from webui.serving_tab import ServingTab
from webui.train_actions import TrainActions


@dataclass
class WebApp:
    blocks: gr.Blocks
    board: lb.LlamaBoard
    train: TrainActions
    review: ReviewTab
    runs: RunsTab
    serving: ServingTab


def build_app(ctx: AppContext) -> WebApp:
    host = platform.node().split(".")[0]
    with gr.Blocks(title=f"lfops · LLaMA Factory ({host})", css=lb.LLAMABOARD_CSS + CSS) as demo:
        who = gr.Markdown(elem_id="lfops-whoami")
        train = TrainActions(ctx)
        review, runs, serving = ReviewTab(ctx), RunsTab(ctx), ServingTab(ctx)
        with gr.Tabs(elem_id="lfops-tabs"):
            with gr.Tab("LlamaBoard", id="llamaboard", elem_id="lfops-tab-llamaboard"):
                board = lb.build(demo, ctx.guard, train.build)
            review.build()
            runs.build()
            serving.build()
        lb.finish(demo, board)
        demo.load(ctx.on_load, outputs=[who, *(g[0] for g in ctx.gates)], concurrency_limit=None)
        for event in ctx.loads:
            demo.load(**event)
    return WebApp(demo, board, train, review, runs, serving)
