"""The Serving tab: deployments with their status, endpoint and version; deploy a registered version, roll out
another, undeploy, create an API key (shown once). A thin view over `Workspace.serving`, which checks every rule again
(only reviewers and admins deploy; only verified versions are served)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.context import AppContext
from webui.errors import as_message, as_warning, invalid, shows_errors
from webui.render import md_code, md_text

if TYPE_CHECKING:
    from backend.serving.service import DeploymentDetail, DeploymentInfo

HEADERS = ["name", "status", "now", "version", "target", "endpoint", "follows", "deployed by", "since"]


def _row(d: DeploymentInfo) -> list[Any]:
    live = d.live.state if d.live is not None else ""
    return [
        d.name,
        d.status,
        live,
        d.model,
        f"{d.target}/{d.namespace}" if d.namespace else d.target,
        d.endpoint if d.status != "stopped" else "",
        d.follows_config or "pinned",
        d.created_by,
        f"{d.created_at:%Y-%m-%d %H:%M}",
    ]


def render_detail(detail: DeploymentDetail) -> str:
    d = detail.deployment
    follows = f"follows {md_code(d.follows_config)}" if d.follows_config else "pinned to this version"
    lines = [
        f"### {md_text(d.name)} — {md_text(d.status)}",
        f"serves {md_code(d.model)} on {md_text(d.target)} · {follows} · deployed by **{md_text(d.created_by)}**",
    ]
    if d.status != "stopped":
        lines.append(f"endpoint {md_code(d.endpoint)} (OpenAI API; `model` = {md_code(d.name)}; metrics at /metrics)")
    if d.live is not None:
        lines.append(
            f"now: {md_text(d.live.state)}"
            + (f", serving {md_code(d.live.model_version)}" if d.live.model_version else "")
            + (f" · {md_text(d.live.detail)}" if d.live.detail else "")
            + (f" · {md_text(d.live.reason)}" if d.live.reason else "")
        )
    if d.reason:
        lines.append(f"reason: {md_text(d.reason)}")
    if detail.rollouts:
        lines.append(
            "**Rollouts:**\n"
            + "\n".join(
                f"- {r.started_at:%Y-%m-%d %H:%M:%S} {md_text(r.trigger)} {md_code(r.from_model or '-')} → "
                f"{md_code(r.to_model or '-')} by {md_text(r.actor)} ({md_text(r.status)}"
                + (f", {r.switch_s:.1f} s" if r.switch_s is not None else "")
                + ")"
                + (f": {md_text(r.reason)}" if r.reason else "")
                for r in detail.rollouts
            )
        )
    if detail.keys:
        lines.append(
            "**API keys:**\n"
            + "\n".join(
                f"- {md_code(k.key_id)} {md_text(k.label or '-')} by {md_text(k.created_by)}, "
                + (f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active")
                for k in detail.keys
            )
        )
    return "\n\n".join(lines)


class ServingTab:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def build(self) -> None:
        with gr.Tab("Serving", id="serving", elem_id="lfops-tab-serving"):
            with gr.Row(equal_height=True):
                self.show_stopped = gr.Checkbox(label="show undeployed", value=False, scale=1)
                self.refresh = gr.Button("Refresh", scale=0, elem_id="lfops-serving-refresh")
            self.table = gr.Dataframe(
                headers=HEADERS, interactive=False, wrap=True, label="Deployments", elem_id="lfops-serving-table"
            )
            with gr.Group(elem_id="lfops-deploy-box") as self.deploy_box:
                gr.Markdown("#### Deploy a registered version")
                with gr.Row(equal_height=True):
                    self.model = gr.Dropdown(
                        label="Model version",
                        choices=[],
                        allow_custom_value=True,
                        scale=2,
                        elem_id="lfops-deploy-model",
                    )
                    self.target = gr.Dropdown(
                        label="Target", choices=["local"], value="local", scale=1, elem_id="lfops-deploy-target"
                    )
                    self.name = gr.Textbox(
                        label="Name", placeholder="from the model name", scale=1, elem_id="lfops-deploy-name"
                    )
                    self.follow = gr.Checkbox(label="follow its config", value=False, scale=1)
                    self.deploy_btn = gr.Button("Deploy", variant="primary", scale=0, elem_id="lfops-deploy-btn")
            gr.Markdown("#### One deployment")
            with gr.Row(equal_height=True):
                self.deployment = gr.Dropdown(
                    label="Deployment", choices=[], allow_custom_value=True, scale=2, elem_id="lfops-serving-name"
                )
                self.show_btn = gr.Button("Show", scale=0, elem_id="lfops-serving-show")
            with gr.Row(equal_height=True) as self.manage_row:
                self.roll_to = gr.Dropdown(
                    label="Roll out version", choices=[], allow_custom_value=True, scale=2, elem_id="lfops-roll-to"
                )
                self.roll_btn = gr.Button("Roll out", scale=0, elem_id="lfops-roll-btn")
                self.key_label = gr.Textbox(label="Key label", placeholder="what the key is for", scale=1)
                self.key_btn = gr.Button("Create API key", scale=0, elem_id="lfops-key-btn")
                self.undeploy_btn = gr.Button("Undeploy", variant="stop", scale=0, elem_id="lfops-undeploy-btn")
            self.new_key = gr.Textbox(
                label="New API key — shown only now: copy it", interactive=False, elem_id="lfops-new-key"
            )
            self.info = gr.Markdown(elem_id="lfops-serving-info")

        listing = dict(fn=self.on_list, inputs=[self.show_stopped], outputs=[self.table])
        choices = dict(
            fn=self.on_choices, inputs=None, outputs=[self.model, self.roll_to, self.deployment, self.target]
        )
        self.refresh.click(**listing, api_name="deployments_list").then(**choices)
        self.show_stopped.change(**listing)
        self.ctx.on_tab_load(**listing)
        self.ctx.on_tab_load(**choices)
        show = dict(fn=self.on_show, inputs=[self.deployment], outputs=[self.info])
        self.show_btn.click(**show, api_name="deployment_show")
        self.table.select(self.on_select, [self.table], [self.deployment]).then(**show)
        self.deploy_btn.click(
            self.on_deploy,
            [self.model, self.target, self.name, self.follow],
            [self.info, self.new_key, self.deployment],
            api_name="deploy",
            concurrency_limit=4,
        ).then(**listing)
        self.roll_btn.click(
            self.on_rollout, [self.deployment, self.roll_to], [self.info], api_name="deployment_rollout"
        ).then(**listing)
        self.undeploy_btn.click(self.on_undeploy, [self.deployment], [self.info], api_name="undeploy").then(**listing)
        self.key_btn.click(
            self.on_create_key, [self.deployment, self.key_label], [self.info, self.new_key], api_name="key_create"
        )
        self.ctx.gate(self.deploy_box, "deploy.manage")
        self.ctx.gate(self.manage_row, "deploy.manage")

    # ---- handlers -----------------------------------------------------------------------------------------------

    @shows_errors(as_warning([]))
    def on_list(self, show_stopped: bool, request: gr.Request) -> list[list[Any]]:
        serving = self.ctx.ws.serving
        return [_row(d) for d in serving.list(self.ctx.auth.actor(request), live=True, include_stopped=show_stopped)]

    @shows_errors(lambda lines, **_: (gr.update(), gr.update(), gr.update(), gr.update()))
    def on_choices(self, request: gr.Request) -> tuple[Any, Any, Any, Any]:
        actor = self.ctx.auth.actor(request)
        versions = [v.ref for v in self.ctx.ws.registry.list(actor)]
        names = [d.name for d in self.ctx.ws.serving.list(actor, include_stopped=False)]
        return (
            gr.update(choices=versions),
            gr.update(choices=versions),
            gr.update(choices=names),
            gr.update(choices=self.ctx.ws.serving.targets()),
        )

    @staticmethod
    def on_select(table: Any, evt: gr.SelectData) -> Any:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        try:
            return str(table.iloc[row, 0])
        except (AttributeError, IndexError, ValueError, TypeError):
            return gr.update()

    @shows_errors(as_message(lambda name, **_: f"Deployment {name or ''}".strip()))
    def on_show(self, name: str | None, request: gr.Request) -> str:
        if not (name or "").strip():
            return "Choose a deployment from the list."
        return render_detail(self.ctx.ws.serving.show(self.ctx.auth.actor(request), name.strip()))

    @shows_errors(as_message("Not deployed", "", gr.update()))
    def on_deploy(
        self, model: str | None, target: str | None, name: str | None, follow: bool, request: gr.Request
    ) -> tuple[str, str, Any]:
        if not (model or "").strip():
            raise invalid("model version", "choose one first")
        actor = self.ctx.auth.actor(request)
        done = self.ctx.ws.serving.deploy(
            actor, model.strip(), target=target or "local", name=(name or "").strip() or None, follow=bool(follow)
        )
        detail = self.ctx.ws.serving.show(actor, done.deployment.name)
        return render_detail(detail), done.api_key, gr.update(value=done.deployment.name)

    @shows_errors(as_message("Not rolled out"))
    def on_rollout(self, name: str | None, model: str | None, request: gr.Request) -> str:
        if not (name or "").strip():
            raise invalid("deployment", "choose one first")
        actor = self.ctx.auth.actor(request)
        self.ctx.ws.serving.rollout(actor, name.strip(), (model or "").strip() or None)
        return render_detail(self.ctx.ws.serving.show(actor, name.strip()))

    @shows_errors(as_message("Not undeployed"))
    def on_undeploy(self, name: str | None, request: gr.Request) -> str:
        if not (name or "").strip():
            raise invalid("deployment", "choose one first")
        actor = self.ctx.auth.actor(request)
        self.ctx.ws.serving.undeploy(actor, name.strip())
        return render_detail(self.ctx.ws.serving.show(actor, name.strip()))

    @shows_errors(as_message("No key created", ""))
    def on_create_key(self, name: str | None, label: str | None, request: gr.Request) -> tuple[str, str]:
        if not (name or "").strip():
            raise invalid("deployment", "choose one first")
        actor = self.ctx.auth.actor(request)
        key, info = self.ctx.ws.serving.create_key(actor, name.strip(), (label or "").strip())
        return f"**API key {md_code(info.key_id)} created for {md_text(name.strip())}**", key
