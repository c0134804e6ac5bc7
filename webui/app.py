"""The WebUI: LlamaBoard's tabs as they are (with the app's own Engine), plus Save to repo / Launch on the Train tab,
and the Review, Runs & lineage, Serving and Monitoring tabs. Business rules live in backend/; this module only lays
the tabs out."""

from __future__ import annotations

import contextlib
import io
import platform
from dataclasses import dataclass
from typing import Any

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse

from webui import llamaboard as lb
from webui.admin_tab import AdminTab
from webui.auth import COOKIES, NONE, sign_out, use_stored_sessions
from webui.context import AppContext
from webui.live import add_wait_route
from webui.monitoring_tab import MonitoringTab
from webui.places import HEAD, Places
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
    admin: AdminTab
    monitoring: MonitoringTab | None = None


def build_app(ctx: AppContext) -> WebApp:
    host = platform.node().split(".")[0]
    with gr.Blocks(title=f"lfops · LLaMA Factory ({host})", css=lb.LLAMABOARD_CSS + CSS, head=HEAD) as demo:
        who = gr.Markdown(elem_id="lfops-whoami")
        train = TrainActions(ctx)
        review, runs, serving, admin = ReviewTab(ctx), RunsTab(ctx), ServingTab(ctx), AdminTab(ctx)
        monitoring = MonitoringTab(ctx)
        with gr.Tabs(elem_id="lfops-tabs") as tabs:
            with gr.Tab("LlamaBoard", id="llamaboard", elem_id="lfops-tab-llamaboard"):
                board = lb.build(demo, ctx.guard, train.build)
            review.build()
            runs.build()
            serving.build()
            monitoring.build()
            admin.build()  # shown to admins only (the backend checks each verb again)
        lb.finish(demo, board)
        demo.load(ctx.on_load, outputs=[who, *(g[0] for g in ctx.gates)], concurrency_limit=None)
        for event in ctx.loads:
            demo.load(**event)
        draft = [*sorted(board.train_inputs, key=lambda c: c._id), train.opened, train.name, train.message]
        Places(ctx).wire(demo, tabs, review, runs, draft)
    return WebApp(demo, board, train, review, runs, serving, admin, monitoring)


def asgi_app(ctx: AppContext, web: WebApp) -> FastAPI:
    """What `lfops webui` serves: the operations endpoints and the REST API (backend.api), with Gradio at "/".

    Gradio's own sign-in guards its routes as before; the API takes bearer tokens, and for reading also the WebUI's
    session (the user Gradio's cookie or the trusted proxy's header names)."""
    from backend.api import create_app

    app = create_app(ctx.ws)

    @app.get("/logout", include_in_schema=False)
    def logout(request: Request) -> RedirectResponse:  # before Gradio's: its own cannot end a stored session
        sign_out(ctx.auth, request)
        response = RedirectResponse("./", status_code=302)
        for cookie in COOKIES:
            response.delete_cookie(cookie, path="/")
        return response

    # The pages' long poll (webui.live), before Gradio's mount at "/" takes every other path.
    add_wait_route(app, web.runs.waiter, lambda request: ctx.auth.mode == NONE or bool(app.state.session_user(request)))
    with contextlib.redirect_stdout(io.StringIO()):  # Gradio prints a debug line when mounting
        gr.mount_gradio_app(app, web.blocks.queue(), "/", show_api=False, **ctx.auth.launch_kwargs())
    gradio_app = app.routes[-1].app  # the Mount just added
    use_stored_sessions(ctx.auth, gradio_app)  # sessions in the store: every replica, and after a restart

    def session_user(request: Request) -> str | None:
        return _gradio_user(gradio_app, request)

    app.state.session_user = session_user
    return app


def _gradio_user(gradio_app: Any, request: Request) -> str | None:
    """The user Gradio signed in for this request (its session cookie, or the proxy header it trusts)."""
    if gradio_app.auth_dependency is not None:
        return gradio_app.auth_dependency(request)
    cookie_id = gradio_app.cookie_id
    token = request.cookies.get(f"access-token-{cookie_id}") or request.cookies.get(
        f"access-token-unsecure-{cookie_id}"
    )
    return gradio_app.tokens.get(token) if token else None
